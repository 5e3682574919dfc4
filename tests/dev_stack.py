"""Runs the local stack until Ctrl-C (see scripts/dev-stack). Not a test."""

import argparse
import pathlib
import signal
import tempfile

from stack import ADA, BOB, CONSUMER, GRACE, Stack, demo_workspace, free_port, oauth_config


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
            settings["extra_config"] = oauth_config(standin, origin) + settings["extra_config"]
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
               "-H 'accept: application/json, text/event-stream'")
        call = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"%s","arguments":%s}}'
        print(f"""
authz local stack is up (logs and config in {workdir})
  Envoy (TLS)      https://localhost:{port}/mcp     admin http://127.0.0.1:{stack.envoy.admin_port}
  authz            gRPC 127.0.0.1:{stack.authz.grpc_port}  HTTP http://127.0.0.1:{stack.authz.http_port}/readyz
  Google stand-in  {stack.standin.url}   (mint tokens: POST /_standin/id_token, /_standin/access_token)

No token -> 401 with the resource_metadata challenge:
  curl -si --cacert {cert} https://localhost:{port}/mcp

Sign in like an MCP client (the OAuth facade; the stand-in plays Google's sign-in page):
  point an MCP client (MCP Inspector, VS Code, the Python SDK) at https://localhost:{port}/mcp
  (trust {cert}), allow it on the consent page, and at "Sign in with Google" type
  {ADA} (or {GRACE}; {BOB} and {CONSUMER} are refused). Metadata:
  curl -s --cacert {cert} https://localhost:{port}/.well-known/oauth-authorization-server

The MCP server (the official Python SDK) at /mcp, default policy (any Workspace account).
A Workspace ID token -> 200; the whoami tool shows the identity headers authz set:
  {mcp} -H 'Authorization: Bearer {id_token}' -d '{call % ("whoami", "{}")}' https://localhost:{port}/mcp

A Workspace access token -> 200:
  {mcp} -H 'Authorization: Bearer {access_token}' -d '{call % ("list_dashboards", "{}")}' https://localhost:{port}/mcp

A consumer account whose email looks like the company's (no hd) -> 403:
  {mcp} -i -H 'Authorization: Bearer {consumer}' -d '{call % ("whoami", "{}")}' https://localhost:{port}/mcp

Group policies (stand-in Workspace: platform@ = ada + sre@; sre@ = grace; bob in neither).
/grafana/mcp needs platform@, and delete_* tools need sre@:
  ada lists dashboards -> 200
  {mcp} -H 'Authorization: Bearer {ada}' -d '{call % ("list_dashboards", "{}")}' https://localhost:{port}/grafana/mcp
  ada deletes one -> 403 access_denied (policy grafana)
  {mcp} -i -H 'Authorization: Bearer {ada}' -d '{call % ("delete_dashboard", '{"name":"latency"}')}' https://localhost:{port}/grafana/mcp
  grace deletes one -> 200
  {mcp} -H 'Authorization: Bearer {grace}' -d '{call % ("delete_dashboard", '{"name":"latency"}')}' https://localhost:{port}/grafana/mcp
  bob -> 403
  {mcp} -i -H 'Authorization: Bearer {bob}' -d '{call % ("list_dashboards", "{}")}' https://localhost:{port}/grafana/mcp
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
