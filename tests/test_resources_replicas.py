"""End to end: several MCP servers on two authz replicas sharing a real Redis, and outages during
a sign-in to a server other than the default one.

Envoy balances round robin between the replicas, so consecutive requests (a sign-in's steps, a
token's uses) alternate between them. The servers are tests/stack.py's DEMO_RESOURCES: `/mcp`,
`/grafana/mcp` (platform@) and `/sre/mcp` (sre@ only).
"""

import concurrent.futures
import re
import secrets
import time

import jwt
import pytest
import requests

from stack import ADA, DEMO_RESOURCES, GRACE, mcp_body, mcp_headers, wait_until
from test_oauth import REDIRECT, OAuthStack, OfficialClient
from test_resources import connect, whoami


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    stack = OAuthStack(tmp_path_factory.mktemp("resources-pair"), replicas=2,
                       oauth_settings={"access_token_ttl": '"60s"'}, policy_extra=DEMO_RESOURCES)
    yield stack
    stack.close()


def statuses(stack: OAuthStack, path: str, token: str, n: int = 4) -> list[int]:
    """`n` consecutive tools/list requests: each replica answers half of them."""
    return [stack.envoy.request("POST", path, token=token, json=mcp_body("tools/list"),
                                headers=mcp_headers("tools/list")).status_code for _ in range(n)]


def audience(token: str) -> str:
    return jwt.decode(token, options={"verify_signature": False})["aud"]


def grafana_sign_in(stack: OAuthStack, email: str) -> dict:
    """The browser side of a sign-in to /grafana/mcp by hand; returns what the client receives."""
    verifier = secrets.token_urlsafe(48)
    client_id = stack.register()
    url = stack.authorize_url(client_id, verifier, resource=f"{stack.origin}/grafana/mcp")
    return stack.sign_in(url, email) | {"client_id": client_id, "verifier": verifier}


def test_a_servers_tokens_hold_on_both_replicas_and_nowhere_else(pair):
    grafana_url = f"{pair.origin}/grafana/mcp"
    client = OfficialClient(pair, "grafana on two replicas", server_url=grafana_url)
    connect(pair, client, whoami)
    assert len(client.sign_ins) == 1
    token = client.storage.tokens.access_token
    assert audience(token) == grafana_url
    assert statuses(pair, "/grafana/mcp", token) == [200] * 4
    for other in ("/mcp", "/sre/mcp"):
        assert statuses(pair, other, token) == [401] * 4, other

    # A refresh, on whichever replica, is for the same server; so is every later one.
    client_id = client.storage.client_info.client_id
    answer = pair.token(grant_type="refresh_token", refresh_token=client.storage.tokens.refresh_token,
                        client_id=client_id)
    assert answer.status_code == 200, answer.text
    refreshed = answer.json()
    assert audience(refreshed["access_token"]) == grafana_url
    assert statuses(pair, "/grafana/mcp", refreshed["access_token"]) == [200] * 4
    assert statuses(pair, "/mcp", refreshed["access_token"]) == [401] * 4

    # Off-boarded on replica 0: this server's tokens stop on both within the revocation poll,
    # and the session cannot be refreshed on either.
    result = pair.authz[0].admin("invalidate-user", ADA)
    assert result.returncode == 0, result.stderr
    invalidated_at = time.monotonic()
    wait_until(lambda: statuses(pair, "/grafana/mcp", refreshed["access_token"]) == [401] * 4,
               timeout=3, what="the grafana token refused on both replicas")
    assert time.monotonic() - invalidated_at < 2
    for _ in range(2):
        again = pair.token(grant_type="refresh_token", refresh_token=refreshed["refresh_token"],
                           client_id=client_id)
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant", again.text


@pytest.mark.parametrize("endpoint, email", [
    # Grace's memberships have never been looked up here: /grafana/mcp's policy (platform@)
    # needs Google's Directory API.
    ("directory", GRACE),
    # Google's token endpoint, where the callback redeems Google's code.
    ("token", ADA),
])
def test_an_outage_at_sign_in_to_another_server_is_unavailable_not_denied(pair, endpoint, email):
    """With that Google endpoint failing, the sign-in ends in "try again", never "refused";
    once it is back, the same sign-in works."""
    pair.standin.fault("error", status=503, endpoints=[endpoint])
    try:
        answer = grafana_sign_in(pair, email)
        assert answer.get("error") == "temporarily_unavailable", answer
        assert "code" not in answer
    finally:
        pair.standin.fault("ok")
    answer = grafana_sign_in(pair, email)
    assert "code" in answer, answer
    token = pair.token(grant_type="authorization_code", code=answer["code"], code_verifier=answer["verifier"],
                       redirect_uri=REDIRECT, client_id=answer["client_id"],
                       resource=f"{pair.origin}/grafana/mcp")
    assert token.status_code == 200, token.text
    assert statuses(pair, "/grafana/mcp", token.json()["access_token"]) == [200] * 4


def cached(stack: OAuthStack, replica: int) -> dict:
    """The replica's cache entries by cache name, from `authz admin stats`."""
    out = stack.authz[replica].admin("stats").stdout
    return {name: int(entries) for name, entries in re.findall(r"^(\w+)\s+(\d+)", out, re.M)}


def test_a_flood_at_unclaimed_paths_and_unknown_metadata_asks_google_nothing_and_keeps_nothing(pair):
    """Paths no server claims and metadata of servers that do not exist are answered (404)
    before any token is looked at: junk tokens sent there reach neither Google nor a cache."""
    grace = pair.standin.id_token(email=GRACE)
    assert statuses(pair, "/sre/mcp", grace) == [200] * 4
    before = [cached(pair, replica) for replica in (0, 1)]
    pair.standin.reset_stats()

    def junk(i: int) -> int:
        if i % 2:
            return pair.envoy.request("POST", f"/grafana/{secrets.token_hex(4)}", token="ya29." + secrets.token_urlsafe(60),
                                      json={"jsonrpc": "2.0", "id": 1, "method": "ping"}).status_code
        return pair.browser().get(f"{pair.origin}/.well-known/oauth-protected-resource/{secrets.token_hex(4)}/mcp",
                                  timeout=10).status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        flood = pool.map(junk, range(1200))
        during = [statuses(pair, "/sre/mcp", grace, 2) for _ in range(5)]
        answers = list(flood)
    assert set(answers) == {404}, set(answers)
    assert during == [[200, 200]] * 5
    stats = pair.standin.stats()
    assert stats["tokeninfo"] == 0 and stats["userinfo"] == 0, stats
    for replica in (0, 1):
        after = cached(pair, replica)
        for cache in ("verdicts", "identities"):
            assert after[cache] - before[replica][cache] <= 1, (replica, cache, before[replica], after)


def test_without_redis_a_sign_in_to_another_server_is_a_503_on_both_replicas(pair):
    # Last in this module: Redis comes back empty.
    verifier = secrets.token_urlsafe(48)
    client_id = pair.register()
    url = pair.authorize_url(client_id, verifier, resource=f"{pair.origin}/grafana/mcp")
    browser = pair.browser()
    forms = [pair.consent_form(browser, url) for _ in range(2)]
    pair.redis.stop()
    try:
        for fields in forms:  # one POST per replica
            answer = browser.post(f"{pair.origin}/oauth/authorize", data={**fields, "decision": "allow"},
                                  allow_redirects=False, timeout=10)
            assert answer.status_code == 503, answer.text
            assert "location" not in answer.headers
        for _ in range(2):
            token = requests.post(f"{pair.origin}/oauth/token", verify=str(pair.envoy.cert), timeout=10,
                                  data={"grant_type": "authorization_code", "code": "x" * 43,
                                        "code_verifier": verifier, "redirect_uri": REDIRECT,
                                        "client_id": client_id, "resource": f"{pair.origin}/grafana/mcp"})
            assert token.status_code == 503, token.text
            assert token.json()["error"] == "temporarily_unavailable"
    finally:
        pair.redis = pair.start_redis()
