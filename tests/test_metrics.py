"""End to end: `/metrics` on authz's HTTP listener counts what Envoy sent, names nobody, and is
not reachable through Envoy's public listener."""

import re

import requests

from stack import DOMAIN

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def scrape(stack) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{stack.authz.http_port}/metrics", timeout=5)


def samples(text: str) -> dict[str, float]:
    """`name{labels}` -> value, for every sample line."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            found[series] = float(value)
    return found


def decisions(text: str, decision: str) -> float:
    pattern = re.compile(r'^authz_decisions_total\{decision="%s",' % decision)
    return sum(v for k, v in samples(text).items() if pattern.match(k))


def test_metrics_count_decisions_without_names_or_tokens(stack):
    before = scrape(stack).text
    allowed_token = stack.standin.id_token()
    outsider_email = "mallory@outsider.test"
    outsider_token = stack.standin.id_token(email=outsider_email, hd="outsider.test")

    assert stack.envoy.request(token=allowed_token).status_code == 200
    assert stack.envoy.request().status_code == 401
    assert stack.envoy.request(token=outsider_token).status_code == 403

    response = scrape(stack)
    assert response.status_code == 200
    assert response.headers["content-type"] == OPENMETRICS
    text = response.text
    assert text.endswith("# EOF\n")
    for kind in ("allow", "unauthenticated", "forbidden"):
        assert decisions(text, kind) >= decisions(before, kind) + 1, kind
    after = samples(text)
    assert after['authz_decisions_total{decision="forbidden",reason="domain_not_allowed",cache="miss"}'] >= 1
    assert after['authz_decisions_total{decision="unauthenticated",reason="missing_token",cache="bypass"}'] >= 1
    assert after["authz_check_duration_seconds_count"] >= samples(before).get(
        "authz_check_duration_seconds_count", 0) + 3
    assert after['authz_google_requests_total{endpoint="jwks",outcome="ok"}'] >= 1
    assert after['authz_google_requests_total{endpoint="discovery",outcome="ok"}'] == 1
    assert after['authz_cache_requests_total{cache="identity",result="miss"}'] >= 2
    assert 'authz_build_info{version="' in text
    for secret in (allowed_token, outsider_token, f"ada@{DOMAIN}", outsider_email, DOMAIN):
        assert secret not in text


def test_metrics_are_not_served_through_envoy(stack):
    # Envoy routes only /healthz, /readyz and /.well-known/ to authz's HTTP port; /metrics goes
    # to the upstream like any MCP path (here the echo server, which answers with the request).
    response = stack.envoy.request(path="/metrics", token=stack.standin.id_token())
    assert response.status_code == 200
    assert response.json()["path"] == "/metrics"
    assert "authz_decisions_total" not in response.text
    # Without a token it is a 401 from ext_authz, not metrics either.
    response = stack.envoy.request(path="/metrics")
    assert response.status_code == 401
    assert "authz_" not in response.text
