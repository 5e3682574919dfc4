"""End to end: users see only the tools they may call (Envoy's ext_proc filter -> authz).

A real Envoy (envoy/local.yaml: MCP filter, ext_authz, ext_proc) in front of demo MCP servers
(official Python SDK), listed by the official Python client. Groups and policies are the demo
Workspace's (tests/stack.py): on /grafana/ everyone in platform@ may come in and only sre@ may
call delete_*; /sre/ is sre@ only and has no rules. ada is platform only, grace is platform
and sre.

One authz serves several Envoys, each in front of another upstream: the demo server answering
JSON, the same answering SSE, a paginated one, an echo server (whose answers are not MCP), and
one Envoy whose ext_proc cluster points at a dead port (the outage).
"""

import asyncio
import json
import pathlib
import ssl

import httpx2
import pytest
import requests
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_types import PaginatedRequestParams

from stack import (ADA, GRACE, ROOT, EchoUpstream, Envoy, McpUpstream, Stack, demo_workspace, free_port, mcp_body,
                   mcp_headers)

EVERY_TOOL = {"list_dashboards", "delete_dashboard", "whoami"}
SAFE_TOOLS = {"list_dashboards", "whoami"}


def outage_template(workdir: pathlib.Path) -> pathlib.Path:
    """envoy/local.yaml with the ext_proc filter pointed at a cluster nobody listens on, while
    ext_authz keeps its own: authz's ext_proc is out, its Check is not."""
    text = (ROOT / "envoy" / "local.yaml").read_text()
    at = text.index("name: envoy.filters.http.ext_proc")
    at = text.index("cluster_name: authz_grpc", at)
    text = text[:at] + "cluster_name: dead_ext_proc" + text[at + len("cluster_name: authz_grpc"):]
    text += f"""
  - name: dead_ext_proc
    type: STATIC
    connect_timeout: 0.25s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: dead_ext_proc
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {free_port()} }} }} }}
"""
    path = workdir / "outage-template.yaml"
    path.write_text(text)
    return path


class Stacks:
    def __init__(self, workdir: pathlib.Path):
        self.extra = []
        self.base = Stack(workdir, upstream="mcp", before_authz=demo_workspace(workdir))
        try:
            self.json = self.base.envoy
            self.sse = self._envoy(workdir, "sse", McpUpstream(workdir, ("--sse",), "mcp-sse"))
            self.paged = self._envoy(workdir, "paged", McpUpstream(workdir, ("--page-size", "2"), "mcp-paged"))
            self.echo = self._envoy(workdir, "echo", EchoUpstream())
            self.outage = self._envoy(workdir, "outage", self.base.upstream,
                                      template=outage_template(workdir))
        except BaseException:
            self.close()
            raise

    def _envoy(self, workdir, name, upstream, template=None) -> Envoy:
        if upstream is not self.base.upstream:
            self.extra.append(upstream)
        directory = workdir / name
        directory.mkdir()
        kwargs = {"template": template} if template else {}
        envoy = Envoy(directory, self.base.authz, upstream.port, **kwargs)
        self.extra.append(envoy)
        return envoy

    def close(self):
        for thing in reversed(self.extra):
            if isinstance(thing, Envoy):
                thing.process.stop()
            else:
                thing.close()
        self.base.close()


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    s = Stacks(tmp_path_factory.mktemp("filtering"))
    yield s
    s.close()


def token_for(stacks, email: str) -> str:
    return stacks.base.standin.user_id_token(email)


def session(envoy: Envoy, path: str, token: str, action):
    """Runs `action(session)` as the official client does (MCP 2026-07-28, `discover`)."""

    async def run():
        tls = ssl.create_default_context(cafile=str(envoy.cert))
        async with httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, verify=tls,
                                      timeout=10) as http:
            async with streamable_http_client(f"{envoy.url}{path}", http_client=http) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.discover()
                    return await action(session)

    return asyncio.run(run())


async def all_tools(session) -> list[str]:
    names, cursor = [], None
    while True:
        params = PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        names += [tool.name for tool in page.tools]
        cursor = page.next_cursor
        if not cursor:
            return names


def rpc(envoy: Envoy, path: str, token: str, method: str, params: dict | None = None) -> requests.Response:
    headers = mcp_headers(method, (params or {}).get("name") or (params or {}).get("uri"))
    return envoy.request("POST", path, token=token, headers=headers, data=json.dumps(mcp_body(method, params)))


def ext_proc_streams(envoy: Envoy) -> int:
    stats = envoy.admin("/stats?filter=ext_proc.streams_started")
    return sum(int(line.rsplit(":", 1)[1]) for line in stats.splitlines() if line.strip())


def authz_metric(stacks, line_start: str) -> float:
    text = requests.get(f"http://127.0.0.1:{stacks.base.authz.http_port}/metrics", timeout=2).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


def test_two_users_see_exactly_the_tools_each_may_call(stacks):
    for envoy in (stacks.json, stacks.sse):
        ada = session(envoy, "/grafana/mcp", token_for(stacks, ADA), all_tools)
        grace = session(envoy, "/grafana/mcp", token_for(stacks, GRACE), all_tools)
        assert sorted(ada) == sorted(SAFE_TOOLS), envoy.url
        assert sorted(grace) == sorted(EVERY_TOOL), envoy.url


def test_hiding_is_hygiene_the_check_still_refuses_the_call(stacks):
    response = rpc(stacks.json, "/grafana/mcp", token_for(stacks, ADA), "tools/call",
                   {"name": "delete_dashboard", "arguments": {"name": "latency"}})
    assert response.status_code == 403


def test_the_json_envelope_is_kept(stacks):
    response = rpc(stacks.json, "/grafana/mcp", token_for(stacks, ADA), "tools/list")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    body = response.json()
    assert (body["jsonrpc"], body["id"]) == ("2.0", 1)
    assert {t["name"] for t in body["result"]["tools"]} == SAFE_TOOLS
    assert body["result"]["resultType"] == "complete"


def test_the_sse_form_keeps_its_other_events(stacks):
    response = rpc(stacks.sse, "/grafana/mcp", token_for(stacks, ADA), "tools/list")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [e for e in response.text.replace("\r\n", "\n").split("\n\n") if e.strip()]
    data = [json.loads("\n".join(line[len("data: "):] for line in e.splitlines() if line.startswith("data: ")))
            for e in events]
    # The server's notification before the result passes as it was.
    assert data[0]["method"] == "notifications/message"
    assert {t["name"] for t in data[-1]["result"]["tools"]} == SAFE_TOOLS
    assert all(e.startswith("event: message\n") for e in events)


def test_pagination_cursors_pass_and_every_page_is_filtered(stacks):
    token = token_for(stacks, ADA)
    first = rpc(stacks.paged, "/grafana/mcp", token, "tools/list").json()["result"]
    # Page 1 was [list_dashboards, delete_dashboard]: one left, the cursor untouched.
    assert [t["name"] for t in first["tools"]] == ["list_dashboards"]
    assert first["nextCursor"] == "2"
    second = rpc(stacks.paged, "/grafana/mcp", token, "tools/list", {"cursor": "2"}).json()["result"]
    assert [t["name"] for t in second["tools"]] == ["whoami"]
    assert "nextCursor" not in second
    assert sorted(session(stacks.paged, "/grafana/mcp", token, all_tools)) == sorted(SAFE_TOOLS)
    assert sorted(session(stacks.paged, "/grafana/mcp", token_for(stacks, GRACE), all_tools)) == sorted(EVERY_TOOL)


def direct(stacks, method: str, params: dict | None = None) -> bytes:
    """The demo server's own answer, without Envoy."""
    headers = mcp_headers(method, (params or {}).get("name"))
    response = requests.post(f"http://127.0.0.1:{stacks.base.upstream.port}/mcp", headers=headers,
                             data=json.dumps(mcp_body(method, params)), timeout=5)
    return response.content


def test_lists_without_rules_pass_byte_for_byte_without_ext_proc(stacks):
    before = ext_proc_streams(stacks.json)
    # grafana has no rule about prompts/get or resources/read; sre has no rules at all.
    for path, email, method in [("/grafana/mcp", ADA, "prompts/list"), ("/grafana/mcp", ADA, "resources/list"),
                                ("/grafana/mcp", ADA, "resources/templates/list"), ("/sre/mcp", GRACE, "tools/list")]:
        response = rpc(stacks.json, path, token_for(stacks, email), method)
        assert response.status_code == 200, (path, method, response.text)
        assert response.content == direct(stacks, method), (path, method)
    assert ext_proc_streams(stacks.json) == before


def test_other_requests_never_reach_ext_proc(stacks):
    token = token_for(stacks, ADA)
    before = ext_proc_streams(stacks.json)
    for _ in range(3):
        response = rpc(stacks.json, "/grafana/mcp", token, "tools/call", {"name": "whoami", "arguments": {}})
        assert response.status_code == 200
    assert rpc(stacks.json, "/grafana/mcp", token, "prompts/get",
               {"name": "summarize_dashboard", "arguments": {"name": "x"}}).status_code == 200
    assert ext_proc_streams(stacks.json) == before
    rpc(stacks.json, "/grafana/mcp", token, "tools/list")
    assert ext_proc_streams(stacks.json) == before + 1


def test_an_answer_authz_cannot_read_is_refused_where_rules_apply(stacks):
    metric = 'authz_list_filtering_total{method="tools/list",outcome="refused_unparseable"}'
    before = authz_metric(stacks, metric)
    # The echo server answers a 200 application/json that is not a JSON-RPC response.
    response = rpc(stacks.echo, "/grafana/mcp", token_for(stacks, ADA), "tools/list")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == -32603
    assert "tools/list" not in response.text, "the unread answer is not passed on"
    assert authz_metric(stacks, metric) == before + 1
    # Where no rules apply, the same answer passes as it was.
    response = rpc(stacks.echo, "/sre/mcp", token_for(stacks, GRACE), "tools/list")
    assert response.status_code == 200
    assert json.loads(response.json()["body"])["method"] == "tools/list"


def test_an_ext_proc_outage_fails_closed_for_lists_with_rules_only(stacks):
    envoy = stacks.outage
    ada, grace = token_for(stacks, ADA), token_for(stacks, GRACE)
    response = rpc(envoy, "/grafana/mcp", ada, "tools/list")
    assert response.status_code == 503
    assert "delete_dashboard" not in response.text
    # Everything else is untouched: calls, and lists the policy has no rules about.
    call = rpc(envoy, "/grafana/mcp", ada, "tools/call", {"name": "whoami", "arguments": {}})
    assert call.status_code == 200
    assert rpc(envoy, "/grafana/mcp", ada, "prompts/list").status_code == 200
    assert rpc(envoy, "/sre/mcp", grace, "tools/list").status_code == 200


def test_a_group_lookup_outage_while_filtering_is_a_503_never_the_whole_list(stacks):
    """Ada is admitted by platform@ (looked up by a call first), but whether she may see
    delete_* rests on sre@, which Google's Directory API cannot answer now: the list is
    refused with a 503, not passed whole and not emptied."""
    result = stacks.base.authz.admin("invalidate-user", ADA)
    assert result.returncode == 0, result.stderr
    ada = token_for(stacks, ADA)
    call = rpc(stacks.json, "/grafana/mcp", ada, "tools/call", {"name": "whoami", "arguments": {}})
    assert call.status_code == 200, call.text
    metric = 'authz_list_filtering_total{method="tools/list",outcome="unavailable"}'
    before = authz_metric(stacks, metric)
    stacks.base.standin.fault("error", status=503, endpoints=["directory"])
    try:
        response = rpc(stacks.json, "/grafana/mcp", ada, "tools/list")
        assert response.status_code == 503, response.text
        assert "delete_dashboard" not in response.text and "list_dashboards" not in response.text
        assert authz_metric(stacks, metric) == before + 1
    finally:
        stacks.base.standin.fault("ok")
    listed = session(stacks.json, "/grafana/mcp", ada, all_tools)
    assert sorted(listed) == sorted(SAFE_TOOLS)
