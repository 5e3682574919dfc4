"""Faults, end to end through a real Envoy: Google misbehaving, authz killed, clocks skewed,
hostile input at the HTTP listener. The question each test answers: is anything allowed that
should be denied (never), and does service come back by itself (always)?"""

import os
import signal
import threading
import time

import pytest
import requests

from stack import Stack, StandIn, wait_until
from test_ext_authz import foreign_key_token


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # authz's Google timeout (3 s) is longer than Envoy's ext_authz timeout (1 s), so a hanging
    # Google is cut by Envoy, the harder case.
    s = Stack(tmp_path_factory.mktemp("faults"), jwks_refetch_interval="1s", request_timeout="3s")
    yield s
    s.close()


class Load:
    """Requests in background threads until stopped; records what came back and what the
    upstream saw. `tokens()` returns (kind, token) to send next."""

    def __init__(self, stack, tokens, workers=4):
        self.stack, self.tokens = stack, tokens
        self.results: list[tuple[str, int]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    def _run(self):
        session = requests.Session()
        while not self.stop.is_set():
            kind, token = self.tokens()
            try:
                response = session.get(f"{self.stack.envoy.url}/mcp", verify=str(self.stack.envoy.cert),
                                       headers={"authorization": f"Bearer {token}"}, timeout=5)
                self.results.append((kind, response.status_code))
            except requests.RequestException:
                self.results.append((kind, -1))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(10)

    def statuses(self, kind) -> set[int]:
        return {status for k, status in self.results if k == kind}


def assert_nothing_forged_got_through(stack, load):
    assert load.statuses("forged") <= {401, 503}, load.statuses("forged")
    for seen in stack.upstream.requests:
        users = [v for k, v in seen["headers"] if k == "x-auth-request-user"]
        assert len(users) == 1 and users[0] != "attacker", seen


def forged_pool(n=5):
    return [foreign_key_token("unknown") for _ in range(n)]


def test_jwks_with_no_usable_keys_keeps_the_last_good_keys(stack):
    known = stack.standin.id_token()
    stack.standin.fault("empty", endpoints=["jwks"])
    try:
        time.sleep(1.1)  # past the refetch interval
        # Known keys still verify: a broken key set never replaces a good one.
        assert stack.envoy.request(token=stack.standin.id_token(sub="k2")).status_code == 200
        # A kid we cannot learn about while the JWKS is broken: cannot decide, 503.
        response = stack.envoy.request(token=stack.standin.id_token(kid="brand-new-kid"))
        assert response.status_code == 503
    finally:
        stack.standin.fault("ok")
    assert stack.envoy.request(token=known).status_code == 200


def test_key_rotation_in_the_middle_of_load(stack):
    forged = forged_pool()
    counter = iter(range(10**9))

    def tokens():
        i = next(counter)
        if i % 5 == 0:
            return "forged", forged[i % len(forged)]
        return "valid", stack.standin.id_token(sub=f"user-{i % 50}")

    stack.standin.reset_stats()
    with Load(stack, tokens) as load:
        time.sleep(1)
        # As Google does: publish the next key ahead of time, then start signing with it.
        new_kid = stack.standin.rotate(keep_old=True, activate=False)
        time.sleep(1.5)
        assert stack.standin.activate() == new_kid
        time.sleep(2)
    valid = [s for k, s in load.results if k == "valid"]
    assert len(valid) > 20
    assert set(valid) == {200}, {s: valid.count(s) for s in set(valid)}
    assert_nothing_forged_got_through(stack, load)
    assert stack.standin.stats()["jwks"] <= 3, stack.standin.stats()


def test_authz_killed_under_load_fails_closed_and_resumes(stack):
    forged = forged_pool()
    valid = [stack.standin.id_token(sub=f"user-{i}") for i in range(20)]
    counter = iter(range(10**9))

    def tokens():
        i = next(counter)
        return ("forged", forged[i % len(forged)]) if i % 3 == 0 else ("valid", valid[i % len(valid)])

    with Load(stack, tokens) as load:
        time.sleep(1)
        os.kill(stack.authz.process.popen.pid, signal.SIGKILL)
        stack.authz.process.popen.wait()
        time.sleep(1.5)
        down_from = len(load.results)
        time.sleep(0.5)
        during_outage = load.results[down_from:]
        stack.authz.start()
        wait_until(lambda: load.results[-1] == ("valid", 200) or False, timeout=20, what="recovery")
        time.sleep(1)
    assert during_outage and {s for _, s in during_outage} == {503}, set(during_outage)
    assert load.statuses("valid") <= {200, 503}
    assert_nothing_forged_got_through(stack, load)
    assert load.results[-1][1] in (200, 401)


@pytest.mark.parametrize("shift,status", [(-25, 200), (25, 200), (-90, 401), (90, 401)])
def test_issuer_clock_skew_within_and_beyond_the_leeway(stack, shift, status):
    """The issuer's clock runs `shift` seconds off ours (leeway 30 s): its iat/exp move with it."""
    now = int(time.time()) + shift
    if shift > 0:
        token = stack.standin.id_token(iat=now, exp=now + 3600)  # issued "in the future"
    else:
        token = stack.standin.id_token(iat=now - 3600, exp=now)  # expired "in the past"
    assert stack.envoy.request(token=token).status_code == status


def test_google_quota_errors_are_503(stack):
    stack.standin.fault("error", status=429, endpoints=["tokeninfo"])
    try:
        assert stack.envoy.request(token=stack.standin.access_token(sub="quota")).status_code == 503
    finally:
        stack.standin.fault("ok")


def test_google_slower_than_envoys_timeout_is_503(stack):
    token = stack.standin.access_token(sub="slow")
    stack.standin.fault("hang", endpoints=["tokeninfo"])
    try:
        started = time.monotonic()
        assert stack.envoy.request(token=token).status_code == 503
        assert time.monotonic() - started < 2.5, "Envoy's 1 s timeout should cut the check"
    finally:
        stack.standin.fault("ok")
    wait_until(lambda: stack.envoy.request(token=token).status_code == 200, timeout=10, what="recovery")


def test_google_unreachable_then_back_on_a_new_process(tmp_path):
    stack = Stack(tmp_path, jwks_refetch_interval="1s")
    try:
        cached = stack.standin.access_token(sub="cached")
        assert stack.envoy.request(token=cached).status_code == 200
        fresh = stack.standin.access_token(sub="fresh")
        port = stack.standin.port
        stack.standin.process.stop()  # connection refused from now on
        assert stack.envoy.request(token=fresh).status_code == 503
        assert stack.envoy.request(token=cached).status_code == 200, "cached allows keep working"
        # Google comes back (new process, new signing key, same address).
        stack.standin = StandIn(tmp_path, port=port)
        token = stack.standin.id_token()
        time.sleep(1.1)
        assert stack.envoy.request(token=token).status_code == 200
        assert stack.envoy.request(token=stack.standin.access_token(sub="after")).status_code == 200
    finally:
        stack.close()


def test_hostile_input_at_the_http_listener(stack):
    base = f"http://127.0.0.1:{stack.authz.http_port}"
    pid = stack.authz.process.popen.pid
    rss_before = int(next(l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:")).split()[1])
    assert requests.get(f"{base}/nope", timeout=5).status_code == 404
    assert requests.post(f"{base}/readyz", data=b"x" * (8 << 20), timeout=10).status_code in (405, 413)
    assert requests.get(f"{base}/readyz?" + "a=1&" * 20000, timeout=5).status_code in (200, 414, 431)
    big_header = requests.get(f"{base}/healthz", headers={"x-big": "y" * 200_000}, timeout=5)
    assert big_header.status_code in (200, 431)
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
    rss_after = int(next(l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:")).split()[1])
    assert rss_after - rss_before < 8 * 1024, f"RSS grew {rss_after - rss_before} KiB"
