"""End to end: several MCP servers behind one endpoint (envoy/aggregated.yaml, Envoy's MCP router).

Two demo MCP servers (official Python SDK) are the router's backends `grafana` (the demo tools)
and `sre` (the same, plus `get_panel_000` and `delete_panel_001`, and `request_headers`). The
router shows them as one server whose names carry the backend (`sre__whoami`); authz's policy
`mcp` is written on those names: only sre@ may call anything of the `sre` backend, and only sre@
may call a `delete_*` tool of any backend. ada is platform only, grace is platform and sre.

What Envoy 1.40.0's router does not do yet (MCP 2026-07-28's `server/discover`, the list result
fields of that revision) is pinned at the end: the official SDK cannot open a session through it,
so these requests are sent as that client sends them, one by one.
"""

import json
import pathlib
import string

import pytest
import requests
import yaml

from stack import (ADA, GRACE, ROOT, AggregatedEnvoy, Authz, McpUpstream, StandIn, demo_workspace, mcp_body,
                   mcp_headers, sub_of)

# Per-backend policy: rules on the router's prefixed names.
POLICY = """
[policies.mcp]
[[policies.mcp.rules]]
name = "sre-backend"
methods = ["tools/call", "prompts/get", "resources/read"]
tools = ["sre__*"]
prompts = ["sre__*"]
resources = ["sre+*"]
groups = ["sre@example.com"]

[[policies.mcp.rules]]
name = "destructive"
methods = ["tools/call"]
tools = ["*__delete_*"]
groups = ["sre@example.com"]

[[routes]]
prefix = "/mcp"
policy = "mcp"
"""

GRAFANA_TOOLS = {"grafana__list_dashboards", "grafana__delete_dashboard", "grafana__whoami"}
SRE_TOOLS = {"sre__list_dashboards", "sre__delete_dashboard", "sre__whoami", "sre__get_panel_000",
             "sre__delete_panel_001", "sre__request_headers"}


class Aggregated:
    def __init__(self, workdir: pathlib.Path):
        self.parts = []
        try:
            self.standin = self._keep(StandIn(workdir))
            self.grafana = self._keep(McpUpstream(workdir, (), "grafana"))
            self.sre = self._keep(McpUpstream(workdir, ("--extra-tools", "2", "--headers-tool"), "sre"))
            settings = {"issuer": self.standin.url, "resource_url": "https://mcp.example.com/mcp"}
            settings.update(demo_workspace(workdir)(self.standin))
            settings["extra_config"] += POLICY
            self.authz = self._keep(Authz(workdir, settings).start())
            self.envoy = self._keep(AggregatedEnvoy(workdir, self.authz,
                                                    {"grafana": self.grafana.port, "sre": self.sre.port}))
        except BaseException:
            self.close()
            raise

    def _keep(self, part):
        self.parts.append(part)
        return part

    def close(self):
        for part in reversed(self.parts):
            if isinstance(part, McpUpstream):
                part.close()
            else:
                part.process.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Aggregated(tmp_path_factory.mktemp("aggregated"))
    yield s
    s.close()


def token_for(stack, email: str) -> str:
    return stack.standin.user_id_token(email)


def rpc(stack, email: str, method: str, params: dict | None = None, headers: dict | None = None):
    """A JSON-RPC POST to the one endpoint, as an MCP 2026-07-28 client sends it."""
    all_headers = mcp_headers(method, (params or {}).get("name") or (params or {}).get("uri"))
    all_headers.update(headers or {})
    return stack.envoy.request("POST", "/mcp", token=token_for(stack, email), headers=all_headers,
                               data=json.dumps(mcp_body(method, params)))


def call(stack, email: str, tool: str, arguments: dict | None = None):
    return rpc(stack, email, "tools/call", {"name": tool, "arguments": arguments or {}})


def tool_names(response) -> set:
    assert response.status_code == 200, response.text
    return {tool["name"] for tool in response.json()["result"]["tools"]}


def test_the_public_listener_is_local_yamls():
    """The same filters, settings, authz clusters and authz routes as the tested local.yaml; the
    MCP router only adds an internal listener and the backends."""
    values = {name: "1" for name in ("ADMIN_PORT", "LISTEN_ADDRESS", "LISTEN_PORT", "TLS_CERT", "TLS_KEY",
                                     "AUTHZ_HOST", "AUTHZ_GRPC_PORT", "AUTHZ_HTTP_PORT", "UPSTREAM_HOST",
                                     "UPSTREAM_PORT", "GRAFANA_HOST", "GRAFANA_PORT", "SRE_HOST", "SRE_PORT")}
    load = lambda name: yaml.safe_load(string.Template((ROOT / "envoy" / name).read_text()).substitute(values))
    local, aggregated = load("local.yaml"), load("aggregated.yaml")
    hcm = lambda config: config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    ours, theirs = hcm(aggregated), hcm(local)
    assert ours["http_filters"] == theirs["http_filters"]
    for key in set(ours) | set(theirs):
        if key != "route_config":
            assert ours.get(key) == theirs.get(key), key
    host = lambda h: h["route_config"]["virtual_hosts"][0]
    assert host(ours)["typed_per_filter_config"] == host(theirs)["typed_per_filter_config"]
    to_authz = lambda h: [r for r in host(h)["routes"] if r.get("route", {}).get("cluster") == "authz_http"]
    assert to_authz(ours) == to_authz(theirs)
    clusters = lambda config: {c["name"]: c for c in config["static_resources"]["clusters"]}
    for name in ("authz_grpc", "authz_http"):
        assert clusters(aggregated)[name] == clusters(local)[name], name
    assert local["admin"] == aggregated["admin"]
    listener = lambda config: config["static_resources"]["listeners"][0]
    assert listener(aggregated)["address"] == listener(local)["address"]
    assert listener(aggregated)["filter_chains"][0]["transport_socket"] == listener(local)["filter_chains"][0]["transport_socket"]


def test_the_router_aggregates_every_backends_tools(stack):
    assert tool_names(rpc(stack, GRACE, "tools/list")) == GRAFANA_TOOLS | SRE_TOOLS


def test_each_backends_calls_are_decided_by_its_rule(stack):
    # ada may use grafana's harmless tools, and nothing of sre's (not even the harmless ones).
    who = call(stack, ADA, "grafana__whoami")
    assert who.status_code == 200, who.text
    assert who.json()["result"]["structuredContent"]["x-auth-request-email"] == ADA
    for tool in ("grafana__delete_dashboard", "sre__whoami", "sre__get_panel_000"):
        refused = call(stack, ADA, tool)
        assert refused.status_code == 403, tool
        assert refused.json()["policy"] == "mcp"
    # grace may use both; get_panel_000 exists on sre only, so the router sent the call there.
    for tool in ("sre__whoami", "sre__get_panel_000", "grafana__delete_dashboard"):
        allowed = call(stack, GRACE, tool, {"name": "latency"} if "delete" in tool else {})
        assert allowed.status_code == 200, (tool, allowed.text)
        assert "error" not in allowed.json(), (tool, allowed.text)
    assert call(stack, GRACE, "sre__get_panel_000", {"index": 7}).json()["result"]["content"][0]["text"] == "panel 7"


def test_lists_hide_the_entries_each_backends_rule_refuses(stack):
    # ada sees no tool of sre's and no delete_* of grafana's: exactly what she may call.
    assert tool_names(rpc(stack, ADA, "tools/list")) == {"grafana__list_dashboards", "grafana__whoami"}
    assert tool_names(rpc(stack, GRACE, "tools/list")) == GRAFANA_TOOLS | SRE_TOOLS


def test_each_backends_prompts_and_resources_are_its_rules(stack):
    """Rules name prompts (`prompts`) and resource URIs (`resources`) too, so the sre backend's
    prompts and resources are hidden from ada and refused to her, and grace sees both."""
    prompts = rpc(stack, ADA, "prompts/list").json()["result"]["prompts"]
    assert {p["name"] for p in prompts} == {"grafana__summarize_dashboard"}
    resources = rpc(stack, ADA, "resources/list").json()["result"]["resources"]
    assert {r["uri"] for r in resources} == {"grafana+dashboards://index"}
    prompts = rpc(stack, GRACE, "prompts/list").json()["result"]["prompts"]
    assert {p["name"] for p in prompts} == {"grafana__summarize_dashboard", "sre__summarize_dashboard"}
    refused = rpc(stack, ADA, "resources/read", {"uri": "sre+dashboards://index"})
    assert refused.status_code == 403, refused.text
    refused = rpc(stack, ADA, "prompts/get", {"name": "sre__summarize_dashboard", "arguments": {}})
    assert refused.status_code == 403, refused.text


def test_backends_get_authzs_identity_headers_and_nothing_of_the_clients(stack):
    # The client sends its token, a cookie, a header of its own and a forged identity header.
    client = {"cookie": "session=secret", "x-client-note": "hi", "x-auth-request-email": "root@example.com"}
    response = rpc(stack, GRACE, "tools/call", {"name": "sre__request_headers", "arguments": {}}, headers=client)
    assert response.status_code == 200, response.text
    seen = set(response.json()["result"]["structuredContent"]["result"])
    assert {"x-auth-request-email", "x-auth-request-user", "x-request-id"} <= seen, seen
    assert not seen & {"authorization", "cookie", "x-client-note"}, seen
    who = rpc(stack, GRACE, "tools/call", {"name": "sre__whoami", "arguments": {}}, headers=client)
    assert who.json()["result"]["structuredContent"] == {
        "x-auth-request-email": GRACE, "x-auth-request-user": sub_of(GRACE), "authorization": None}


def test_envoy_1_40_router_does_not_speak_mcp_2026_07_28_yet(stack):
    """What keeps MCP 2026-07-28 clients (the official SDK's `discover()`) out today. When this
    fails, Envoy's router has caught up: update README ("Several backends behind one endpoint")
    and test through the official client instead."""
    # 1. The revision's first request: the router refuses the method (its rq_invalid counter).
    discover = rpc(stack, GRACE, "server/discover")
    assert discover.status_code == 400
    assert discover.text == "Invalid or missing MCP request"
    # 2. Its list results lack the fields the revision requires (the SDK refuses such a result);
    # a backend's own answer has them.
    aggregated = rpc(stack, GRACE, "tools/list").json()["result"]
    direct = requests.post(f"http://127.0.0.1:{stack.grafana.port}/mcp", headers=mcp_headers("tools/list"),
                           data=json.dumps(mcp_body("tools/list")), timeout=5).json()["result"]
    required = {"resultType", "ttlMs", "cacheScope"}
    assert required <= set(direct), direct.keys()
    assert not required & set(aggregated), aggregated.keys()
    # A call's result loses `resultType` on the way through the router too.
    called = call(stack, GRACE, "grafana__whoami").json()["result"]
    direct = requests.post(f"http://127.0.0.1:{stack.grafana.port}/mcp", headers=mcp_headers("tools/call", "whoami"),
                           data=json.dumps(mcp_body("tools/call", {"name": "whoami", "arguments": {}})),
                           timeout=5).json()["result"]
    assert "resultType" in direct and "resultType" not in called, (direct.keys(), called.keys())
