"""End to end: the admin API and config hot reload, through a real Envoy.

The demo Workspace (platform@ = {ada, sre@}, sre@ = {grace}) behind the /grafana policy, with
lifetimes long enough (memberships and verdicts cached for 5 minutes) that nothing in this
module can take effect by expiry: only invalidation and reloads can change an answer here.
"""

import json
import os
import subprocess

import pytest

from stack import (ADA, PLATFORM, SRE, TARGET, Process, Stack, demo_workspace, free_port, mcp_body, mcp_headers,
                   set_demo_groups, wait_until)

LONG = {"positive_ttl": "5m", "negative_ttl": "5m", "refresh_ahead": "0s"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("admin")
    s = Stack(workdir, upstream="mcp", before_authz=demo_workspace(workdir, LONG),
              allow_ttl="5m", deny_ttl="1s")
    yield s
    s.close()


def token_for(stack, email: str) -> str:
    return stack.standin.user_id_token(email)


def tools_list(stack, token: str) -> int:
    """One MCP `tools/list` on /grafana/mcp (the `grafana` policy: platform@ only)."""
    body = json.dumps(mcp_body("tools/list"))
    return stack.envoy.request(method="POST", path="/grafana/mcp", token=token, data=body,
                               headers=mcp_headers("tools/list")).status_code


def admin_ok(stack, *args: str) -> str:
    result = stack.authz.admin(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def config_version(stack) -> dict:
    lines = admin_ok(stack, "config-version").splitlines()
    return {line[:12].strip(): line[13:].strip() for line in lines}


def denying_ada(text: str) -> str:
    """The same config with ada on the grafana policy's deny list."""
    changed = text.replace("[policies.grafana]\n", f'[policies.grafana]\ndeny_users = ["{ADA}"]\n')
    assert changed != text
    return changed


def log_lines(stack, message: str) -> list[dict]:
    return [e for e in stack.authz.log_events() if e.get("message") == message]


@pytest.fixture
def original_config(stack):
    """Restores the start-up config (and waits for it to serve) after a reload test."""
    text = stack.authz.config_text()
    yield text
    before = config_version(stack)["reloads"]
    stack.authz.reload(text)
    wait_until(lambda: config_version(stack)["reloads"] != before, timeout=10, what="restore reload")
    wait_until(lambda: config_version(stack)["last error"] == "none", timeout=10, what="clean config")


def test_a_user_removed_from_the_group_and_invalidated_is_denied_on_the_next_request(stack):
    token = token_for(stack, ADA)
    assert tools_list(stack, token) == 200
    stack.standin.group(PLATFORM, [SRE])
    try:
        # Without invalidation the cached verdict and membership still admit her (5 minutes).
        assert tools_list(stack, token) == 200
        out = admin_ok(stack, "invalidate-user", ADA.upper())
        assert out.startswith(f"invalidated {ADA.upper()}: ")
        assert "0 verdicts" not in out and "0 memberships" not in out, out
        assert tools_list(stack, token) == 403
    finally:
        set_demo_groups(stack.standin)
        admin_ok(stack, "invalidate-user", ADA)
    assert tools_list(stack, token) == 200


def test_stats_show_every_cache_with_hits_and_misses(stack):
    token = token_for(stack, ADA)
    assert tools_list(stack, token) == 200
    assert tools_list(stack, token) == 200
    out = admin_ok(stack, "stats")
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert set(rows) == {"verdicts", "identities", "memberships"}, out
    entries, hits, misses, _rate = rows["verdicts"]
    assert int(entries) >= 1 and int(hits) >= 1 and int(misses) >= 1, out


def test_sighup_applies_a_changed_policy_and_a_bad_file_keeps_the_old_one(stack, original_config):
    token = token_for(stack, ADA)
    assert tools_list(stack, token) == 200
    before = config_version(stack)

    stack.authz.reload(denying_ada(original_config))
    wait_until(lambda: config_version(stack)["fingerprint"] != before["fingerprint"],
               timeout=10, what="the SIGHUP reload")
    # The poller may notice the new file first; the SIGHUP still reloads, and says so.
    wait_until(lambda: any(e.get("trigger") == "SIGHUP" for e in log_lines(stack, "config reloaded")),
               timeout=10, what="a reload logged as triggered by SIGHUP")
    assert tools_list(stack, token) == 403
    denying = config_version(stack)

    broken = denying_ada(original_config).replace('domains = ["example.com"]', "domains = []")
    errors_before = len(log_lines(stack, "config reload failed; keeping the previous config"))
    stack.authz.reload(broken)
    wait_until(lambda: len(log_lines(stack, "config reload failed; keeping the previous config"))
               > errors_before, timeout=10, what="the reload error in the log")
    error = log_lines(stack, "config reload failed; keeping the previous config")[-1]
    assert error["level"] == "ERROR"
    assert error["error"].startswith("config: access.domains:"), error
    after = config_version(stack)
    assert after["fingerprint"] == denying["fingerprint"]
    assert after["last error"].startswith("config: access.domains:")
    assert stack.authz.process.alive()
    assert tools_list(stack, token) == 403  # still the old (denying) config


def test_a_listener_change_is_refused_on_reload(stack, original_config):
    before = config_version(stack)
    moved = original_config.replace(f"127.0.0.1:{stack.authz.grpc_port}", f"127.0.0.1:{free_port()}")
    stack.authz.reload(moved)
    wait_until(lambda: "listen.grpc" in config_version(stack)["last error"], timeout=10,
               what="the refused reload")
    assert config_version(stack)["fingerprint"] == before["fingerprint"]
    assert tools_list(stack, token_for(stack, ADA)) == 200


def test_a_changed_file_is_reloaded_without_a_signal(stack, original_config):
    token = token_for(stack, ADA)
    assert tools_list(stack, token) == 200
    before = config_version(stack)
    stack.authz.write_config(denying_ada(original_config))
    wait_until(lambda: config_version(stack)["fingerprint"] != before["fingerprint"],
               timeout=10, what="the file-change reload")
    assert any(e.get("trigger") == "file changed" for e in log_lines(stack, "config reloaded"))
    assert tools_list(stack, token) == 403


def test_the_admin_api_refuses_a_caller_without_its_token(stack):
    # Any process on the task's loopback can reach the port; only the token holder is served.
    result = stack.authz.admin("invalidate-user", "ada@example.com", token=False)
    assert result.returncode == 1
    assert "listen.admin_token" in result.stderr, result.stderr
    wrong = stack.authz.workdir / "wrong-token"
    wrong.write_text("not-the-token\n")
    result = stack.authz.admin("--token-file", str(wrong), "stats", token=False)
    assert result.returncode == 1 and "refused" in result.stderr, result.stderr
    assert stack.authz.admin("stats").returncode == 0


def test_the_cli_exits_1_when_the_admin_api_is_unreachable(stack):
    result = stack.authz.admin("stats", addr=f"127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert result.stderr.startswith("authz admin: cannot reach the admin API at 127.0.0.1:"), result.stderr


def test_a_non_loopback_admin_address_is_refused_at_start(stack):
    result = subprocess.run(
        [str(TARGET / "authz"), "--config", str(stack.workdir / "authz.toml"), "--check-config"],
        capture_output=True, text=True, timeout=20,
        env={**os.environ, "AUTHZ_LISTEN__ADMIN": "0.0.0.0:9193"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("config: listen.admin: must be a loopback address")
    assert len(result.stderr.strip().splitlines()) == 1


def runtime_workers(events: list[dict]) -> int | None:
    for event in events:
        if event.get("message") == "runtime started":
            return event["worker_threads"]
    return None


def test_runtime_worker_threads_sets_the_threads_that_serve_requests(stack):
    # The stack's authz runs with the default: one worker per core.
    assert runtime_workers(stack.authz.log_events()) == os.cpu_count()
    workdir = stack.workdir / "one-worker"
    workdir.mkdir()
    env = {
        "AUTHZ_RUNTIME__WORKER_THREADS": "1",
        "AUTHZ_LISTEN__GRPC": f"127.0.0.1:{free_port()}",
        "AUTHZ_LISTEN__HTTP": f"127.0.0.1:{free_port()}",
        "AUTHZ_LISTEN__ADMIN": f"127.0.0.1:{free_port()}",
    }
    one = Process("authz", [str(TARGET / "authz"), "--config", str(stack.workdir / "authz.toml")],
                  workdir, env=env)
    try:
        def started() -> bool:
            assert one.alive(), one.log()
            return "runtime started" in one.log()
        wait_until(started, what="the one-worker authz to start")
        events = [json.loads(line) for line in one.log().splitlines() if line.startswith("{")]
        assert runtime_workers(events) == 1
    finally:
        one.stop()


def test_healthcheck_says_what_is_not_ready():
    """`authz healthcheck` (the images' health command) exits 1 on a 503 and prints the
    readiness body, so `docker inspect` shows why (here: the JWKS is not loaded)."""
    import http.server
    import threading

    body = b'{"ready":false,"config":"valid","jwks":false,"group_credentials":null,"store":null}'

    class NotReady(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the standard library's name
            self.send_response(503)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotReady)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/readyz"
        result = subprocess.run([str(TARGET / "authz"), "healthcheck", "--url", url],
                                capture_output=True, text=True, timeout=10)
    finally:
        server.shutdown()
    assert result.returncode == 1
    assert "503" in result.stderr and '"jwks":false' in result.stderr, result.stderr
