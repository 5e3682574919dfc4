"""Runs the local stack until Ctrl-C (see scripts/dev-stack). Not a test."""

import argparse
import pathlib
import signal
import tempfile

from stack import Stack, free_port


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8443, help="Envoy's TLS port (default 8443)")
    args = parser.parse_args()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="authz-dev-"))
    port = args.port
    try:
        stack = Stack(workdir, envoy_port=port)
    except OSError:
        port = free_port()
        stack = Stack(workdir, envoy_port=port)
    try:
        id_token = stack.standin.id_token()
        access_token = stack.standin.access_token()
        consumer = stack.standin.access_token(hd=None, sub="999", email="someone@example.com")
        cert = stack.envoy.cert
        print(f"""
authz local stack is up (logs and config in {workdir})
  Envoy (TLS)      https://localhost:{port}/mcp     admin http://127.0.0.1:{stack.envoy.admin_port}
  authz            gRPC 127.0.0.1:{stack.authz.grpc_port}  HTTP http://127.0.0.1:{stack.authz.http_port}/readyz
  Google stand-in  {stack.standin.url}   (mint tokens: POST /_standin/id_token, /_standin/access_token)

No token -> 401 with the resource_metadata challenge:
  curl -si --cacert {cert} https://localhost:{port}/mcp

A Workspace ID token -> 200; the upstream echoes the identity headers it received:
  curl -s --cacert {cert} -H 'Authorization: Bearer {id_token}' https://localhost:{port}/mcp

A Workspace access token -> 200:
  curl -s --cacert {cert} -H 'Authorization: Bearer {access_token}' https://localhost:{port}/mcp

A consumer account whose email looks like the company's (no hd) -> 403:
  curl -si --cacert {cert} -H 'Authorization: Bearer {consumer}' https://localhost:{port}/mcp

Audit log: {stack.authz.process.log_path}
Ctrl-C to stop.""", flush=True)
        stop = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # after the children started: they must not inherit it
        signal.sigwait(stop)
    finally:
        stack.close()


if __name__ == "__main__":
    main()
