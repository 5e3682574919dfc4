"""End to end: several MCP servers behind one Envoy, each its own protected resource.

`/mcp` (the default policy: platform@), `/grafana/mcp` (policy grafana: platform@, delete_* for
sre@ only) and `/sre/mcp` (policy sre: sre@ only) are declared in [[resources]]; Envoy routes the
three to the demo MCP server. The official Python SDK signs in to each by its URL alone: each
401 names that server's metadata, each sign-in yields a token for that server only (RFC 8707),
and a token for one server is refused at the others with a challenge that sends the client to
sign in there. A refusal no consent can fix (a tool rule) is a plain 403: the SDK reports it and
does not open the browser again.
"""

import asyncio
import re
import secrets
import urllib.parse

import httpx2
import jwt
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from stack import ADA, BOB, DEMO_RESOURCES, GRACE, run_connect_script, wait_until
from test_oauth import REDIRECT, OAuthStack, OfficialClient



@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = OAuthStack(tmp_path_factory.mktemp("resources"), oauth_settings={"access_token_ttl": '"60s"'},
                       policy_extra=DEMO_RESOURCES)
    yield stack
    stack.close()


def connect(stack, client: OfficialClient, action, statuses=None):
    async def record(response):
        if statuses is not None:
            statuses.append((response.request.url.path, response.status_code))

    async def session():
        async with httpx2.AsyncClient(auth=client.provider, verify=client.tls, timeout=20,
                                      event_hooks={"response": [record]}) as http:
            async with streamable_http_client(client.server_url, http_client=http) as streams:
                async with ClientSession(streams[0], streams[1]) as mcp:
                    await mcp.discover()
                    return await action(mcp)

    return asyncio.run(session())


async def whoami(mcp):
    result = await mcp.call_tool("whoami", {})
    assert not result.is_error, result
    return result


def audience(token: str) -> str:
    return jwt.decode(token, options={"verify_signature": False})["aud"]


def test_each_server_has_its_own_metadata_and_challenge(stack):
    for path, name in [("/mcp", "MCP servers"), ("/grafana/mcp", "Grafana"), ("/sre/mcp", "SRE tools")]:
        challenge = stack.envoy.request("POST", path, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert challenge.status_code == 401
        metadata_url = f"{stack.origin}/.well-known/oauth-protected-resource{path}"
        assert challenge.headers["www-authenticate"] == f'Bearer resource_metadata="{metadata_url}"'
        document = stack.browser().get(metadata_url, timeout=10).json()
        assert document["resource"] == f"{stack.origin}{path}", document
        assert document["resource_name"] == name
        assert document["authorization_servers"] == [stack.origin]
    root = stack.browser().get(f"{stack.origin}/.well-known/oauth-protected-resource", timeout=10).json()
    assert root["resource"] == stack.resource
    missing = stack.browser().get(f"{stack.origin}/.well-known/oauth-protected-resource/nope/mcp", timeout=10)
    assert missing.status_code == 404


def test_the_sdk_signs_in_to_each_server_by_its_url_and_tokens_stay_with_their_server(stack):
    grafana = OfficialClient(stack, "grafana client", server_url=f"{stack.origin}/grafana/mcp")
    who = connect(stack, grafana, whoami)
    assert len(grafana.sign_ins) == 1
    assert "Grafana" in stack.browser().get(grafana.sign_ins[0], timeout=10).text
    grafana_token = grafana.storage.tokens.access_token
    assert audience(grafana_token) == f"{stack.origin}/grafana/mcp"
    assert ADA in who.content[0].text

    default = OfficialClient(stack, "default client")
    connect(stack, default, whoami)
    assert len(default.sign_ins) == 1
    assert audience(default.storage.tokens.access_token) == stack.resource

    # Cross-resource: the grafana token is refused at /mcp and /sre/mcp, and the challenge
    # names the server asked for, so a client signs in there; at home it works.
    for path in ["/mcp", "/sre/mcp"]:
        refused = stack.envoy.request("POST", path, token=grafana_token, json={"jsonrpc": "2.0", "id": 1,
                                                                                "method": "ping"})
        assert refused.status_code == 401, (path, refused.status_code)
        assert f'oauth-protected-resource{path}"' in refused.headers["www-authenticate"]
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert stack.mcp_status(grafana_token) == 401
    assert stack.mcp_status(default.storage.tokens.access_token) == 200

    # A refresh token cannot be turned into another server's token.
    other = stack.token(grant_type="refresh_token", refresh_token=grafana.storage.tokens.refresh_token,
                        client_id=grafana.storage.client_info.client_id, resource=stack.resource)
    assert other.status_code == 400 and other.json()["error"] == "invalid_target", other.text


def test_each_server_admits_by_its_own_policy_at_sign_in(stack):
    # Grace is in sre@: she signs in to /sre/mcp and calls a tool.
    grace = OfficialClient(stack, "sre client", server_url=f"{stack.origin}/sre/mcp", email=GRACE)
    connect(stack, grace, whoami)
    assert len(grace.sign_ins) == 1
    # Ada is not: her sign-in to /sre/mcp is refused at once (no token for a server that would
    # refuse her every request), with the reason.
    verifier = secrets.token_urlsafe(48)
    client_id = stack.register()
    answer = stack.sign_in(stack.authorize_url(client_id, verifier, resource=f"{stack.origin}/sre/mcp"), ADA)
    assert answer["error"] == "access_denied" and "not allowed" in answer["error_description"], answer
    # Bob is in no group: /grafana/mcp refuses him at sign-in too.
    answer = stack.sign_in(stack.authorize_url(client_id, verifier, resource=f"{stack.origin}/grafana/mcp"), BOB)
    assert answer["error"] == "access_denied", answer


def test_a_tool_rule_refusal_is_reported_without_a_new_sign_in(stack):
    client = OfficialClient(stack, "grafana rule client", server_url=f"{stack.origin}/grafana/mcp")
    statuses = []

    async def allowed_then_refused(mcp):
        await whoami(mcp)
        try:
            return await mcp.call_tool("delete_dashboard", {"name": "x"})
        except Exception as error:  # the SDK may raise instead of returning an error result
            return error

    refused = connect(stack, client, allowed_then_refused, statuses)
    assert ("/grafana/mcp", 403) in statuses, statuses
    assert isinstance(refused, Exception) or refused.is_error, refused
    assert len(client.sign_ins) == 1, "the refusal sent the user back to sign in"

    # The audit trail says who, through which application, at which server, with which tool.
    def events():
        found = [e for authz in stack.authz for e in authz.audit_events()
                 if e.get("client_name") == "grafana rule client" and e.get("mcp_method") == "tools/call"]
        return found if len(found) >= 2 else None

    by_tool = {e["tool"]: e for e in wait_until(events, timeout=5, what="audit events")}
    denied, allowed = by_tool["delete_dashboard"], by_tool["whoami"]
    assert (denied["decision"], denied["reason"], denied["rule"]) == ("forbidden", "not_in_groups", "destructive"), denied
    assert allowed["decision"] == "allow", allowed
    for event in (denied, allowed):
        assert event["email"] == ADA and event["resource"] == f"{stack.origin}/grafana/mcp", event
        assert event["token_kind"] == "facade" and event["client"], event


def test_resource_parameter_shapes(stack):
    client_id = stack.register()
    browser = stack.browser()
    verifier = secrets.token_urlsafe(48)
    grafana = f"{stack.origin}/grafana/mcp"

    def consent(resource_pairs):
        params = [("response_type", "code"), ("client_id", client_id), ("redirect_uri", REDIRECT),
                  ("state", "s"), ("code_challenge", "x" * 43), ("code_challenge_method", "S256"),
                  *resource_pairs]
        return browser.get(f"{stack.origin}/oauth/authorize?{urllib.parse.urlencode(params)}",
                           allow_redirects=False, timeout=10)

    # Named twice with one value (and a trailing slash): one resource, its consent page.
    twice = consent([("resource", grafana), ("resource", grafana + "/")])
    assert twice.status_code == 200 and "Grafana" in twice.text, twice.text
    # Two different servers: refused, said so.
    two = consent([("resource", grafana), ("resource", stack.resource)])
    assert two.status_code == 400 and "invalid_target" in two.text, two.text
    # Unknown: refused.
    unknown = consent([("resource", f"{stack.origin}/other/mcp")])
    assert unknown.status_code == 400 and "invalid_target" in unknown.text
    # Absent (some clients omit it): the default server, and a token for it.
    absent = consent([])
    assert absent.status_code == 200 and "MCP servers" in absent.text
    answer = stack.sign_in(stack.authorize_url(client_id, verifier, resource=None))
    tokens = stack.token(grant_type="authorization_code", code=answer["code"], code_verifier=verifier,
                         redirect_uri=REDIRECT, client_id=client_id)
    assert tokens.status_code == 200, tokens.text
    assert audience(tokens.json()["access_token"]) == stack.resource
    # At the token endpoint, repeated identical values are one; another server's is refused.
    verifier = secrets.token_urlsafe(48)
    answer = stack.sign_in(stack.authorize_url(client_id, verifier, resource=grafana))
    form = [("grant_type", "authorization_code"), ("code", answer["code"]), ("code_verifier", verifier),
            ("redirect_uri", REDIRECT), ("client_id", client_id), ("resource", grafana), ("resource", grafana)]
    tokens = stack.token_form(form)
    assert tokens.status_code == 200, tokens.text
    assert audience(tokens.json()["access_token"]) == grafana
    verifier = secrets.token_urlsafe(48)
    answer = stack.sign_in(stack.authorize_url(client_id, verifier, resource=grafana))
    refused = stack.token(grant_type="authorization_code", code=answer["code"], code_verifier=verifier,
                          redirect_uri=REDIRECT, client_id=client_id, resource=stack.resource)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_target", refused.text


def test_the_consent_page_names_the_server_the_organization_and_where_it_returns(stack):
    client_id = stack.register()
    page = stack.browser().get(stack.authorize_url(client_id, "v" * 43, resource=f"{stack.origin}/sre/mcp"),
                               timeout=10).text
    assert "SRE tools" in page and "localhost" in page and "example.com" in page
    assert "not verified" in page
    assert re.search(r'<button type="submit" name="decision" value="allow" autofocus', page), page
    # A web client (the registration default) answered on this computer is pointed out; a
    # native one is not.
    assert "Careful" in page
    native = stack.register(application_type="native")
    page = stack.browser().get(stack.authorize_url(native, "v" * 43), timeout=10).text
    assert "Allow" in page and "Careful" not in page


def test_a_path_under_no_declared_server_is_not_served(stack):
    """Envoy sends all of /grafana/ to the Grafana upstream, but only /grafana/mcp is declared:
    another path there (a legacy SSE endpoint, say) must not be decided by some other server's
    policy. With several servers it is a 404, token or not."""
    grafana = OfficialClient(stack, "not served client", server_url=f"{stack.origin}/grafana/mcp")
    connect(stack, grafana, whoami)
    default = stack.tokens(stack.register())["access_token"]
    google = stack.standin.id_token(email=ADA)
    for token in (None, default, grafana.storage.tokens.access_token, google):
        for path in ("/grafana/sse", "/grafana/mcpx", "/other"):
            response = stack.envoy.request("POST", path, token=token, json={"jsonrpc": "2.0", "id": 1,
                                                                            "method": "ping"})
            assert response.status_code == 404, (path, response.status_code, response.text)
            assert response.json()["error"] == "not_found"
            assert "www-authenticate" not in response.headers


def test_the_readme_client_signs_in_and_lists_tools(stack):
    """demo/connect.py, the README's "Connect a client" script, against the Grafana server."""
    def sign_in(url: str) -> str:
        return f"http://127.0.0.1:33418/callback?{urllib.parse.urlencode(stack.sign_in(url, GRACE))}"

    out = run_connect_script(f"{stack.origin}/grafana/mcp", stack.envoy.cert, sign_in)
    assert "delete_dashboard" in out and "whoami" in out, out
