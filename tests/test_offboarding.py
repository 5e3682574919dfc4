"""End to end: off-boarding holds on every replica, and reaches Google itself.

Two authz replicas behind Envoy (round robin, so consecutive requests alternate between them)
share a real Redis. The official MCP client signs a user in through the facade; then the user's
Google account is suspended, deleted or turned into a consumer account at the Google stand-in,
or an operator off-boards her through the admin API of one replica, or Redis goes away.
"""

import asyncio
import json
import time

import httpx2
import pytest
import requests
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from stack import ADA, DOMAIN, PLATFORM, SRE, mcp_body, mcp_headers, set_demo_groups, wait_until
from test_oauth import ACCESS_TTL, REDIRECT, OAuthStack, OfficialClient

ALLOW_TTL = 2


def sdk_sign_in(stack: OAuthStack) -> tuple:
    """The official client signs in and calls a tool; returns its token storage and client id."""
    client = OfficialClient(stack, "off-boarding test")
    storage, sign_ins, provider, tls = client.storage, client.sign_ins, client.provider, client.tls

    async def whoami():
        async with httpx2.AsyncClient(auth=provider, verify=tls, timeout=20) as http:
            async with streamable_http_client(stack.resource, http_client=http) as streams:
                async with ClientSession(streams[0], streams[1]) as mcp:
                    await mcp.discover()
                    who = await mcp.call_tool("whoami", {})
                    return json.loads(who.content[0].text)

    assert asyncio.run(whoami())["x-auth-request-email"] == ADA
    assert len(sign_ins) == 1
    return storage, storage.client_info.client_id


def statuses(stack: OAuthStack, token: str, n: int = 4) -> list[int]:
    """`n` consecutive requests: with round robin, each replica answers half of them."""
    return [stack.mcp_status(token) for _ in range(n)]


def refresh(stack: OAuthStack, refresh_token: str, client_id: str) -> requests.Response:
    return stack.token(grant_type="refresh_token", refresh_token=refresh_token, client_id=client_id)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two replicas on one Redis; the default policy admits any account of the domain, so only
    Google can tell that an account is gone."""
    stack = OAuthStack(tmp_path_factory.mktemp("offboarding"), replicas=2, groups=False,
                       allow_ttl=f"{ALLOW_TTL}s")
    yield stack
    stack.close()


def restore_ada(stack: OAuthStack) -> None:
    stack.standin.add_user(ADA, hd=DOMAIN)


@pytest.mark.parametrize("change", ["suspended", "deleted", "consumer"])
def test_an_account_google_no_longer_vouches_for_cannot_refresh_and_its_tokens_stop(pair, change):
    storage, client_id = sdk_sign_in(pair)
    sub = pair.standin.add_user(ADA, hd=DOMAIN)
    google_token = pair.standin.access_token(sub=sub, email=ADA)
    assert statuses(pair, google_token) == [200] * 4
    assert statuses(pair, storage.tokens.access_token) == [200] * 4
    changed_at = time.monotonic()
    try:
        if change == "suspended":
            pair.standin.add_user(ADA, hd=DOMAIN, suspended=True)
        elif change == "deleted":
            pair.standin.delete_user(ADA)
        else:
            pair.standin.add_user(ADA)  # no hd: a consumer account with the company's email
        answer = refresh(pair, storage.tokens.refresh_token, client_id)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == "invalid_grant"
        why = answer.json()["error_description"]
        assert ("Workspace" if change == "consumer" else "suspended or deleted") in why, why
        # The session is over, not just this refresh: reinstated, she still must sign in.
        restore_ada(pair)
        assert refresh(pair, storage.tokens.refresh_token, client_id).status_code == 400
        if change != "consumer":
            pair.standin.add_user(ADA, hd=DOMAIN, suspended=True)
        # The session's live access token dies on both replicas within its lifetime; Google's
        # token of a suspended or deleted account within allow_ttl.
        wait_until(lambda: statuses(pair, storage.tokens.access_token) == [401] * 4,
                   timeout=ACCESS_TTL + 2, what="the session's access token refused")
        assert time.monotonic() - changed_at <= ACCESS_TTL + 2
        if change != "consumer":
            wait_until(lambda: statuses(pair, google_token) == [401] * 4,
                       timeout=ALLOW_TTL + 2, what="Google's access token refused")
            assert time.monotonic() - changed_at <= ACCESS_TTL + ALLOW_TTL + 2
    finally:
        restore_ada(pair)


def test_a_google_outage_during_refresh_is_a_503_and_keeps_the_session(pair):
    storage, client_id = sdk_sign_in(pair)
    pair.standin.fault("error", status=503, endpoints=["token"])
    try:
        for _ in range(2):
            answer = refresh(pair, storage.tokens.refresh_token, client_id)
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"] == "temporarily_unavailable"
    finally:
        pair.standin.fault("ok")
    answer = refresh(pair, storage.tokens.refresh_token, client_id)
    assert answer.status_code == 200, answer.text
    assert statuses(pair, answer.json()["access_token"]) == [200] * 4


@pytest.fixture(scope="module")
def pair_with_groups(tmp_path_factory):
    """Two replicas on one Redis, the default policy requiring platform@, memberships cached
    for minutes: only an invalidation can end a cached allow early."""
    stack = OAuthStack(tmp_path_factory.mktemp("invalidation"), replicas=2, membership_ttl="10m")
    yield stack
    stack.close()


def test_off_boarding_on_one_replica_denies_on_the_other_within_the_poll(pair_with_groups):
    stack = pair_with_groups
    storage, client_id = sdk_sign_in(stack)
    google_token = stack.standin.id_token(email=ADA, sub="1" + "7" * 20)
    # Allowed and cached on both replicas (Google's token and ours).
    for token in (google_token, storage.tokens.access_token):
        assert statuses(stack, token) == [200] * 4
    stack.standin.group(PLATFORM, [SRE])  # ada leaves platform@ at Google
    try:
        # Cached verdicts and memberships keep answering until someone invalidates her.
        assert statuses(stack, google_token) == [200] * 4
        result = stack.authz[0].admin("invalidate-user", ADA)
        assert result.returncode == 0, result.stderr
        invalidated_at = time.monotonic()
        # Within the poll (200 ms) and the time a request takes: both replicas refuse.
        wait_until(lambda: statuses(stack, google_token) == [403] * 4, timeout=3,
                   what="Google's token refused on both replicas")
        assert time.monotonic() - invalidated_at < 2
        assert statuses(stack, storage.tokens.access_token) == [401] * 4
        assert refresh(stack, storage.tokens.refresh_token, client_id).status_code == 400
        logs = stack.authz[1].process.log()
        assert "user invalidated on another replica" in logs
    finally:
        set_demo_groups(stack.standin)
        # Back in the group: forget the cached "not a member" everywhere.
        stack.authz[0].admin("invalidate-user", ADA)
        time.sleep(0.5)


def test_a_code_issued_before_off_boarding_starts_no_session(pair_with_groups):
    stack = pair_with_groups
    client_id = stack.register()
    verifier = "v" * 50
    code = stack.code_for(client_id, verifier)
    result = stack.authz[1].admin("invalidate-user", ADA)
    assert result.returncode == 0, result.stderr
    answer = stack.token(grant_type="authorization_code", code=code, code_verifier=verifier,
                         redirect_uri=REDIRECT, client_id=client_id, resource=stack.resource)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant", answer.text


def metric(stack: OAuthStack, replica: int, name: str) -> str:
    text = requests.get(f"http://127.0.0.1:{stack.authz[replica].http_port}/metrics", timeout=5).text
    return next((line for line in text.splitlines() if line.startswith(name)), "")


def test_a_replica_cut_off_from_redis_refuses_our_tokens_then_recovers(tmp_path):
    stack = OAuthStack(tmp_path, replicas=2, groups=False)
    try:
        storage, _ = sdk_sign_in(stack)
        ours = storage.tokens.access_token
        google_token = stack.standin.id_token(email=ADA)
        assert statuses(stack, ours) == [200] * 4
        stack.redis.stop()
        cut_at = time.monotonic()
        # Within three polls (at least 3 s): a 503 on both replicas, never an allow.
        wait_until(lambda: statuses(stack, ours) == [503] * 4, timeout=8,
                   what="our tokens refused while the revocations cannot be read")
        assert time.monotonic() - cut_at < 6
        wait_until(lambda: metric(stack, 0, "authz_revocations_in_sync") == "authz_revocations_in_sync 0",
                   timeout=3, what="the metric says the copy is stale")
        wait_until(lambda: all("stale or overflowing" in a.process.log() for a in stack.authz),
                   timeout=3, what="a log line on each replica")
        # Google's tokens do not depend on our store.
        assert statuses(stack, google_token) == [200] * 4
        stack.redis = stack.start_redis()
        wait_until(lambda: statuses(stack, ours) == [200] * 4, timeout=15,
                   what="our tokens accepted again once Redis is back")
        wait_until(lambda: metric(stack, 1, "authz_revocations_in_sync") == "authz_revocations_in_sync 1",
                   timeout=3, what="the metric says the copy is current")
    finally:
        stack.close()


def test_when_google_will_not_take_our_refresh_request_the_access_token_checks_the_account(pair):
    """Google refuses our refresh request for a reason that is not about the user (a 400 that
    is not invalid_grant: our client, not her account): the account is checked with Google's
    latest access token instead, while it lives, and a suspension still ends the session."""
    storage, client_id = sdk_sign_in(pair)
    pair.standin.fault("error", status=400, endpoints=["token"])
    try:
        answer = refresh(pair, storage.tokens.refresh_token, client_id)
        assert answer.status_code == 200, answer.text
        pair.standin.add_user(ADA, hd=DOMAIN, suspended=True)
        refused = refresh(pair, answer.json()["refresh_token"], client_id)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant", refused.text
    finally:
        pair.standin.fault("ok")
        restore_ada(pair)


@pytest.fixture(scope="module")
def tool_rule(tmp_path_factory):
    """One replica whose default policy refuses delete_* tools to everybody."""
    rule = ('[[policies.default.rules]]\nname = "destructive"\nmethods = ["tools/call"]\n'
            'tools = ["delete_*"]\ndeny = true\n')
    stack = OAuthStack(tmp_path_factory.mktemp("tool-rule"), policy_extra=rule)
    yield stack
    stack.close()


def test_a_refused_tool_call_is_an_error_not_a_new_sign_in(tool_rule):
    """A 403 that no consent could fix carries no insufficient_scope challenge, so the official
    client reports the refusal instead of sending the user back to the browser (MCP 2026-07-28,
    scope challenge handling)."""
    stack = tool_rule
    client = OfficialClient(stack, "tool rule test")
    storage, sign_ins, provider, tls = client.storage, client.sign_ins, client.provider, client.tls
    statuses = []

    async def record(response):
        statuses.append(response.status_code)

    async def session():
        async with httpx2.AsyncClient(auth=provider, verify=tls, timeout=20,
                                      event_hooks={"response": [record]}) as http:
            async with streamable_http_client(stack.resource, http_client=http) as streams:
                async with ClientSession(streams[0], streams[1]) as mcp:
                    await mcp.discover()
                    allowed = await mcp.call_tool("whoami", {})
                    try:
                        refused = await mcp.call_tool("delete_dashboard", {"name": "x"})
                    except Exception as error:  # the SDK may raise instead of returning an error result
                        refused = error
                    return allowed, refused

    allowed, refused = asyncio.run(session())
    assert not allowed.is_error
    assert 403 in statuses, statuses
    assert isinstance(refused, Exception) or refused.is_error, refused
    assert len(sign_ins) == 1, "the refusal sent the user back to sign in"
    body = stack.envoy.request("POST", "/mcp", token=storage.tokens.access_token, json=mcp_body(
        "tools/call", {"name": "delete_dashboard", "arguments": {}}),
        headers=mcp_headers("tools/call", "delete_dashboard"))
    assert body.status_code == 403 and "www-authenticate" not in body.headers
    assert body.json()["error"] == "access_denied" and body.json()["policy"] == "default"
