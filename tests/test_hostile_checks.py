"""End to end: callers without an account (or with one valid token) cannot turn the Check
against Google, a public host, or other users' cached verdicts.

Through a real Envoy, against the release binary, beside a legitimate user whose requests must
keep succeeding.
"""

import concurrent.futures
import json
import re
import secrets
import threading
import time

import pytest
import requests

from stack import Stack, mcp_body, mcp_headers
from test_oauth import OAuthStack

NEW_TOKENS_PER_SECOND = 20


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Verdicts and identities cached 2 s, so a known token's cache expires during a spray."""
    s = Stack(tmp_path_factory.mktemp("hostile-checks"), deny_ttl="1s", allow_ttl="2s",
              google_extra=["max_concurrent_new_tokens = 8",
                            f"new_tokens_per_second = {NEW_TOKENS_PER_SECOND}"])
    yield s
    s.close()


@pytest.fixture(scope="module")
def long_cache(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("hostile-churn"), deny_ttl="1s")
    yield s
    s.close()


def metric(stack, prefix: str) -> float:
    text = requests.get(f"http://127.0.0.1:{stack.authz.http_port}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def test_a_junk_token_spray_costs_google_a_bounded_rate_and_spares_real_users(stack):
    real = stack.standin.id_token(email="ada@example.com", sub="100001")
    assert stack.envoy.request(token=real).status_code == 200
    # A Google access token verified before the spray: when its cached identity expires
    # (allow_ttl, 2 s) during the spray, it is verified again without competing with the junk.
    known = stack.standin.access_token(sub="100005", email="erin@example.com")
    assert stack.envoy.request(token=known).status_code == 200
    stack.standin.reset_stats()
    started = time.monotonic()
    stop = threading.Event()

    def junk(_):
        if stop.is_set():
            return None
        return stack.envoy.request(token="ya29." + secrets.token_urlsafe(60)).status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        spray = pool.map(junk, range(3000))
        # Real users keep working during the spray, past the known token's cache expiry.
        during = [stack.envoy.request(token=real).status_code for _ in range(20)]
        time.sleep(2.5)
        during_known = [stack.envoy.request(token=known).status_code for _ in range(10)]
        stop.set()
        statuses = [s for s in spray if s is not None]
    elapsed = time.monotonic() - started
    assert during == [200] * 20
    assert during_known == [200] * 10, during_known
    assert set(statuses) <= {401, 503}, set(statuses)
    assert statuses.count(503) > 0, "nothing was shed"
    stats = stack.standin.stats()
    # tokeninfo at most the rate (plus its one-second burst); userinfo never, for junk.
    # (+ the known token's re-verification, which is not counted against the bound)
    assert stats["tokeninfo"] <= NEW_TOKENS_PER_SECOND * (elapsed + 1) + 2, (stats, elapsed)
    assert stats["userinfo"] <= 1, stats
    assert metric(stack, "authz_verifications_shed_total") == statuses.count(503)
    # Shed answers were not cached: a real new access token works once the second has passed.
    time.sleep(1.1)
    fresh = stack.standin.access_token(sub="100002", email="grace@example.com")
    assert stack.envoy.request(token=fresh).status_code == 200


def tools_call(stack, token: str, tool: str) -> int:
    body = json.dumps(mcp_body("tools/call", {"name": tool, "arguments": {}}))
    return stack.envoy.request("POST", "/mcp", token=token, data=body,
                               headers=mcp_headers("tools/call", tool)).status_code


def test_one_valid_token_cannot_flood_the_verdict_cache(long_cache):
    stack = long_cache
    victim = stack.standin.id_token(email="grace@example.com", sub="100003")
    assert tools_call(stack, victim, "list_dashboards") == 200
    before = int(re.search(r"verdicts\s+(\d+)", stack.authz.admin("stats").stdout).group(1))
    churner = stack.standin.id_token(email="eve@example.com", sub="100004")
    for i in range(150):
        assert tools_call(stack, churner, f"made_up_{i}") == 200
    after = int(re.search(r"verdicts\s+(\d+)", stack.authz.admin("stats").stdout).group(1))
    assert after - before <= 64, (before, after)
    hits = metric(stack, 'authz_cache_requests_total{cache="verdict",result="hit"}')
    assert tools_call(stack, victim, "list_dashboards") == 200
    assert metric(stack, 'authz_cache_requests_total{cache="verdict",result="hit"}') == hits + 1


@pytest.fixture(scope="module")
def facade(tmp_path_factory):
    s = OAuthStack(tmp_path_factory.mktemp("hostile-metadata"), groups=False)
    yield s
    s.close()


def test_client_metadata_urls_cost_a_bounded_number_of_fetches_and_say_nothing(facade):
    pages = []
    for i in range(30):
        client_id = f"https://metadata.invalid/client.json?{i}"
        url = facade.authorize_url(client_id, secrets.token_urlsafe(48))
        response = facade.browser().get(url, allow_redirects=False)
        assert response.status_code == 400 and "location" not in response.headers
        pages.append(response.text)
    # One generic sentence, whatever happened (busy, or the name did not resolve).
    assert all("could not be used" in page for page in pages)
    assert not any(word in page for page in pages for word in ("resolve", "timeout", "HTTP 4", "HTTP 5"))
    text = requests.get(f"http://127.0.0.1:{facade.authz[0].http_port}/metrics", timeout=5).text
    fetched = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("authz_client_metadata_fetches_total") and 'result="busy"' not in line)
    busy = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("authz_client_metadata_fetches_total") and 'result="busy"' in line)
    assert fetched <= 10 and busy >= 20, text
