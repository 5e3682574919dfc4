"""A small real MCP server (the official Python SDK, streamable HTTP) used as the upstream behind
Envoy in the end-to-end tests, the local stack and the container images.

It plays a Grafana-like server so that per-tool policies have something to bite on: everyone in the
domain may list dashboards, a narrower group may delete one. `whoami` echoes the identity headers that
authz set, so tests can see exactly what reached the upstream.

    python demo/mcp_server.py --host 127.0.0.1 --port 8000     # serves /mcp

Flags for the list-filtering tests and benchmark: `--sse` answers in `text/event-stream` instead of
`application/json`; `--page-size N` splits `tools/list` into pages of N (`nextCursor`);
`--extra-tools N` adds N generated tools (`get_panel_000`, `delete_panel_001`, ... alternating);
`--headers-tool` adds `request_headers`, which names every request header that reached the server.
"""

from __future__ import annotations

import argparse

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import (ListToolsResult, LoggingMessageNotification, LoggingMessageNotificationParams,
                       PaginatedRequestParams)

DASHBOARDS = ["latency", "errors", "saturation"]
# The headers authz sets on an allowed request; anything a client sent under these names was
# overwritten by Envoy before it got here.
IDENTITY_HEADERS = ("x-auth-request-email", "x-auth-request-user", "authorization")

class DemoServer(MCPServer):
    """MCPServer with optional `tools/list` pagination (the SDK's own answers one page)."""

    page_size: int | None = None
    sse: bool = False

    async def _handle_list_tools(self, ctx, params: PaginatedRequestParams | None) -> ListToolsResult:
        if self.sse:
            # In 2026-07-28 mode the SDK commits to `text/event-stream` only once a handler
            # sends something before its result; a log line does, as a slow server would.
            note = LoggingMessageNotification(params=LoggingMessageNotificationParams(level="info", data="listing tools"))
            await ctx.session.send_notification(note, related_request_id=ctx.request_id)
        tools = await self.list_tools()
        if not self.page_size:
            return ListToolsResult(tools=tools)
        start = int(params.cursor) if params and params.cursor else 0
        end = start + self.page_size
        return ListToolsResult(tools=tools[start:end], next_cursor=str(end) if end < len(tools) else None)


server = DemoServer("demo-dashboards")


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


@server.prompt()
def summarize_dashboard(name: str) -> str:
    """A prompt that asks for a summary of one dashboard."""
    return f"Summarize the dashboard {name}."


@server.resource("dashboards://index")
def dashboard_index() -> str:
    """The dashboards, one per line."""
    return "\n".join(DASHBOARDS)


def add_generated_tools(count: int) -> None:
    """`count` small tools, alternately harmless and destructive, for list-size tests."""
    for i in range(count):
        name = f"{'delete' if i % 2 else 'get'}_panel_{i:03}"

        def panel(index: int = 0) -> str:
            return f"panel {index}"

        server.add_tool(panel, name=name, description=f"Generated tool {name} for list-size tests.")


def request_headers(ctx: Context) -> list[str]:
    """The names of the request headers that reached the MCP server."""
    return sorted({name.lower() for name in (ctx.headers or {})})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--sse", action="store_true", help="answer POSTs in text/event-stream")
    parser.add_argument("--page-size", type=int, default=0, help="paginate tools/list")
    parser.add_argument("--extra-tools", type=int, default=0, help="add generated tools")
    parser.add_argument("--headers-tool", action="store_true", help="add the request_headers tool")
    args = parser.parse_args()
    server.page_size = args.page_size or None
    server.sse = args.sse
    add_generated_tools(args.extra_tools)
    if args.headers_tool:
        server.add_tool(request_headers)
    server.run(
        "streamable-http",
        host=args.host,
        port=args.port,
        stateless_http=True,
        json_response=not args.sse,
        # Envoy forwards the client's Host; DNS-rebinding protection belongs in front of a server
        # reachable from a browser, and this one is reachable only through Envoy.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )


if __name__ == "__main__":
    main()
