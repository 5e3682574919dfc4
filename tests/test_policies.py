"""End to end: per-route and per-tool policies with Google group membership.

A real Envoy (MCP filter before ext_authz) in front of the demo MCP server (official Python SDK,
streamable HTTP), driven by the official Python MCP client with a bearer token. Group membership
comes from the Directory API of the Google stand-in, called with a service-account key and
domain-wide delegation, as in production.

Groups: platform@ = {ada, sre@ (nested)}; sre@ = {grace}. So ada is platform only, grace is
platform (through sre@) and sre, bob is neither.

Policies (authz config below):
  /grafana/...  -> policy `grafana` by authz's own [[routes]]: platform@ may use it, and the
                   `destructive` rule lets only sre@ call delete_* tools.
  /sre/...      -> policy `sre` named by Envoy's route (context_extensions): sre@ only.
"""

import asyncio
import json
import ssl
import time

import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from stack import ADA, BOB, DOMAIN, GRACE, PLATFORM, SRE, Stack, demo_workspace, set_demo_groups, wait_until

# Short lifetimes so that changes and outages play out within a test.
POSITIVE_TTL, ALLOW_TTL, STALE_BOUND = 2, 1, 4
TIMINGS = {"positive_ttl": f"{POSITIVE_TTL}s", "negative_ttl": f"{POSITIVE_TTL}s", "refresh_ahead": "0s",
           "stale_bound": f"{STALE_BOUND}s", "request_timeout": "300ms",
           "backoff_initial": "200ms", "backoff_max": "1s"}


def setup_google(workdir):
    return demo_workspace(workdir, TIMINGS)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("policies")
    s = Stack(workdir, upstream="mcp", before_authz=setup_google(workdir),
              allow_ttl=f"{ALLOW_TTL}s", deny_ttl="1s")
    yield s
    s.close()


def token_for(stack, email: str) -> str:
    return stack.standin.id_token(email=email, sub=str(abs(hash(email)) % 10**12))


def mcp(stack, path: str, token: str, action, statuses: list | None = None):
    """Runs `action(session)` in an initialized MCP session through Envoy, as a real client.
    The HTTP status of every response is appended to `statuses` (the SDK reports a refusal
    only as a generic error)."""

    async def record(response):
        if statuses is not None:
            statuses.append(response.status_code)

    async def run():
        tls = ssl.create_default_context(cafile=str(stack.envoy.cert))
        headers = {"authorization": f"Bearer {token}"}
        async with httpx2.AsyncClient(headers=headers, verify=tls, timeout=10,
                                      event_hooks={"response": [record]}) as http:
            async with streamable_http_client(f"{stack.envoy.url}{path}", http_client=http) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    return await action(session)

    return asyncio.run(run())


def tool_text(result) -> str:
    assert not result.is_error, result
    return result.content[0].text


def rpc(stack, path: str, token: str, method: str, params: dict | None = None, raw: str | None = None):
    """One JSON-RPC POST with the headers a streamable-HTTP client sends (the MCP filter parses
    only such requests)."""
    body = raw if raw is not None else json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}})
    return stack.envoy.request(
        method="POST", path=path, token=token, data=body,
        headers={"content-type": "application/json",
                 "accept": "application/json, text/event-stream",
                 "mcp-protocol-version": "2025-06-18"})


def audit_for(stack, response) -> dict:
    request_id = response.headers["x-request-id"]
    return wait_until(
        lambda: next((e for e in stack.authz.audit_events() if e.get("request_id") == request_id), None),
        timeout=5, what=f"audit event {request_id}")


def test_a_member_lists_tools_and_calls_an_allowed_tool(stack):
    async def action(session):
        tools = [t.name for t in (await session.list_tools()).tools]
        dashboards = await session.call_tool("list_dashboards", {})
        who = await session.call_tool("whoami", {})
        return tools, dashboards, who

    tools, dashboards, who = mcp(stack, "/grafana/mcp", token_for(stack, ADA), action)
    assert {"list_dashboards", "delete_dashboard", "whoami"} <= set(tools)
    assert "latency" in tool_text(dashboards)
    seen = json.loads(tool_text(who))
    assert seen["x-auth-request-email"] == ADA
    assert seen["authorization"] is None


def test_a_user_outside_the_group_gets_a_plain_403(stack):
    token = token_for(stack, BOB)
    statuses = []
    with pytest.raises(BaseException):
        mcp(stack, "/grafana/mcp", token, lambda session: session.list_tools(), statuses)
    assert statuses == [403], statuses

    response = rpc(stack, "/grafana/mcp", token, "tools/list")
    assert response.status_code == 403
    # A plain 403: no insufficient_scope challenge, which MCP clients answer with a new sign-in
    # that cannot help (no consent grants a group).
    assert "www-authenticate" not in response.headers
    body = response.json()
    assert body["error"] == "access_denied"
    assert body["policy"] == "grafana"
    assert "@" not in response.text, "the body must not name groups"
    event = audit_for(stack, response)
    assert (event["policy"], event["rule"], event["reason"]) == ("grafana", "policy", "not_in_groups")


def test_a_tool_rule_denies_one_tool_and_allows_another_for_the_same_user(stack):
    token = token_for(stack, ADA)

    async def action(session):
        allowed = await session.call_tool("list_dashboards", {})
        try:
            await session.call_tool("delete_dashboard", {"name": "latency"})
        except BaseException as error:  # noqa: BLE001 - the SDK surfaces the 403 as an error
            return allowed, error
        return allowed, None

    statuses = []
    allowed, refused = mcp(stack, "/grafana/mcp", token, action, statuses)
    assert "latency" in tool_text(allowed)
    assert refused is not None, "delete_dashboard must be refused for a non-SRE"
    assert 403 in statuses and statuses.count(403) == 1, statuses

    response = rpc(stack, "/grafana/mcp", token, "tools/call", {"name": "delete_dashboard", "arguments": {"name": "x"}})
    assert response.status_code == 403
    assert "www-authenticate" not in response.headers and response.json()["error"] == "access_denied"
    event = audit_for(stack, response)
    assert (event["policy"], event["rule"], event["reason"]) == ("grafana", "destructive", "not_in_groups")

    # An SRE (platform through the nested sre@ group) may delete; the audit names the group.
    sre_token = token_for(stack, GRACE)
    result = mcp(stack, "/grafana/mcp", sre_token,
                 lambda session: session.call_tool("delete_dashboard", {"name": "latency"}))
    assert tool_text(result) == "deleted latency"
    response = rpc(stack, "/grafana/mcp", sre_token, "tools/call", {"name": "delete_dashboard", "arguments": {"name": "x"}})
    assert response.status_code == 200, response.text
    event = audit_for(stack, response)
    assert (event["decision"], event["rule"], event["group"]) == ("allow", "destructive", SRE)


def test_a_cached_allow_for_one_tool_never_answers_another(stack):
    token = token_for(stack, ADA)
    for _ in range(3):
        assert rpc(stack, "/grafana/mcp", token, "tools/call", {"name": "list_dashboards", "arguments": {}}).status_code == 200
    # Same token, same route, moments later: a different tool is judged on its own.
    assert rpc(stack, "/grafana/mcp", token, "tools/call", {"name": "delete_dashboard", "arguments": {"name": "x"}}).status_code == 403
    # And a different route with the same token: Envoy names policy `sre`, which ada fails.
    assert rpc(stack, "/sre/mcp", token, "tools/list").status_code == 403


def test_envoy_route_names_the_policy(stack):
    response = rpc(stack, "/sre/mcp", token_for(stack, ADA), "tools/list")
    assert response.status_code == 403
    assert response.json()["policy"] == "sre"
    tools = mcp(stack, "/sre/mcp", token_for(stack, GRACE), lambda session: session.list_tools())
    assert "whoami" in [t.name for t in tools.tools]


def test_a_post_the_mcp_filter_cannot_classify_is_refused_where_rules_apply(stack):
    """Envoy's MCP filter parses only POSTs that look like streamable HTTP (JSON content type,
    an Accept naming both JSON and SSE). Anything else reaches authz without a method; where a
    policy has tool rules, that is refused rather than waved through."""
    token = token_for(stack, ADA)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "delete_dashboard", "arguments": {"name": "x"}}})
    for headers in ({"content-type": "application/json", "accept": "application/json"},
                    {"content-type": "text/plain", "accept": "application/json, text/event-stream"}):
        response = stack.envoy.request(method="POST", path="/grafana/mcp", token=token,
                                       data=body, headers=headers)
        assert response.status_code == 403, (headers, response.text)
        event = audit_for(stack, response)
        assert (event["rule"], event["reason"]) == ("policy", "mcp_metadata_missing"), event
    # A JSON-RPC batch is not something the filter classifies either.
    response = rpc(stack, "/grafana/mcp", token, "", raw=f"[{body}]")
    assert response.status_code == 403
    assert audit_for(stack, response)["reason"] == "mcp_metadata_missing"


def test_duplicate_json_keys_cannot_smuggle_a_tool_past_the_rule(stack):
    """JSON parsers disagree on duplicate keys (first wins vs last wins). Whatever Envoy's MCP
    filter makes of this body, it must not let a non-SRE run delete_dashboard."""
    token = token_for(stack, ADA)
    raw = ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_dashboards",'
           '"name":"delete_dashboard","arguments":{"name":"x"}}}')
    response = rpc(stack, "/grafana/mcp", token, "tools/call", raw=raw)
    assert "deleted" not in response.text, response.text
    # The name after the arguments object, where a streaming parser might have stopped early.
    raw = ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":'
           '{"name":"list_dashboards"},"name":"delete_dashboard"}}')
    response = rpc(stack, "/grafana/mcp", token, "tools/call", raw=raw)
    assert "deleted" not in response.text, response.text
    raw = ('{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call",'
           '"params":{"name":"delete_dashboard","arguments":{"name":"x"}}}')
    response = rpc(stack, "/grafana/mcp", token, "tools/call", raw=raw)
    assert "deleted" not in response.text, response.text


def test_removing_a_user_from_the_group_takes_effect_within_the_ttl(stack):
    token = token_for(stack, ADA)
    assert rpc(stack, "/grafana/mcp", token, "tools/list").status_code == 200
    stack.standin.group(PLATFORM, [SRE])
    removed = time.monotonic()
    try:
        wait_until(lambda: rpc(stack, "/grafana/mcp", token, "tools/list").status_code == 403,
                   timeout=POSITIVE_TTL + ALLOW_TTL + 5, what="removal to take effect")
        assert time.monotonic() - removed <= POSITIVE_TTL + ALLOW_TTL + 2
    finally:
        set_demo_groups(stack.standin)


def test_google_outage_within_and_beyond_the_stale_bound(stack):
    token = token_for(stack, GRACE)
    assert rpc(stack, "/sre/mcp", token, "tools/list").status_code == 200
    stack.standin.fault("error", status=503, endpoints=["directory", "token"])
    try:
        # Past the membership TTL but within the stale bound: the known answer still serves.
        time.sleep(POSITIVE_TTL + ALLOW_TTL + 0.2)
        response = rpc(stack, "/sre/mcp", token, "tools/list")
        assert response.status_code == 200, response.text
        assert audit_for(stack, response)["cache"] == "bypass", "a stale answer is not cached"
        # A user never seen before has no known answer: 503, never 401 or 403.
        unknown = rpc(stack, "/sre/mcp", token_for(stack, f"newcomer@{DOMAIN}"), "tools/list")
        assert unknown.status_code == 503
        # Beyond the bound: 503.
        time.sleep(STALE_BOUND)
        late = rpc(stack, "/sre/mcp", token, "tools/list")
        assert late.status_code == 503, late.text
    finally:
        stack.standin.fault("ok")
    wait_until(lambda: rpc(stack, "/sre/mcp", token, "tools/list").status_code == 200,
               timeout=10, what="recovery after the outage")


def test_group_lookups_are_cached_and_credentials_fetched_once(stack):
    stack.standin.reset_stats()
    tokens = [token_for(stack, email) for email in (ADA, GRACE, BOB)]
    for _ in range(10):
        for token in tokens:
            rpc(stack, "/grafana/mcp", token, "tools/list")
    stats = stack.standin.stats()
    # At most one lookup per (user, group) pair within the TTL: 3 users x 2 groups, twice if
    # the TTL rolled over during the loop.
    assert stats["directory_has_member"] <= 12, stats
    assert stats["token"] <= 1, stats
