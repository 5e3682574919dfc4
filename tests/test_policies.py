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

from stack import (ADA, BOB, DOMAIN, GRACE, MCP_VERSION, PLATFORM, SRE, Stack, demo_workspace, mcp_body, mcp_headers,
                   set_demo_groups, wait_until)

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
    return stack.standin.user_id_token(email)


def mcp(stack, path: str, token: str, action, statuses: list | None = None, handshake: str = "discover"):
    """Runs `action(session)` in an MCP session through Envoy, as a real client: MCP 2026-07-28
    (`discover`), or the legacy `initialize` handshake. The HTTP status of every response is
    appended to `statuses` (the SDK reports a refusal only as a generic error)."""

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
                    await getattr(session, handshake)()
                    return await action(session)

    return asyncio.run(run())


def tool_text(result) -> str:
    assert not result.is_error, result
    return result.content[0].text


def rpc(stack, path: str, token: str, method: str, params: dict | None = None, raw: str | None = None,
        headers: dict | None = None):
    """One JSON-RPC POST with the headers a streamable-HTTP client sends (the MCP filter parses
    only such requests); `headers` override them (None removes one)."""
    headers = {**mcp_headers(method, (params or {}).get("name")), **(headers or {})}
    headers = {name: value for name, value in headers.items() if value is not None}
    version = headers.get("mcp-protocol-version", "")
    body = raw if raw is not None else json.dumps(mcp_body(method, params, version=version))
    return stack.envoy.request(method="POST", path=path, token=token, data=body, headers=headers)


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
    # delete_* is sre@'s only: ada's list hides it (list filtering, tests/test_tool_filtering.py).
    assert {"list_dashboards", "whoami"} <= set(tools) and "delete_dashboard" not in tools
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
    current = {"mcp-protocol-version": MCP_VERSION, "mcp-method": "tools/call", "mcp-name": "delete_dashboard"}
    for headers in ({"content-type": "application/json", "accept": "application/json", **current},
                    {"content-type": "text/plain", "accept": "application/json, text/event-stream", **current}):
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


def delete_call(name: str = "delete_dashboard") -> dict:
    return {"name": name, "arguments": {"name": "x"}}


def json_rpc_error(response) -> dict:
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert "www-authenticate" not in response.headers
    return response.json()["error"]


def test_mcp_headers_that_disagree_with_the_body_are_refused_both_ways(stack):
    """MCP 2026-07-28 requests name their method and tool in Mcp-Method and Mcp-Name. authz
    decides on the body (as the upstream executes it) and refuses a request whose headers say
    otherwise, so neither can be used to slip a tool past a rule (GRACE may delete; the
    refusal is about the request, whoever sends it)."""
    for email in (ADA, GRACE):
        token = token_for(stack, email)
        cases = {
            "header lists, body deletes": {"mcp-method": "tools/list"},
            "header names a harmless tool": {"mcp-name": "list_dashboards"},
            "header calls, body lists": "tools/list",
            "the name header twice": {"mcp-name": "list_dashboards,delete_dashboard"},
            "no name header": {"mcp-name": None},
        }
        for case, change in cases.items():
            if change == "tools/list":
                response = rpc(stack, "/grafana/mcp", token, "tools/list",
                               headers={"mcp-method": "tools/call", "mcp-name": "delete_dashboard"})
            else:
                headers = mcp_headers("tools/call", "delete_dashboard")
                headers.update(change)
                headers = {k: v for k, v in headers.items() if v is not None}
                body = json.dumps(mcp_body("tools/call", delete_call()))
                response = stack.envoy.request(method="POST", path="/grafana/mcp", token=token, data=body,
                                               headers=headers)
            assert response.status_code == 400, (email, case, response.status_code, response.text)
            assert json_rpc_error(response)["code"] == -32020, (case, response.text)
            assert "deleted" not in response.text
            assert audit_for(stack, response)["reason"] == "mcp_headers_mismatch"
    # Agreeing headers: the rule decides (ADA refused, GRACE allowed).
    assert rpc(stack, "/grafana/mcp", token_for(stack, ADA), "tools/call", delete_call()).status_code == 403
    allowed = rpc(stack, "/grafana/mcp", token_for(stack, GRACE), "tools/call", delete_call())
    assert allowed.status_code == 200 and "deleted" in allowed.text, allowed.text


def leaves(error: BaseException):
    """The exceptions inside (nested) exception groups, as the SDK's task groups raise them."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from leaves(inner)
    else:
        yield error


def test_tool_rules_need_the_protocol_revision_whose_headers_are_checked(stack):
    """An older client (no Mcp-Method/Mcp-Name to check) gets a clear JSON-RPC error on a route
    whose policy has tool rules; routes without tool rules keep serving it."""
    token = token_for(stack, GRACE)
    for version in ("2025-11-25", "2025-06-18"):
        response = rpc(stack, "/grafana/mcp", token, "tools/list", headers=mcp_headers("tools/list", version=version))
        assert response.status_code == 400, response.text
        error = json_rpc_error(response)
        assert error["code"] == -32022 and error["data"] == {"supported": [MCP_VERSION], "requested": version}
        assert audit_for(stack, response)["reason"] == "mcp_protocol_too_old"
        legacy = rpc(stack, "/mcp", token, "tools/list", headers=mcp_headers("tools/list", version=version))
        assert legacy.status_code == 200, legacy.text
    # No version header at all, and a duplicated one.
    no_version = {"mcp-protocol-version": None}
    assert rpc(stack, "/grafana/mcp", token, "tools/list", headers=no_version).status_code == 400
    twice = rpc(stack, "/grafana/mcp", token, "tools/list",
                headers={"mcp-protocol-version": f"2025-11-25, {MCP_VERSION}"})
    assert twice.status_code == 400

    # The official SDK: its legacy handshake is refused with that error; its current
    # protocol works.
    async def legacy(session):
        return None

    with pytest.raises(Exception) as refused:
        mcp(stack, "/grafana/mcp", token, legacy, handshake="initialize")
    errors = list(leaves(refused.value))
    assert any(getattr(e, "code", None) == -32022 for e in errors), errors

    async def listed(session):
        return [tool.name for tool in (await session.list_tools()).tools]

    assert "delete_dashboard" in mcp(stack, "/grafana/mcp", token, listed)


def test_a_body_too_large_for_the_mcp_filter_is_not_classified(stack):
    """Past the MCP filter's body limit, its metadata describes only the start of the body (a
    later duplicate "name" would be what the upstream runs): authz refuses it where tool rules
    apply, and Envoy refuses duplicate keys outright."""
    token = token_for(stack, GRACE)
    padding = "x" * (1024 * 1024 + 1)
    raw = ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_dashboards",'
           f'"arguments":{{"pad":"{padding}"}},"name":"delete_dashboard"}}}}')
    response = rpc(stack, "/grafana/mcp", token, "tools/call", raw=raw,
                   headers={"mcp-name": "list_dashboards"})
    assert response.status_code in (400, 403, 413), response.status_code
    assert "deleted" not in response.text


def test_duplicate_name_keys_with_headers_naming_the_first_are_refused(stack):
    """The body names list_dashboards, then delete_dashboard (a last-wins upstream runs the
    second); the 2026-07-28 headers agree with the first. Whatever Envoy's MCP filter makes of
    it (the last name, as the upstream reads it: the headers disagree; or a duplicate-key
    status: unclassified), it is refused, and never with the first name allowed."""
    token = token_for(stack, ADA)
    raw = ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_dashboards",'
           '"name":"delete_dashboard","arguments":{"name":"x"},"_meta":{'
           f'"io.modelcontextprotocol/protocolVersion":"{MCP_VERSION}",'
           '"io.modelcontextprotocol/clientCapabilities":{}}}}')
    response = rpc(stack, "/grafana/mcp", token, "tools/call", raw=raw, headers={"mcp-name": "list_dashboards"})
    assert response.status_code in (400, 403), response.text
    assert audit_for(stack, response)["reason"] in ("mcp_headers_mismatch", "mcp_metadata_missing")
    assert "deleted" not in response.text


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
