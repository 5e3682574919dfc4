"""End to end: a real Envoy, the real authz binary, the Google stand-in, an echo upstream."""

import base64
import concurrent.futures
import http.client
import json
import ssl
import subprocess
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from stack import CLIENT_ID, DOMAIN, TARGET, Stack, wait_until

METADATA = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"


def upstream_headers(response) -> dict:
    """Headers the upstream received, as name -> list of values."""
    seen = {}
    for name, value in response.json()["headers"]:
        seen.setdefault(name, []).append(value)
    return seen


def audit_for(stack, response) -> dict:
    request_id = response.headers["x-request-id"]
    return wait_until(
        lambda: next((e for e in stack.authz.audit_events() if e.get("request_id") == request_id), None),
        timeout=5, what=f"audit event {request_id}",
    )


def test_valid_id_token_passes_with_identity_and_without_authorization(stack):
    token = stack.standin.id_token()
    response = stack.envoy.request(token=token)
    assert response.status_code == 200, response.text
    seen = upstream_headers(response)
    assert seen["x-auth-request-email"] == [f"ada@{DOMAIN}"]
    assert seen["x-auth-request-user"] == ["110169484474386276334"]
    assert "authorization" not in seen
    event = audit_for(stack, response)
    assert event["decision"] == "allow" and event["domain"] == DOMAIN
    assert event["token_kind"] == "google_id_token"


def test_valid_access_token_passes(stack):
    token = stack.standin.access_token(sub="42", email=f"grace@{DOMAIN}")
    response = stack.envoy.request(method="POST", token=token, json={"jsonrpc": "2.0"})
    assert response.status_code == 200, response.text
    seen = upstream_headers(response)
    assert seen["x-auth-request-email"] == [f"grace@{DOMAIN}"]
    assert seen["x-auth-request-user"] == ["42"]
    assert "authorization" not in seen
    assert audit_for(stack, response)["token_kind"] == "google_access_token"


def test_spoofed_identity_headers_never_reach_upstream(stack):
    spoof = {"x-auth-request-email": "ceo@example.com", "x-auth-request-user": "1"}
    response = stack.envoy.request(token=stack.standin.id_token(), headers=spoof)
    assert response.status_code == 200
    seen = upstream_headers(response)
    assert seen["x-auth-request-email"] == [f"ada@{DOMAIN}"]
    assert seen["x-auth-request-user"] == ["110169484474386276334"]
    # Repeated spoofed headers are all replaced by the one true value.
    response = stack.envoy.request(
        token=stack.standin.access_token(sub="7"),
        headers={"x-auth-request-user": "1, 2", "X-Auth-Request-Email": "a@b.c"},
    )
    assert upstream_headers(response)["x-auth-request-user"] == ["7"]
    assert upstream_headers(response)["x-auth-request-email"] == [f"ada@{DOMAIN}"]


def test_missing_token_is_401_with_resource_metadata(stack):
    response = stack.envoy.request()
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == f'Bearer resource_metadata="{METADATA}"'
    assert response.json()["error"] == "unauthorized"
    assert audit_for(stack, response)["reason"] == "missing_token"


def foreign_key_token(kid: str) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"iss": "x", "aud": CLIENT_ID, "sub": "1", "iat": now, "exp": now + 600}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def unsigned(header: dict, claims: dict, signature: bytes = b"") -> str:
    part = lambda obj: base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    sig = base64.urlsafe_b64encode(signature).rstrip(b"=").decode() or "AA"
    return f"{part(header)}.{part(claims)}.{sig}"


def current_kid(stack) -> str:
    return jwt.get_unverified_header(stack.standin.id_token())["kid"]


NOW = int(time.time())
ID_TOKEN_CASES = [
    # (name, claim overrides, status, reason)
    ("expired", {"exp": NOW - 3600, "iat": NOW - 7200}, 401, "expired"),
    ("wrong audience", {"aud": "someone-else.apps.googleusercontent.com"}, 401, "wrong_audience"),
    ("wrong azp", {"azp": "someone-else.apps.googleusercontent.com"}, 401, "wrong_azp"),
    ("wrong issuer", {"iss": "https://evil.example"}, 401, "wrong_issuer"),
    ("issued in the future", {"iat": NOW + 3600, "exp": NOW + 7200}, 401, "not_yet_valid"),
    ("no exp", {"exp": None}, 401, "missing_claim"),
    ("email not verified", {"email_verified": False}, 403, "email_not_verified"),
    ("consumer account with company email", {"hd": None}, 403, "no_hosted_domain"),
    ("other workspace", {"hd": "evil.example"}, 403, "domain_not_allowed"),
]


@pytest.mark.parametrize("name,overrides,status,reason", ID_TOKEN_CASES, ids=[c[0] for c in ID_TOKEN_CASES])
def test_id_token_rejections(stack, name, overrides, status, reason):
    response = stack.envoy.request(token=stack.standin.id_token(**overrides))
    assert response.status_code == status, response.text
    challenge = response.headers.get("www-authenticate")
    if status == 401:
        assert challenge == f'Bearer resource_metadata="{METADATA}", error="invalid_token"'
        assert response.json()["error"] == "invalid_token"
    else:
        assert challenge is None
        assert response.json()["error"] == "access_denied"
    assert audit_for(stack, response)["reason"] == reason
    assert not stack.upstream.requests or stack.upstream.requests[-1].get("path") != "never"


def test_forged_and_malformed_tokens_are_401(stack):
    kid = current_kid(stack)
    now = int(time.time())
    claims = {"iss": stack.standin.url, "aud": CLIENT_ID, "sub": "1", "hd": DOMAIN,
              "email_verified": True, "iat": now, "exp": now + 600}
    hs256 = jwt.encode(claims, "secret" * 8, algorithm="HS256", headers={"kid": kid})
    cases = [
        (foreign_key_token(kid), "bad_signature"),
        (foreign_key_token("unknown-kid"), "unknown_kid"),
        (unsigned({"alg": "none", "kid": kid}, claims), "unsupported_algorithm"),
        (hs256, "unsupported_algorithm"),
        (unsigned({"alg": "RS256"}, claims), "missing_kid"),
        ("aGVsbG8.d29ybGQ.Zm9v", "malformed_token"),
        ("x" * 16384, "token_too_long"),
    ]
    before = len(stack.upstream.requests)
    for token, reason in cases:
        response = stack.envoy.request(token=token)
        assert response.status_code == 401, (reason, response.text)
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        assert audit_for(stack, response)["reason"] == reason
    # 64 KiB exceeds Envoy's own header limit: Envoy answers 431 before asking us (authz's own
    # handling of a 64 KiB token is covered by the Check unit tests).
    assert stack.envoy.request(token="x" * 65536).status_code == 431
    assert len(stack.upstream.requests) == before, "a rejected request reached the upstream"


def test_non_utf8_authorization_header_is_401(stack):
    context = ssl.create_default_context(cafile=str(stack.envoy.cert))
    conn = http.client.HTTPSConnection("localhost", stack.envoy.port, context=context, timeout=10)
    conn.putrequest("GET", "/mcp")
    conn.putheader("authorization", b"Bearer \xff\xfe\xfd")
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 401
    assert 'error="invalid_token"' in response.getheader("www-authenticate")
    conn.close()


def test_token_in_query_string_is_refused(stack):
    token = stack.standin.id_token()
    response = stack.envoy.request(path=f"/mcp?access_token={token}")
    assert response.status_code == 400
    assert 'error="invalid_request"' in response.headers["www-authenticate"]
    # Even alongside a valid header: the token must not travel in URLs.
    response = stack.envoy.request(path=f"/mcp?access_token={token}", token=token)
    assert response.status_code == 400


ACCESS_TOKEN_CASES = [
    ("expired", {"expires_in": -10}, 401, "rejected_by_google"),
    ("other client's token", {"aud": "other.apps.googleusercontent.com", "azp": "other.apps.googleusercontent.com"}, 401, "wrong_audience"),
    ("consumer account with company email", {"hd": None}, 403, "no_hosted_domain"),
    ("email not verified", {"email_verified": False}, 403, "email_not_verified"),
    ("other workspace", {"hd": "evil.example"}, 403, "domain_not_allowed"),
]


@pytest.mark.parametrize("name,overrides,status,reason", ACCESS_TOKEN_CASES, ids=[c[0] for c in ACCESS_TOKEN_CASES])
def test_access_token_rejections(stack, name, overrides, status, reason):
    response = stack.envoy.request(token=stack.standin.access_token(**overrides))
    assert response.status_code == status, response.text
    assert audit_for(stack, response)["reason"] == reason


def test_unknown_access_token_is_401(stack):
    response = stack.envoy.request(token="ya29.not-a-token-google-ever-issued")
    assert response.status_code == 401
    assert audit_for(stack, response)["reason"] == "rejected_by_google"


@pytest.mark.parametrize("mode", ["error", "hang", "garbage", "reset", "empty"])
def test_google_outage_is_503_and_recovers_without_restart(stack, mode):
    cached = stack.standin.access_token(sub="cached")
    assert stack.envoy.request(token=cached).status_code == 200
    fresh = stack.standin.access_token(sub=f"fresh-{mode}")
    stack.standin.fault(mode, endpoints=["tokeninfo", "userinfo"])
    try:
        response = stack.envoy.request(token=fresh)
        assert response.status_code == 503, response.text
        assert "www-authenticate" not in response.headers
        # A verdict cached before the outage keeps working until it expires.
        assert stack.envoy.request(token=cached).status_code == 200
    finally:
        stack.standin.fault("ok")
    # The outage was not cached: the same token passes as soon as Google answers again.
    assert stack.envoy.request(token=fresh).status_code == 200


def test_fifty_concurrent_requests_cost_one_tokeninfo_call(stack):
    token = stack.standin.access_token(sub="burst")
    stack.standin.reset_stats()
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(lambda _: stack.envoy.request(token=token).status_code, range(50)))
    assert statuses == [200] * 50
    stats = stack.standin.stats()
    assert stats["tokeninfo"] == 1, stats
    assert stats["userinfo"] == 1, stats


def test_key_rotation_works_without_restart_and_kid_spray_is_rate_limited(stack):
    time.sleep(2.1)  # past the test config's 2 s refetch interval since any earlier fetch
    stack.standin.rotate(keep_old=True)
    stack.standin.reset_stats()
    response = stack.envoy.request(token=stack.standin.id_token())
    assert response.status_code == 200, response.text
    assert stack.standin.stats()["jwks"] == 1
    # A spray of unknown kids right after may not cause a fetch storm.
    tokens = [stack.standin.id_token(kid=f"random-{i}") for i in range(40)]
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        statuses = list(pool.map(lambda t: stack.envoy.request(token=t).status_code, tokens))
    assert set(statuses) == {401}
    assert stack.standin.stats()["jwks"] <= 2, stack.standin.stats()


def test_health_routes_skip_ext_authz(stack):
    assert stack.envoy.request(path="/healthz").status_code == 200
    ready = stack.envoy.request(path="/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_authz_down_fails_closed_and_recovers(stack):
    token = stack.standin.id_token()
    before = len(stack.upstream.requests)
    assert stack.authz.process.stop() == 0, "SIGTERM must drain and exit cleanly"
    try:
        response = stack.envoy.request(token=token)
        assert response.status_code == 503
        assert len(stack.upstream.requests) == before
    finally:
        stack.authz.start()
    wait_until(lambda: stack.envoy.request(token=token).status_code == 200, what="recovery")


def test_error_response_mode_gives_a_json_503(tmp_path):
    stack = Stack(tmp_path, outage_response="error-response")
    try:
        stack.standin.fault("error", endpoints=["tokeninfo"])
        response = stack.envoy.request(token=stack.standin.access_token())
        assert response.status_code == 503
        assert response.json()["error"] == "temporarily_unavailable"
        assert response.headers["retry-after"] == "5"
    finally:
        stack.close()


def run_authz(*args, env=None):
    return subprocess.run([str(TARGET / "authz"), *args], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", **(env or {})}, timeout=10)


def test_check_config(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(f'[google]\nclient_ids = ["{CLIENT_ID}"]\n[access]\ndomains = ["{DOMAIN}"]\n'
                    '[resource]\nurl = "https://mcp.example.com/mcp"\n')
    ok = run_authz("--config", str(good), "--check-config")
    assert ok.returncode == 0 and ok.stdout.strip() == "config ok"

    bad = run_authz("--config", str(good), "--check-config", env={"AUTHZ_CACHE__ALLOW_TTL": "soon"})
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("config: cache.allow_ttl:") and "\n" not in bad.stderr.strip()

    # A bad config never starts listening (no partial start): it exits 2 straight away.
    port = __import__("stack").free_port()
    started = run_authz("--config", str(good), env={"AUTHZ_LISTEN__GRPC": f"127.0.0.1:{port}",
                                                    "AUTHZ_ACCESS__DOMAINS": "not a domain"})
    assert started.returncode == 2 and "config: access.domains:" in started.stderr

    env_only = run_authz("--check-config", env={"AUTHZ_GOOGLE__CLIENT_IDS": CLIENT_ID,
                                                "AUTHZ_ACCESS__DOMAINS": DOMAIN,
                                                "AUTHZ_RESOURCE__URL": "https://mcp.example.com/mcp"})
    assert env_only.returncode == 0, env_only.stderr


def test_no_token_ever_reaches_the_logs(stack):
    tokens = [
        stack.standin.id_token(),
        stack.standin.id_token(aud="other"),
        stack.standin.id_token(hd="evil.example"),
        stack.standin.access_token(),
        stack.standin.access_token(hd=None),
        "ya29.junk-token-that-google-never-issued",
        foreign_key_token("nope"),
    ]
    for token in tokens:
        stack.envoy.request(token=token)
    stack.standin.fault("error", endpoints=["tokeninfo"])
    try:
        stack.envoy.request(token=stack.standin.access_token(sub="outage"))
    finally:
        stack.standin.fault("ok")
    log = stack.authz.process.log()
    assert '"decision"' in log
    # Not a token, not a prefix, not a signature: every JWT starts with "eyJ".
    assert "eyJ" not in log
    assert "ya29." not in log
    for token in tokens:
        assert token[-16:] not in log
