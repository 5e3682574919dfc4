"""End to end: the OAuth 2.1 facade, driven by the official Python MCP client.

The client meets a 401 at Envoy, discovers our metadata, registers (DCR), sends "the user" to
the consent page (a requests.Session plays the browser: it posts the form and signs in at the
Google stand-in), gets our tokens, lists and calls tools on the demo MCP server, refreshes after
its access token expires, and is refused after revoking. Once with the in-memory store and one
authz; once with two authz replicas behind Envoy (round robin) sharing a real Redis, so every
step may land on the other replica.

Then the attacks: each is a request that fails and gets nothing issued.
"""

import asyncio
import base64
import hashlib
import json
import re
import secrets
import socket
import ssl
import threading
import time
import urllib.parse

import httpx2
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from mcp.client.auth import OAuthClientProvider
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

from browser import google_sign_in
from stack import (ADA, BOB, CONSUMER, PLATFORM, SRE, Authz, EchoUpstream, Envoy, McpUpstream, Process,
                   StandIn, demo_workspace, free_port, mcp_body, mcp_headers, oauth_config, redis_server, set_demo_groups, wait_until)

SEALING_KEY = secrets.token_hex(32)
REDIRECT = "http://127.0.0.1:33418/callback"
ACCESS_TTL = 3


def signing_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


class OAuthStack:
    """Stand-in + demo MCP server + N authz replicas (+ Redis when N > 1) + Envoy."""

    def __init__(self, workdir, replicas: int = 1, groups: bool = True, allow_ttl: str = "5m",
                 membership_ttl: str = "1s", oauth_settings: dict | None = None,
                 upstream: str = "mcp", authz_settings: dict | None = None, policy_extra: str = ""):
        """`oauth_settings` are [oauth] keys as TOML values (they override the test defaults,
        e.g. the 3 s access tokens); `upstream` is "mcp" (the demo MCP server) or "echo";
        `authz_settings` are further Authz settings (cache bounds, TTLs, `google_extra`)."""
        self.processes, self.authz, self.envoy, self.upstream, self.redis = [], [], None, None, None
        self.workdir = workdir
        try:
            self.standin = StandIn(workdir)
            self.processes.append(self.standin.process)
            port = free_port()
            self.origin = f"https://localhost:{port}"
            self.resource = f"{self.origin}/mcp"
            # Short membership TTLs, so that a group change is seen by the next refresh.
            settings = demo_workspace(workdir, {"positive_ttl": membership_ttl, "negative_ttl": "1s",
                                                "refresh_ahead": "0s"})(self.standin)
            store = '[store]\nbackend = "memory"\n'
            if replicas > 1:
                redis_port = self.redis_port = free_port()
                self.redis = self.start_redis()
                store = f'[store]\nbackend = "redis"\nrevocation_poll = "200ms"\n[store.redis]\nurl = "redis://127.0.0.1:{redis_port}/0"\n'
            oauth = oauth_config(self.standin, self.origin, **{
                "signing_keys": f"'''{signing_key_pem()}'''", "sealing_keys": f'"{SEALING_KEY}"',
                "access_token_ttl": f'"{ACCESS_TTL}s"', **(oauth_settings or {})})
            if groups:
                oauth += f'[policies.default]\ngroups = ["{PLATFORM}"]\n'
            # `{origin}` in the extra tables is Envoy's https origin, known only now.
            oauth += policy_extra.replace("{origin}", self.origin)
            settings.update(issuer=self.standin.url, resource_url=self.resource, allow_ttl=allow_ttl,
                            extra_config=oauth + store + settings["extra_config"])
            settings.update(authz_settings or {})
            self.upstream = McpUpstream(workdir) if upstream == "mcp" else EchoUpstream()
            for index in range(replicas):
                replica_dir = workdir / f"authz{index}"
                replica_dir.mkdir()
                self.authz.append(Authz(replica_dir, dict(settings)).start())
            self.envoy = Envoy(workdir, self.authz[0], self.upstream.port, port=port,
                               replicas=tuple(self.authz[1:]))
        except BaseException:
            self.close()
            raise

    def start_redis(self) -> Process:
        return Process("redis", [redis_server(), "--port", str(self.redis_port),
                                 "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], self.workdir)

    def close(self):
        if self.redis:
            self.redis.stop()
        if self.envoy:
            self.envoy.process.stop()
        for authz in self.authz:
            if authz.process:
                authz.process.stop()
        if self.upstream:
            self.upstream.close()
        for process in reversed(self.processes):
            process.stop()

    # --- a browser ---------------------------------------------------------------------------

    def browser(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # else a CA bundle from the environment overrides `verify`
        session.verify = str(self.envoy.cert)
        return session

    def consent_form(self, browser, authorize_url: str) -> dict:
        page = browser.get(authorize_url, allow_redirects=False, timeout=10)
        assert page.status_code == 200, page.text
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page.text))
        assert set(fields) == {"request", "csrf"}, page.text
        return fields

    def sign_in(self, authorize_url: str, email: str = ADA, browser=None) -> dict:
        """The whole browser side; returns the query the client's redirect URI receives."""
        browser = browser or self.browser()
        fields = self.consent_form(browser, authorize_url)
        answer = browser.post(f"{self.origin}/oauth/authorize", data={**fields, "decision": "allow"},
                              allow_redirects=False, timeout=10)
        assert answer.status_code == 303, answer.text
        back_at_us = google_sign_in(browser, answer.headers["location"], email)
        assert back_at_us.startswith(f"{self.origin}/oauth/callback?"), back_at_us
        to_client = browser.get(back_at_us, allow_redirects=False, timeout=10)
        assert to_client.status_code == 302, to_client.text
        return query_of(to_client.headers["location"])

    # --- a client by hand ---------------------------------------------------------------------

    def register(self, redirect_uris=(REDIRECT,), **extra) -> str:
        response = requests.post(f"{self.origin}/oauth/register", verify=str(self.envoy.cert), timeout=10,
                                 json={"redirect_uris": list(redirect_uris), "client_name": "attack test",
                                       "token_endpoint_auth_method": "none", **extra})
        assert response.status_code == 201, response.text
        return response.json()["client_id"]

    def authorize_url(self, client_id: str, verifier: str, redirect_uri: str = REDIRECT, **overrides) -> str:
        params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
                  "state": "client-state", "code_challenge": s256(verifier), "code_challenge_method": "S256",
                  "resource": self.resource, "scope": "mcp"}
        params.update(overrides)
        params = {k: v for k, v in params.items() if v is not None}
        return f"{self.origin}/oauth/authorize?{urllib.parse.urlencode(params)}"

    def token(self, **form) -> requests.Response:
        return self.token_form(form)

    def token_form(self, form) -> requests.Response:
        """A token request with `form` as a dict or as (name, value) pairs (to repeat one)."""
        return requests.post(f"{self.origin}/oauth/token", data=form, verify=str(self.envoy.cert), timeout=10)

    def code_for(self, client_id: str, verifier: str, email: str = ADA) -> str:
        answer = self.sign_in(self.authorize_url(client_id, verifier), email)
        assert "code" in answer, answer
        return answer["code"]

    def tokens(self, client_id: str, email: str = ADA) -> dict:
        verifier = secrets.token_urlsafe(48)
        code = self.code_for(client_id, verifier, email)
        response = self.token(grant_type="authorization_code", code=code, code_verifier=verifier,
                              redirect_uri=REDIRECT, client_id=client_id, resource=self.resource)
        assert response.status_code == 200, response.text
        return response.json()

    def mcp_status(self, access_token: str) -> int:
        body = mcp_body("tools/list")
        return self.envoy.request("POST", "/mcp", token=access_token, json=body,
                                  headers=mcp_headers("tools/list")).status_code


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def query_of(url: str) -> dict:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


class MemoryStorage:
    def __init__(self):
        self.tokens = self.client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


class OfficialClient:
    """The official SDK's OAuth client for `stack`: `provider` (an httpx auth), its token
    `storage`, the sign-in URLs it opened (`sign_ins`; each is completed by the test browser)
    and `tls` trusting the stack's certificate."""

    def __init__(self, stack: OAuthStack, name: str = "e2e MCP client", server_url: str | None = None,
                 email: str = ADA):
        """`server_url`: the MCP server it connects to (default: the stack's one resource);
        `email`: who signs in."""
        self.server_url = server_url or stack.resource
        self.storage = MemoryStorage()
        self.sign_ins: list[str] = []

        async def redirect_handler(url: str) -> None:
            self.sign_ins.append(url)

        async def callback_handler() -> AuthorizationCodeResult:
            answer = await asyncio.to_thread(stack.sign_in, self.sign_ins[-1], email)
            return AuthorizationCodeResult(code=answer["code"], state=answer.get("state"), iss=answer.get("iss"))

        self.provider = OAuthClientProvider(
            server_url=self.server_url,
            client_metadata=OAuthClientMetadata(
                client_name=name, redirect_uris=[REDIRECT], grant_types=["authorization_code", "refresh_token"],
                response_types=["code"], token_endpoint_auth_method="none", scope="mcp"),
            storage=self.storage, redirect_handler=redirect_handler, callback_handler=callback_handler)
        self.tls = ssl.create_default_context(cafile=str(stack.envoy.cert))


def run_client_journey(stack: OAuthStack) -> None:
    """The official client, start to finish: login, tools, refresh, revocation."""
    client = OfficialClient(stack)
    storage, sign_ins, provider, tls = client.storage, client.sign_ins, client.provider, client.tls

    async def session(action):
        async with httpx2.AsyncClient(auth=provider, verify=tls, timeout=20) as http:
            async with streamable_http_client(stack.resource, http_client=http) as streams:
                async with ClientSession(streams[0], streams[1]) as mcp:
                    await mcp.discover()
                    return await action(mcp)

    async def tools_and_whoami(mcp):
        tools = [tool.name for tool in (await mcp.list_tools()).tools]
        who = await mcp.call_tool("whoami", {})
        assert not who.is_error, who
        return tools, json.loads(who.content[0].text)

    tools, who = asyncio.run(session(tools_and_whoami))
    assert len(sign_ins) == 1
    assert {"list_dashboards", "whoami"} <= set(tools)
    assert who["x-auth-request-email"] == ADA
    assert who["authorization"] is None, "the client's token reached the upstream"
    first = storage.tokens
    assert first.token_type.lower() == "bearer" and first.refresh_token

    # The access token expires; the client refreshes (rotation) without a new sign-in.
    time.sleep(ACTIVE_EXPIRY)
    tools, who = asyncio.run(session(tools_and_whoami))
    assert len(sign_ins) == 1, "the client had to sign in again instead of refreshing"
    second = storage.tokens
    assert second.access_token != first.access_token and second.refresh_token != first.refresh_token
    assert who["x-auth-request-email"] == ADA

    # Revoked: the access token is refused (on every replica), and so is the refresh token.
    client_id = storage.client_info.client_id
    revoked = requests.post(f"{stack.origin}/oauth/revoke", verify=str(stack.envoy.cert), timeout=10,
                            data={"token": second.refresh_token, "client_id": client_id})
    assert revoked.status_code == 200, revoked.text
    wait_until(lambda: all(stack.mcp_status(second.access_token) == 401 for _ in range(4)),
               timeout=5, what="revoked access token refused")
    refresh = stack.token(grant_type="refresh_token", refresh_token=second.refresh_token, client_id=client_id)
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant"


ACTIVE_EXPIRY = ACCESS_TTL + 1


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    stack = OAuthStack(tmp_path_factory.mktemp("oauth-memory"))
    yield stack
    stack.close()


def test_official_client_signs_in_uses_tools_refreshes_and_is_revoked_memory_store(single):
    run_client_journey(single)


def test_official_client_journey_on_two_replicas_sharing_redis(tmp_path):
    stack = OAuthStack(tmp_path, replicas=2)
    try:
        run_client_journey(stack)
        # Both replicas served: the journey crossed them.
        for authz in stack.authz:
            assert any(e.get("event") == "sign_in" or e.get("target") == "audit" for e in authz.log_events())
    finally:
        stack.close()


def test_metadata_is_consistent_and_the_challenge_points_to_it(single):
    challenge = single.envoy.request("POST", "/mcp").headers["www-authenticate"]
    prm_url = re.search(r'resource_metadata="([^"]+)"', challenge).group(1)
    assert prm_url == f"{single.origin}/.well-known/oauth-protected-resource/mcp"
    get = lambda path: requests.get(f"{single.origin}{path}", verify=str(single.envoy.cert), timeout=10)
    prm = get("/.well-known/oauth-protected-resource/mcp").json()
    assert prm == get("/.well-known/oauth-protected-resource").json()
    assert prm["resource"] == single.resource
    assert prm["authorization_servers"] == [single.origin]
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        response = get(path)
        assert response.headers["access-control-allow-origin"] == "*"
        metadata = response.json()
        assert metadata["issuer"] == single.origin
        assert metadata["code_challenge_methods_supported"] == ["S256"]
        assert metadata["authorization_response_iss_parameter_supported"] is True
    jwks = get("/oauth/jwks").json()
    assert [key["alg"] for key in jwks["keys"]] == ["ES256"]


# --- attacks: each fails, and nothing is issued ---------------------------------------------------

def no_code(response) -> None:
    assert response.status_code in (400, 403), (response.status_code, response.text)
    assert "location" not in response.headers, response.headers.get("location")


@pytest.mark.parametrize("redirect_uri", [
    "https://attacker.example/callback",
    "http://127.0.0.1.attacker.example/callback",
    "http://127.0.0.1:33418/callback/../evil",
    "http://127.0.0.1:33418/callbackx",
    "http://localhost:33418/callback",  # another loopback host than the registered one
    "https://127.0.0.1:33418/callback",
])
def test_unregistered_or_look_alike_redirect_uri_gets_a_page_not_a_redirect(single, redirect_uri):
    client_id = single.register()
    response = single.browser().get(single.authorize_url(client_id, secrets.token_urlsafe(48),
                                                         redirect_uri=redirect_uri), allow_redirects=False)
    no_code(response)
    assert "not registered" in response.text


def test_loopback_redirect_matches_on_any_port(single):
    client_id = single.register(redirect_uris=["http://127.0.0.1/callback"])
    url = single.authorize_url(client_id, secrets.token_urlsafe(48), redirect_uri="http://127.0.0.1:51234/callback")
    assert single.browser().get(url, allow_redirects=False).status_code == 200


@pytest.mark.parametrize("overrides,error", [
    ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge_method": None}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"resource": "https://elsewhere.example/mcp"}, "invalid_target"),
])
def test_bad_authorization_requests_go_back_as_errors_without_a_code(single, overrides, error):
    client_id = single.register()
    response = single.browser().get(single.authorize_url(client_id, secrets.token_urlsafe(48), **overrides),
                                    allow_redirects=False)
    # Registration is open, so no redirect happens before the user did anything (RFC 9700
    # s4.11.2): a page, whose link the user may follow back to the application with the error.
    assert response.status_code == 400 and "location" not in response.headers
    link = re.search(r'<a href="([^"]+)"', response.text).group(1).replace("&amp;", "&")
    assert link.startswith(REDIRECT + "?"), link
    answer = query_of(link)
    assert answer["error"] == error and "code" not in answer
    assert answer["iss"] == single.origin and answer["state"] == "client-state"


def test_wrong_or_missing_pkce_verifier_is_refused_and_burns_the_code(single):
    client_id = single.register()
    verifier = secrets.token_urlsafe(48)
    code = single.code_for(client_id, verifier)
    base = dict(grant_type="authorization_code", code=code, redirect_uri=REDIRECT, client_id=client_id)
    missing = single.token(**base)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_grant"
    wrong = single.token(**base, code_verifier=secrets.token_urlsafe(48))
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    right_but_late = single.token(**base, code_verifier=verifier)
    assert right_but_late.status_code == 400 and "access_token" not in right_but_late.text


def test_code_bound_to_client_and_redirect_uri(single):
    client_id, other = single.register(), single.register()
    verifier = secrets.token_urlsafe(48)
    code = single.code_for(client_id, verifier)
    stolen = single.token(grant_type="authorization_code", code=code, code_verifier=verifier,
                          redirect_uri=REDIRECT, client_id=other)
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    code = single.code_for(client_id, verifier)
    moved = single.token(grant_type="authorization_code", code=code, code_verifier=verifier,
                         redirect_uri="http://127.0.0.1:9/callback", client_id=client_id)
    assert moved.status_code == 400 and moved.json()["error"] == "invalid_grant"


def test_code_replay_is_refused_and_revokes_what_the_code_issued(single):
    client_id = single.register()
    verifier = secrets.token_urlsafe(48)
    code = single.code_for(client_id, verifier)
    form = dict(grant_type="authorization_code", code=code, code_verifier=verifier, redirect_uri=REDIRECT,
                client_id=client_id)
    first = single.token(**form)
    assert first.status_code == 200
    assert single.mcp_status(first.json()["access_token"]) == 200
    replay = single.token(**form)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert single.mcp_status(first.json()["access_token"]) == 401
    refresh = single.token(grant_type="refresh_token", refresh_token=first.json()["refresh_token"], client_id=client_id)
    assert refresh.status_code == 400


def test_refresh_token_replay_revokes_the_whole_family(single):
    client_id = single.register()
    issued = single.tokens(client_id)
    rotated = single.token(grant_type="refresh_token", refresh_token=issued["refresh_token"], client_id=client_id)
    assert rotated.status_code == 200
    rotated = rotated.json()
    assert rotated["refresh_token"] != issued["refresh_token"]
    replay = single.token(grant_type="refresh_token", refresh_token=issued["refresh_token"], client_id=client_id)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    successor = single.token(grant_type="refresh_token", refresh_token=rotated["refresh_token"], client_id=client_id)
    assert successor.status_code == 400, "the rotated successor must die with its family"
    assert single.mcp_status(rotated["access_token"]) == 401


def forged_client_id(redirect_uris, expires_at: int, key: bytes) -> str:
    import hmac
    payload = base64.urlsafe_b64encode(json.dumps({"r": redirect_uris, "n": "forged", "t": 0, "e": expires_at},
                                                  separators=(",", ":")).encode()).rstrip(b"=").decode()
    tag = hmac.new(key, b"authz client id v1\0" + payload.encode(), hashlib.sha256).digest()
    return payload + "." + base64.urlsafe_b64encode(tag).rstrip(b"=").decode()


@pytest.mark.parametrize("kind", ["forged", "expired", "tampered"])
def test_forged_or_expired_client_id_is_refused(single, kind):
    if kind == "forged":  # well-formed, signed with a key we do not hold
        client_id = forged_client_id([REDIRECT], int(time.time()) + 3600, secrets.token_bytes(32))
    elif kind == "expired":  # signed with the real key, expired
        client_id = forged_client_id([REDIRECT], int(time.time()) - 1, SEALING_KEY.encode())
    else:  # a real registration with another redirect URI swapped in
        real = single.register()
        body, tag = real.split(".")
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        payload["r"] = ["https://attacker.example/cb"]
        client_id = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode() + "." + tag
    no_code(single.browser().get(single.authorize_url(client_id, secrets.token_urlsafe(48)), allow_redirects=False))
    response = single.token(grant_type="refresh_token", refresh_token="x", client_id=client_id)
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_consent_form_without_this_browsers_cookie_is_refused(single):
    client_id = single.register()
    url = single.authorize_url(client_id, secrets.token_urlsafe(48))
    victim, attacker = single.browser(), single.browser()
    fields = single.consent_form(attacker, url)  # the attacker's own form, CSRF token and all
    single.consent_form(victim, url)  # the victim has a cookie of her own
    forged = victim.post(f"{single.origin}/oauth/authorize", data={**fields, "decision": "allow"},
                         allow_redirects=False)
    no_code(forged)
    no_cookie = requests.post(f"{single.origin}/oauth/authorize", data={**fields, "decision": "allow"},
                              verify=str(single.envoy.cert), allow_redirects=False)
    no_code(no_cookie)
    tampered = attacker.post(f"{single.origin}/oauth/authorize",
                             data={**fields, "csrf": fields["csrf"][:-2] + "AA", "decision": "allow"},
                             allow_redirects=False)
    no_code(tampered)


def test_tampered_or_replayed_state_at_the_callback_is_refused(single):
    client_id = single.register()
    url = single.authorize_url(client_id, secrets.token_urlsafe(48))
    browser = single.browser()
    fields = single.consent_form(browser, url)
    to_google = browser.post(f"{single.origin}/oauth/authorize", data={**fields, "decision": "allow"},
                             allow_redirects=False).headers["location"]
    back_at_us = google_sign_in(browser, to_google, ADA)
    answer = query_of(back_at_us)
    tampered = back_at_us.replace(answer["state"], answer["state"][:-3] + "abc")
    no_code(browser.get(tampered, allow_redirects=False))
    other_browser = single.browser()
    no_code(other_browser.get(back_at_us, allow_redirects=False))  # login CSRF: not her sign-in
    # The state was used up by that attempt: even the right browser cannot finish now.
    no_code(browser.get(back_at_us, allow_redirects=False))
    # And a tampered consent request is refused before Google is involved.
    fields = single.consent_form(browser, url)
    body, tag = fields["request"].split(".")
    no_code(browser.post(f"{single.origin}/oauth/authorize",
                         data={**fields, "request": body[:-2] + "xx." + tag, "decision": "allow"},
                         allow_redirects=False))


class CountingListener:
    """A TCP listener on loopback that counts the connections made to it (and answers none)."""

    def __init__(self):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.connections = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopped.is_set():
            try:
                connection, _ = self.socket.accept()
            except OSError:
                continue
            self.connections += 1
            connection.close()

    def close(self):
        self.stopped.set()
        self.thread.join()
        self.socket.close()


@pytest.mark.parametrize("client_id", [
    "https://127.0.0.1:{port}/client.json",
    "https://localhost:{port}/client.json",
    "https://[::ffff:127.0.0.1]:{port}/client.json",
    "https://2130706433:{port}/client.json",
    "https://169.254.169.254/latest/meta-data/iam",
])
def test_client_metadata_document_on_internal_addresses_is_not_fetched(single, client_id):
    # Something listens where the loopback URLs point: it must never see a connection.
    listener = CountingListener()
    try:
        url = single.authorize_url(client_id.format(port=listener.port), secrets.token_urlsafe(48))
        response = single.browser().get(url, allow_redirects=False)
        no_code(response)
        assert response.status_code == 400, response.text
        time.sleep(0.3)
        assert listener.connections == 0, "authz connected to an internal address"
    finally:
        listener.close()


@pytest.mark.parametrize("email,why", [(CONSUMER, "Workspace"), (BOB, "group")])
def test_accounts_outside_the_domain_or_group_get_no_code(single, email, why):
    client_id = single.register()
    answer = single.sign_in(single.authorize_url(client_id, secrets.token_urlsafe(48)), email)
    assert answer["error"] == "access_denied" and "code" not in answer, answer
    assert why in answer["error_description"]


def test_a_refresh_checks_the_groups_again_and_ends_the_session_of_a_removed_user(single):
    client_id = single.register()
    issued = single.tokens(client_id)
    single.standin.group(PLATFORM, [SRE])  # ada leaves platform@
    try:
        time.sleep(1.5)  # past the membership TTL
        refresh = single.token(grant_type="refresh_token", refresh_token=issued["refresh_token"], client_id=client_id)
        assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant", refresh.text
        assert "group" in refresh.json()["error_description"]
    finally:
        set_demo_groups(single.standin)
    time.sleep(1.5)
    # Back in the group, the refused session stays ended: she must sign in again.
    again = single.token(grant_type="refresh_token", refresh_token=issued["refresh_token"], client_id=client_id)
    assert again.status_code == 400
    assert single.mcp_status(issued["access_token"]) == 401


def test_off_boarding_through_the_admin_api_revokes_the_users_sessions(single):
    client_id = single.register()
    issued = single.tokens(client_id)
    assert single.mcp_status(issued["access_token"]) == 200
    result = single.authz[0].admin("invalidate-user", ADA)
    assert result.returncode == 0, result.stderr
    assert "0 refresh-token families" not in result.stdout, result.stdout
    assert single.mcp_status(issued["access_token"]) == 401
    refresh = single.token(grant_type="refresh_token", refresh_token=issued["refresh_token"], client_id=client_id)
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant"


def test_browser_clients_get_cors_on_the_mcp_endpoint_and_the_oauth_endpoints(single):
    origin = "http://localhost:6274"  # MCP Inspector
    preflight = single.envoy.request("OPTIONS", "/mcp", headers={
        "origin": origin, "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type, mcp-protocol-version"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    challenged = single.envoy.request("POST", "/mcp", headers={"origin": origin})
    assert challenged.status_code == 401
    assert challenged.headers["access-control-allow-origin"] == origin
    assert "www-authenticate" in challenged.headers["access-control-expose-headers"].lower()
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/oauth-protected-resource/mcp"):
        response = requests.get(f"{single.origin}{path}", headers={"origin": origin},
                                verify=str(single.envoy.cert), timeout=10)
        assert response.headers.get("access-control-allow-origin") in (origin, "*")
        assert response.raw.headers.getlist("access-control-allow-origin").__len__() == 1
    token_preflight = single.envoy.request("OPTIONS", "/oauth/token", headers={
        "origin": origin, "access-control-request-method": "POST"})
    assert token_preflight.status_code == 200
