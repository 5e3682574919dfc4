"""A small real MCP server (the official Python SDK, streamable HTTP) used as the upstream behind
Envoy in the end-to-end tests, the local stack and the container images.

It plays a Grafana-like server so that per-tool policies have something to bite on: everyone in the
domain may list dashboards, a narrower group may delete one. `whoami` echoes the identity headers that
authz set, so tests can see exactly what reached the upstream.

    python demo/mcp_server.py --host 127.0.0.1 --port 8000     # serves /mcp
"""

from __future__ import annotations

import argparse

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings

DASHBOARDS = ["latency", "errors", "saturation"]
# The headers authz sets on an allowed request; anything a client sent under these names was
# overwritten by Envoy before it got here.
IDENTITY_HEADERS = ("x-auth-request-email", "x-auth-request-user", "authorization")

server = MCPServer("demo-dashboards")


@server.tool()
def list_dashboards() -> list[str]:
    """List the dashboards."""
    return DASHBOARDS


@server.tool()
def delete_dashboard(name: str) -> str:
    """Delete a dashboard (pretend: nothing is removed)."""
    return f"deleted {name}"


@server.tool()
def whoami(ctx: Context) -> dict[str, str | None]:
    """The identity headers that reached the MCP server."""
    headers = ctx.headers or {}
    return {name: headers.get(name) for name in IDENTITY_HEADERS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    server.run(
        "streamable-http",
        host=args.host,
        port=args.port,
        stateless_http=True,
        json_response=True,
        # Envoy forwards the client's Host; DNS-rebinding protection belongs in front of a server
        # reachable from a browser, and this one is reachable only through Envoy.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )


if __name__ == "__main__":
    main()
