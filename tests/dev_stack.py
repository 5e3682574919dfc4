"""Runs the local stack until Ctrl-C (see scripts/dev-stack). Not a test; tests/test_dev_stack.py
runs it and checks every answer its printout promises.

The printout is written so that a program can check it: each example command ends in
`# -> <answer>` (an HTTP status, or `exit 0`), and runs in a shell where `D` is the stack's
directory (the printout's first command sets it).
"""

import argparse
import json
import os
import pathlib
import signal
import socket
import sys
import tempfile

from stack import (ADA, BOB, CONSUMER, DEMO_RESOURCES, GRACE, MCP_VERSION, TARGET, Stack, demo_workspace, mcp_body,
                   oauth_config)

# `$D/mcp USER TOOL PATH [ARGUMENTS]`: one MCP 2026-07-28 tools/call through Envoy as USER (a
# token file in $D/tokens), printing the body and `HTTP <status>`.
MCP_SCRIPT = """#!/bin/sh
# usage: mcp USER TOOL PATH [ARGUMENTS-JSON]   e.g. mcp ada list_dashboards /grafana/mcp
D=$(dirname "$0")
user=$1 tool=$2 path=$3 arguments=${{4:-'{{}}'}}
body=$(printf '{body}' "$tool" "$arguments")
exec curl -s --cacert "$D/cert.pem" -w '\\nHTTP %{{http_code}}\\n' \\
  -H "authorization: Bearer $(cat "$D/tokens/$user")" \\
  -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \\
  -H 'mcp-protocol-version: {version}' -H 'mcp-method: tools/call' -H "mcp-name: $tool" \\
  -d "$body" "{origin}$path"
"""


def port_holder(port: int) -> str | None:
    """Who listens on `port` (None when it is free): 'pid N (name)' when /proc tells."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return None
        except OSError:
            pass
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = pathlib.Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                inodes.add(fields[9])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}").removeprefix("socket:[").rstrip("]") in inodes:
                    name = pathlib.Path(f"/proc/{pid}/comm").read_text().strip()
                    return f"pid {pid} ({name})"
        except OSError:
            continue
    return "another program"


def started_stack(workdir: pathlib.Path, port: int) -> Stack:
    origin = f"https://localhost:{port}"
    workspace = demo_workspace(workdir)

    def before_authz(standin):
        settings = workspace(standin)
        # Cursor's private-use redirect is allowed here, so every client in README can try it.
        oauth = oauth_config(standin, origin, redirect_schemes='["cursor://anysphere.cursor-mcp"]')
        settings["extra_config"] = oauth + settings["extra_config"] + DEMO_RESOURCES.replace("{origin}", origin)
        return settings

    # The OAuth facade's issuer and the MCP servers are Envoy's public origin.
    return Stack(workdir, envoy_port=port, upstream="mcp", before_authz=before_authz,
                 resource_url=f"{origin}/mcp")


def why_not_started(workdir: pathlib.Path) -> str:
    """authz's own last words, when it stopped during start-up (a config or secret error)."""
    for log in sorted(workdir.glob("*.log")):
        if "authz" not in log.name:
            continue
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        said = [line for line in lines if line.startswith(("config:", "authz:"))]
        if said:
            return said[-1]
    return ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8443, help="Envoy's TLS port (default 8443)")
    args = parser.parse_args()
    port = args.port
    holder = port_holder(port)
    if holder:
        print(f"dev-stack: port {port} is in use by {holder}; stop it, or run scripts/dev-stack --port <another>",
              file=sys.stderr)
        sys.exit(1)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="authz-dev-"))
    try:
        stack = started_stack(workdir, port)
    except Exception as error:  # noqa: BLE001 - said in one line; the logs keep the rest
        reason = why_not_started(workdir) or f"{type(error).__name__}: {error}"
        print(f"dev-stack: the stack did not start: {reason}\n  (logs in {workdir})", file=sys.stderr)
        sys.exit(1)
    try:
        print(printout(stack, workdir, port), flush=True)
        stop = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # after the children started: they must not inherit it
        signal.sigwait(stop)
    finally:
        stack.close()


def printout(stack: Stack, workdir: pathlib.Path, port: int) -> str:
    origin = f"https://localhost:{port}"
    (workdir / "cert.pem").write_bytes(pathlib.Path(stack.envoy.cert).read_bytes())
    tokens = workdir / "tokens"
    tokens.mkdir(exist_ok=True)
    users = {
        "ada": stack.standin.id_token(email=ADA, sub="1"),
        "grace": stack.standin.id_token(email=GRACE, sub="2"),
        "bob": stack.standin.id_token(email=BOB, sub="3"),
        "ada-access": stack.standin.access_token(email=ADA, sub="1"),
        "consumer": stack.standin.access_token(hd=None, sub="999", email="someone@example.com"),
    }
    for name, token in users.items():
        (tokens / name).write_text(token)
    body = json.dumps(mcp_body("tools/call", {"name": "%s", "arguments": {}}), separators=(",", ":"))
    body = body.replace('"arguments":{}', '"arguments":%s')
    script = workdir / "mcp"
    script.write_text(MCP_SCRIPT.format(body=body, version=MCP_VERSION, origin=origin))
    script.chmod(0o755)
    authz = stack.authz
    admin = (f"{TARGET / 'authz'} admin --addr 127.0.0.1:{authz.admin_port} "
             f"--token-file $D/admin-token")
    return f"""
authz local stack is up. Paste this first (the commands below use it):
  D={workdir}
  Envoy (TLS)      {origin}/mcp     admin http://127.0.0.1:{stack.envoy.admin_port}
  authz            gRPC 127.0.0.1:{authz.grpc_port}  HTTP http://127.0.0.1:{authz.http_port}/readyz
  Google stand-in  {stack.standin.url}   (mint tokens: POST /_standin/id_token, /_standin/access_token)
  Tokens in $D/tokens (ada, grace, bob: ID tokens; ada-access: an access token; consumer: an
  account with no Workspace). $D/mcp USER TOOL PATH calls a tool as USER and prints the status.

No token: a 401 whose WWW-Authenticate names the resource metadata:
  curl -s -o /dev/null -w '%{{http_code}}\\n' --cacert $D/cert.pem {origin}/mcp   # -> 401

Sign in like an MCP client (the OAuth facade; the stand-in plays Google's sign-in page):
  point an MCP client (MCP Inspector, VS Code, the Python SDK) at {origin}/mcp, /grafana/mcp or
  /sre/mcp (three MCP servers, each signed in to by its own URL; trust $D/cert.pem), allow it on
  the consent page, and at "Sign in with Google" type a user: {ADA} may use /mcp and
  /grafana/mcp, {GRACE} all three, {BOB} only /mcp; {CONSUMER} (no Workspace) none.

/mcp: the default policy admits any account of the Workspace (example.com):
  $D/mcp ada whoami /mcp                   # -> 200
  $D/mcp ada-access list_dashboards /mcp   # -> 200
  $D/mcp bob whoami /mcp                   # -> 200
  $D/mcp consumer whoami /mcp              # -> 403
/grafana/mcp: policy grafana, platform@ (ada, and grace through sre@); delete_* needs sre@:
  $D/mcp ada list_dashboards /grafana/mcp                          # -> 200
  $D/mcp ada delete_dashboard /grafana/mcp '{{"name":"latency"}}'    # -> 403
  $D/mcp grace delete_dashboard /grafana/mcp '{{"name":"latency"}}'  # -> 200
  $D/mcp bob list_dashboards /grafana/mcp                          # -> 403
/sre/mcp: policy sre, sre@ only:
  $D/mcp grace whoami /sre/mcp   # -> 200
  $D/mcp ada whoami /sre/mcp     # -> 403
A 403 names the policy that refused ({{"error":"access_denied",...,"policy":"grafana"}}), never the group.

Off-boarding: forget everything cached about a user (and revoke their sessions):
  {admin} invalidate-user {ADA}   # -> exit 0
Change a group while it runs (grace leaves sre@):
  curl -s -X PUT {stack.standin.url}/_standin/group -H 'content-type: application/json' -d '{{"group":"sre@example.com","members":[]}}'

Logs (the audit log is authz's): {workdir}
Ctrl-C to stop."""


if __name__ == "__main__":
    main()
