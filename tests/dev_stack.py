"""Runs the local stack until Ctrl-C (see scripts/dev-stack). Not a test."""

import argparse
import pathlib
import signal
import tempfile

import json

from stack import ADA, BOB, CONSUMER, GRACE, MCP_VERSION, Stack, demo_workspace, free_port, mcp_body, oauth_config

# The three MCP servers of the demo, each signed in to by its own URL (see README, "Several MCP
# servers"); Envoy routes all three to the demo MCP server.
RESOURCES = """
[[resources]]
url = "{origin}/grafana/mcp"
name = "Grafana"
policy = "grafana"

[[resources]]
url = "{origin}/sre/mcp"
name = "SRE tools"
policy = "sre"
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8443, help="Envoy's TLS port (default 8443)")
    args = parser.parse_args()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="authz-dev-"))
    port = args.port

    def options(port: int) -> dict:
        # The OAuth facade's issuer and the MCP resource are Envoy's public origin.
        origin = f"https://localhost:{port}"
        workspace = demo_workspace(workdir)

        def before_authz(standin):
            settings = workspace(standin)
            settings["extra_config"] = (oauth_config(standin, origin) + settings["extra_config"]
                                        + RESOURCES.format(origin=origin))
            return settings

        return dict(upstream="mcp", before_authz=before_authz, resource_url=f"{origin}/mcp")

    try:
        stack = Stack(workdir, envoy_port=port, **options(port))
    except OSError:
        port = free_port()
        stack = Stack(workdir, envoy_port=port, **options(port))
    try:
        id_token = stack.standin.id_token()
        access_token = stack.standin.access_token()
        consumer = stack.standin.access_token(hd=None, sub="999", email="someone@example.com")
        ada, grace, bob = (stack.standin.id_token(email=e, sub=str(i)) for i, e in enumerate((ADA, GRACE, BOB), 1))
        cert = stack.envoy.cert
        mcp = (f"curl -s --cacert {cert} -H 'content-type: application/json' "
               f"-H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: {MCP_VERSION}'")

        def call(tool: str, arguments: str) -> str:
            """The headers and body of an MCP 2026-07-28 tools/call, as curl arguments."""
            body = json.dumps(mcp_body("tools/call", {"name": tool, "arguments": json.loads(arguments)}),
                              separators=(",", ":"))
            return f"-H 'mcp-method: tools/call' -H 'mcp-name: {tool}' -d '{body}'"
        print(f"""
authz local stack is up (logs and config in {workdir})
  Envoy (TLS)      https://localhost:{port}/mcp     admin http://127.0.0.1:{stack.envoy.admin_port}
  authz            gRPC 127.0.0.1:{stack.authz.grpc_port}  HTTP http://127.0.0.1:{stack.authz.http_port}/readyz
  Google stand-in  {stack.standin.url}   (mint tokens: POST /_standin/id_token, /_standin/access_token)

No token -> 401 with the resource_metadata challenge:
  curl -si --cacert {cert} https://localhost:{port}/mcp

Sign in like an MCP client (the OAuth facade; the stand-in plays Google's sign-in page):
  point an MCP client (MCP Inspector, VS Code, the Python SDK) at https://localhost:{port}/mcp,
  /grafana/mcp or /sre/mcp (three MCP servers, each signed in to by its URL; trust {cert}),
  allow it on the consent page, and at "Sign in with Google" type a user: {ADA} may use /mcp
  and /grafana/mcp, {GRACE} all three, {BOB} only /mcp; {CONSUMER} (no Workspace) none. Metadata:
  curl -s --cacert {cert} https://localhost:{port}/.well-known/oauth-authorization-server

The MCP server (the official Python SDK) at /mcp, default policy (any Workspace account).
A Workspace ID token -> 200; the whoami tool shows the identity headers authz set:
  {mcp} -H 'Authorization: Bearer {id_token}' {call("whoami", "{}")} https://localhost:{port}/mcp

A Workspace access token -> 200:
  {mcp} -H 'Authorization: Bearer {access_token}' {call("list_dashboards", "{}")} https://localhost:{port}/mcp

A consumer account whose email looks like the company's (no hd) -> 403:
  {mcp} -i -H 'Authorization: Bearer {consumer}' {call("whoami", "{}")} https://localhost:{port}/mcp

Group policies (stand-in Workspace: platform@ = ada + sre@; sre@ = grace; bob in neither).
/grafana/mcp needs platform@, and delete_* tools need sre@:
  ada lists dashboards -> 200
  {mcp} -H 'Authorization: Bearer {ada}' {call("list_dashboards", "{}")} https://localhost:{port}/grafana/mcp
  ada deletes one -> 403 access_denied (policy grafana)
  {mcp} -i -H 'Authorization: Bearer {ada}' {call("delete_dashboard", '{"name":"latency"}')} https://localhost:{port}/grafana/mcp
  grace deletes one -> 200
  {mcp} -H 'Authorization: Bearer {grace}' {call("delete_dashboard", '{"name":"latency"}')} https://localhost:{port}/grafana/mcp
  bob -> 403
  {mcp} -i -H 'Authorization: Bearer {bob}' {call("list_dashboards", "{}")} https://localhost:{port}/grafana/mcp
/sre/mcp (Envoy's route names policy sre) admits grace only.
Change a group while it runs: curl -X PUT {stack.standin.url}/_standin/group -d '{{"group":"sre@example.com","members":[]}}' -H 'content-type: application/json'

Audit log: {stack.authz.process.log_path}
Ctrl-C to stop.""", flush=True)
        stop = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # after the children started: they must not inherit it
        signal.sigwait(stop)
    finally:
        stack.close()


if __name__ == "__main__":
    main()
