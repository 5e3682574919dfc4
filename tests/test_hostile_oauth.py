"""End to end: an attacker without an account cannot exhaust the OAuth facade.

Through a real Envoy, against the release binary: a consent form replayed, and a flood of fresh
consent forms, while a real user signs in, exchanges her code and refreshes. Memory is measured
(RSS of the authz process) with a generous margin; the exact figures come from `scripts/soak`.
"""

import concurrent.futures
import re
import secrets

import pytest
import requests

from browser import google_sign_in
from stack import ADA
from test_oauth import REDIRECT, OAuthStack, query_of

MAX_PENDING = 40


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = OAuthStack(tmp_path_factory.mktemp("hostile-oauth"), groups=False,
                   oauth_settings={"max_pending_sign_ins": MAX_PENDING})
    yield s
    s.close()


def rss_kib(stack) -> int:
    status = open(f"/proc/{stack.authz[0].process.popen.pid}/status").read()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))


def post_consent(stack, browser, fields) -> requests.Response:
    return browser.post(f"{stack.origin}/oauth/authorize", data={**fields, "decision": "allow"},
                        allow_redirects=False, timeout=10)


def test_a_replayed_consent_form_stores_one_sign_in(stack):
    client_id = stack.register()
    browser = stack.browser()
    url = stack.authorize_url(client_id, secrets.token_urlsafe(48))
    fields = stack.consent_form(browser, url)
    first = post_consent(stack, browser, fields)
    assert first.status_code == 303, first.text
    replays = [post_consent(stack, browser, fields) for _ in range(20)]
    assert {r.status_code for r in replays} == {400}, {r.status_code for r in replays}
    assert "already used" in replays[0].text
    # The first one still completes; after it, the form is still used up.
    back_at_us = google_sign_in(browser, first.headers["location"], ADA)
    to_client = browser.get(back_at_us, allow_redirects=False, timeout=10)
    assert to_client.status_code == 302 and "code" in query_of(to_client.headers["location"])
    again = post_consent(stack, browser, fields)
    assert again.status_code == 400 and "already used" in again.text
    issued = stack.tokens(client_id)
    assert stack.mcp_status(issued["access_token"]) == 200


def test_a_consent_flood_refuses_new_sign_ins_only_and_stays_bounded(stack):
    # A real user signed in before the flood: her refresh and code exchange must keep working.
    client_id = stack.register()
    issued = stack.tokens(client_id)
    verifier = secrets.token_urlsafe(48)
    code = stack.code_for(client_id, verifier)  # signed in, code not yet exchanged
    before = rss_kib(stack)

    attacker = stack.register(redirect_uris=[f"http://127.0.0.1:{p}/cb" for p in range(1, 9)],
                              client_name="x" * 80)
    long_state = "s" * 1000

    def one_flood_post(_):
        browser = stack.browser()  # a fresh cookie each time: the per-browser bound does not help
        url = stack.authorize_url(attacker, secrets.token_urlsafe(48), state=long_state,
                                  redirect_uri="http://127.0.0.1:1/cb")
        return post_consent(stack, browser, stack.consent_form(browser, url)).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one_flood_post, range(300)))
    assert statuses.count(303) <= MAX_PENDING, statuses.count(303)
    assert statuses.count(429) >= 300 - MAX_PENDING - 5

    # During the flood: refresh, code exchange and revocation are untouched.
    refreshed = stack.token(grant_type="refresh_token", refresh_token=issued["refresh_token"], client_id=client_id)
    assert refreshed.status_code == 200, refreshed.text
    exchanged = stack.token(grant_type="authorization_code", code=code, code_verifier=verifier,
                            redirect_uri=REDIRECT, client_id=client_id, resource=stack.resource)
    assert exchanged.status_code == 200, exchanged.text
    assert stack.mcp_status(exchanged.json()["access_token"]) == 200
    # A new sign-in is refused, with a page, until room frees up.
    browser = stack.browser()
    fields = stack.consent_form(browser, stack.authorize_url(client_id, secrets.token_urlsafe(48)))
    refused = post_consent(stack, browser, fields)
    assert refused.status_code == 429 and "location" not in refused.headers
    # Bounded memory: 300 posts of the largest sign-in an attacker can make, well under 20 MiB.
    grown = rss_kib(stack) - before
    assert grown < 20 * 1024, f"RSS grew by {grown} KiB"


def test_errors_before_consent_never_redirect(stack):
    client_id = stack.register()
    for overrides in ({"response_type": "token"}, {"code_challenge_method": "plain"},
                      {"resource": "https://elsewhere.example/mcp"}):
        response = stack.browser().get(stack.authorize_url(client_id, secrets.token_urlsafe(48), **overrides),
                                       allow_redirects=False)
        assert response.status_code == 400 and "location" not in response.headers, overrides
        link = re.search(r'<a href="([^"]+)"', response.text).group(1).replace("&amp;", "&")
        assert "error" in query_of(link)
