"""A test browser for Google's sign-in as the stand-in plays it: open the authorization URL, fill
in the account chooser's form as a person would, and hand back where Google sends the browser.
"""

from __future__ import annotations

import html.parser
import urllib.parse

import requests


class _Page(html.parser.HTMLParser):
    """The first form of a page (action, method, named inputs) and the page's text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.action: str | None = None
        self.method = "get"
        self.inputs: dict[str, str] = {}
        self.text: list[str] = []
        self._in_form = False
        self._form_seen = False

    def handle_starttag(self, tag, attrs):
        attrs = {name: value or "" for name, value in attrs}
        if tag == "form" and not self._form_seen:
            self._in_form = self._form_seen = True
            self.action = attrs.get("action", "")
            self.method = attrs.get("method", "get").lower()
        elif tag == "input" and self._in_form and attrs.get("name"):
            self.inputs[attrs["name"]] = attrs.get("value", "")

    def handle_endtag(self, tag):
        if tag == "form":
            self._in_form = False

    def handle_data(self, data):
        if data.strip():
            self.text.append(data.strip())


def _parse(body: str) -> _Page:
    page = _Page()
    page.feed(body)
    page.close()
    return page


def _describe(response: requests.Response) -> str:
    text = " | ".join(_parse(response.text).text) if "html" in response.headers.get("content-type", "") \
        else response.text
    location = response.headers.get("location")
    return f"HTTP {response.status_code}" + (f" -> {location}" if location else "") + f": {text[:500]}"


def google_sign_in(session: requests.Session, authorize_url: str, email: str) -> str:
    """Signs `email` in at the stand-in's authorization URL with `session` as the browser, and
    returns the `Location` Google redirects the browser to: the relying party's redirect URI
    with `code` and `state`, or with `error` and `state` when Google refuses the authorization
    request itself. Raises AssertionError, with the page's text, when there is neither a
    redirect nor an account chooser (an error page), or no redirect after choosing."""
    chooser = session.get(authorize_url, allow_redirects=False, timeout=10)
    if chooser.is_redirect and chooser.headers.get("location"):
        # Google refused the request and sends the browser straight back with `error=...`.
        return urllib.parse.urljoin(authorize_url, chooser.headers["location"])
    if chooser.status_code != 200:
        raise AssertionError(f"no sign-in page at {authorize_url}: {_describe(chooser)}")
    page = _parse(chooser.text)
    if page.action is None or page.method != "post" or "request" not in page.inputs \
            or "email" not in page.inputs:
        raise AssertionError(f"no sign-in form at {authorize_url}: {_describe(chooser)}")
    fields = dict(page.inputs, email=email)
    action = urllib.parse.urljoin(chooser.url, page.action)
    answer = session.post(action, data=fields, allow_redirects=False, timeout=10)
    location = answer.headers.get("location")
    if answer.status_code not in (301, 302, 303, 307, 308) or not location:
        raise AssertionError(f"signing in {email} did not redirect: {_describe(answer)}")
    return urllib.parse.urljoin(action, location)
