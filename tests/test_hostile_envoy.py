"""End to end: hostile requests that Envoy (envoy/local.yaml) must settle before authz decides.

authz picks its policy by the path Envoy hands it, so Envoy must hand it the path the upstream
will read: `/%74ools/x`, `//tools/x` and `/a/../tools/x` are `/tools/x` to authz and upstream
alike, and an encoded slash (which upstreams decode differently) is refused. And a header
named with `_` is refused: an upstream that folds `_` into `-` would read a client's
`x_auth_request_email` as the identity header authz sets.

Policies: `/tools` is for grace only (authz's [[routes]]); every other path takes the domain
check alone, which ada passes.
"""

import http.client
import json
import ssl

import pytest

from stack import DOMAIN, GRACE, Stack, wait_until

POLICIES = f"""
[policies.tools]
allow_users = ["{GRACE}"]

[[routes]]
prefix = "/tools"
policy = "tools"
"""

# Spellings of /tools/x that a path-prefix check on the raw path would not recognize.
DISGUISED = ["/tools/x", "/%74ools/x", "//tools/x", "/a/../tools/x", "/tools/./x", "/tools//x"]
ENCODED_SLASHES = ["/tools%2Fx", "/tools%2fx", "/tools%5Cx", "/%2Ftools/x"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("hostile"), extra_config=POLICIES)
    yield s
    s.close()


class Answer:
    def __init__(self, status: int, headers: dict, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def send(stack, path: str, token: str | None = None, headers: dict | None = None) -> Answer:
    """One HTTP/1.1 request with `path` on the request line byte for byte (requests and urllib3
    would resolve `..` before sending, which is exactly what must be left to Envoy)."""
    context = ssl.create_default_context(cafile=str(stack.envoy.cert))
    conn = http.client.HTTPSConnection("localhost", stack.envoy.port, context=context, timeout=10)
    try:
        conn.putrequest("GET", path)
        if token is not None:
            conn.putheader("authorization", f"Bearer {token}")
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


def audit_for(stack, answer: Answer) -> dict:
    request_id = answer.headers["x-request-id"]
    return wait_until(
        lambda: next((e for e in stack.authz.audit_events() if e.get("request_id") == request_id), None),
        timeout=5, what=f"audit event {request_id}")


def grace(stack) -> str:
    return stack.standin.id_token(email=GRACE, sub="2")


def test_underscore_identity_header_is_refused_before_the_upstream(stack):
    token = stack.standin.id_token()
    before = len(stack.upstream.requests)
    answer = send(stack, "/mcp", token, {"x_auth_request_email": "ceo@example.com"})
    assert answer.status == 400, answer.body
    assert len(stack.upstream.requests) == before, "the upstream saw the spoofing request"
    # Any underscore, not only our header names; the same request without one passes.
    assert send(stack, "/mcp", token, {"x_anything": "1"}).status == 400
    assert len(stack.upstream.requests) == before
    answer = send(stack, "/mcp", token, {"x-auth-request-email": "ceo@example.com"})
    assert answer.status == 200
    assert answer.json()["headers"].count(["x-auth-request-email", f"ada@{DOMAIN}"]) == 1


@pytest.mark.parametrize("path", DISGUISED)
def test_disguised_paths_reach_authz_and_upstream_normalized(stack, path):
    answer = send(stack, path, grace(stack))
    assert answer.status == 200, answer.body
    assert answer.json()["path"] == "/tools/x"
    assert audit_for(stack, answer)["policy"] == "tools"


@pytest.mark.parametrize("path", DISGUISED)
def test_disguised_paths_do_not_escape_the_policy(stack, path):
    before = len(stack.upstream.requests)
    answer = send(stack, path, stack.standin.id_token())  # ada: not allowed on /tools
    assert answer.status == 403, answer.body
    event = audit_for(stack, answer)
    assert (event["decision"], event["policy"]) == ("forbidden", "tools")
    assert len(stack.upstream.requests) == before
    # Elsewhere ada passes: the refusal is the path's policy.
    assert send(stack, "/other/x", stack.standin.id_token()).status == 200


@pytest.mark.parametrize("path", ENCODED_SLASHES)
def test_encoded_slashes_are_refused_before_the_upstream(stack, path):
    before = len(stack.upstream.requests)
    answer = send(stack, path, grace(stack))
    assert answer.status == 400, answer.body
    assert len(stack.upstream.requests) == before
