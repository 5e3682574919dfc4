"""End to end: the registrations and redirect URIs of real MCP clients, as they send them.

Each test replays one client's exact requests (from its public source, documentation or issue
tracker; README.md "Clients" lists the sources) through a real Envoy: VS Code (its metadata
document, and its dynamic registration as `native` with loopback and https redirects), Cursor
(a custom-scheme callback: refused by default, accepted once the operator lists it in
`oauth.redirect_schemes`), Claude (its web callbacks, and Claude Code's metadata document with a
port-less loopback redirect used on an ephemeral port), ChatGPT (its callbacks) and MCP
Inspector (its registration body). Every redirect the facade sends a browser is a 302 or 303,
never a 307 (Claude breaks on 307).

Metadata documents cannot be fetched from the clients' own hosts here, so a local https server
publishes each document under the same path at `https://localhost:PORT/...`, with that URL as
its `client_id` (as the document rules require); `client_metadata.allow_hosts` and `ca_file`
let authz fetch from it, the knobs an operator uses for internal hosts. Two stacks: one with the
defaults, one with `oauth.redirect_schemes` and `oauth.client_id_metadata_hosts` set.
"""

import datetime
import http.server
import ipaddress
import json
import secrets
import ssl
import threading
import urllib.parse

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from browser import google_sign_in
from stack import ADA, CONSUMER, free_port
from test_oauth import OAuthStack, query_of

CURSOR = "cursor://anysphere.cursor-mcp/oauth/callback"
CLAUDE_CALLBACKS = ["https://claude.ai/api/mcp/auth_callback", "https://claude.com/api/mcp/auth_callback"]
CHATGPT_CALLBACKS = ["https://chatgpt.com/connector_platform_oauth_redirect",
                     "https://chatgpt.com/connector/oauth/5f0c8a2e-7d1b-4c3a-9e6f-2b4d8a1c7e90"]
# VS Code's redirect URIs, in its dynamic registration and its metadata document.
VSCODE_REDIRECTS = ["https://insiders.vscode.dev/redirect", "https://vscode.dev/redirect",
                    "http://127.0.0.1/", "http://127.0.0.1:33418/"]
# What the stack with settings lists (the document server is on localhost).
LISTED_HOSTS = ["localhost", "claude.ai", "vscode.dev"]


class MetadataServer:
    """A local https server for client metadata documents, with a certificate for `localhost`
    and `127.0.0.1` from a CA made for this test (`ca_file`); counts requests per path."""

    def __init__(self, workdir):
        self.port = free_port()
        self.documents: dict[str, dict] = {}
        self.requests: dict[str, int] = {}
        self.ca_file, context = self._certificates(workdir)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests[self.path] = server.requests.get(self.path, 0) + 1
                document = server.documents.get(self.path)
                body = json.dumps(document).encode() if document else b"{}"
                self.send_response(200 if document else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _certificates(self, workdir):
        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client metadata test CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                           data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                           crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
              .sign(ca_key, hashes.SHA256()))
        leaf = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
                .issuer_name(ca_name).public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(ca_key, hashes.SHA256()))
        pem = serialization.Encoding.PEM
        ca_file, cert_file, key_file = workdir / "cimd-ca.pem", workdir / "cimd.crt", workdir / "cimd.key"
        ca_file.write_bytes(ca.public_bytes(pem))
        cert_file.write_bytes(leaf.public_bytes(pem))
        key_file.write_bytes(leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        return ca_file, context

    def publish(self, path: str, host: str = "localhost", **fields) -> str:
        """Publishes a document at `path`; returns its URL, which is its `client_id`."""
        client_id = f"https://{host}:{self.port}{path}"
        self.documents[path] = {"client_id": client_id, **fields}
        return client_id

    def config(self) -> str:
        return (f'[client_metadata]\nallow_hosts = ["localhost:{self.port}", "127.0.0.1:{self.port}"]\n'
                f'ca_file = "{self.ca_file}"\n'
                # Every test fetches from this one host: more than the default 10 a minute.
                "fetches_per_host_per_minute = 1000\n")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def documents(tmp_path_factory):
    server = MetadataServer(tmp_path_factory.mktemp("cimd"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def defaults(tmp_path_factory, documents):
    """The facade with its default client rules."""
    stack = OAuthStack(tmp_path_factory.mktemp("shapes-default"), groups=False, policy_extra=documents.config())
    yield stack
    stack.close()


@pytest.fixture(scope="module")
def configured(tmp_path_factory, documents):
    """Cursor's scheme allowed, and metadata documents only from the listed hosts."""
    stack = OAuthStack(tmp_path_factory.mktemp("shapes-configured"), groups=False, policy_extra=documents.config(),
                       oauth_settings={"redirect_schemes": '["cursor://anysphere.cursor-mcp"]',
                                       "client_id_metadata_hosts": json.dumps(LISTED_HOSTS)})
    yield stack
    stack.close()


# --- what a client does -------------------------------------------------------------------------

def register(stack, body: dict) -> requests.Response:
    return requests.post(f"{stack.origin}/oauth/register", json=body, verify=str(stack.envoy.cert), timeout=10)


def registered(stack, body: dict) -> dict:
    response = register(stack, body)
    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["redirect_uris"] == body["redirect_uris"]
    assert answer["token_endpoint_auth_method"] == "none" and "client_secret" not in answer
    return answer


def consent_page(stack, client_id: str, redirect_uri: str) -> requests.Response:
    url = stack.authorize_url(client_id, secrets.token_urlsafe(48), redirect_uri=redirect_uri)
    return stack.browser().get(url, allow_redirects=False, timeout=10)


def signs_in(stack, client_id: str, redirect_uri: str, email: str = ADA) -> dict:
    """The whole journey as the client and its user make it: authorization request, consent,
    Google, our callback, the client's redirect URI, the code exchanged, the token used.
    Returns the token response. Every redirect is a 303 (after the consent form) or a 302."""
    verifier = secrets.token_urlsafe(48)
    browser = stack.browser()
    fields = stack.consent_form(browser, stack.authorize_url(client_id, verifier, redirect_uri=redirect_uri))
    to_google = browser.post(f"{stack.origin}/oauth/authorize", data={**fields, "decision": "allow"},
                             allow_redirects=False, timeout=10)
    assert to_google.status_code == 303, to_google.text
    back_at_us = google_sign_in(browser, to_google.headers["location"], email)
    to_client = browser.get(back_at_us, allow_redirects=False, timeout=10)
    assert to_client.status_code == 302, (to_client.status_code, to_client.text)
    location = to_client.headers["location"]
    assert location.startswith(redirect_uri + "?"), location
    answer = query_of(location)
    assert answer["state"] == "client-state" and answer["iss"] == stack.origin, answer
    tokens = stack.token(grant_type="authorization_code", code=answer["code"], code_verifier=verifier,
                         redirect_uri=redirect_uri, client_id=client_id, resource=stack.resource)
    assert tokens.status_code == 200, tokens.text
    assert stack.mcp_status(tokens.json()["access_token"]) == 200
    return tokens.json()


def refused_page(response: requests.Response, text: str) -> None:
    assert response.status_code == 400, (response.status_code, response.text)
    assert "location" not in response.headers
    assert text in response.text, response.text


# --- VS Code ------------------------------------------------------------------------------------

def test_vscode_metadata_document(configured, documents):
    # VS Code's client id is https://vscode.dev/oauth/client-metadata.json (product.json,
    # microsoft/vscode#271403); its document lists the redirect URIs of its registration.
    client_id = documents.publish(
        "/oauth/client-metadata.json", client_name="Visual Studio Code", client_uri="https://code.visualstudio.com",
        application_type="native", redirect_uris=VSCODE_REDIRECTS, grant_types=["authorization_code", "refresh_token"],
        response_types=["code"], token_endpoint_auth_method="none")
    signs_in(configured, client_id, "http://127.0.0.1:33418/")
    # Port 33418 busy: a random loopback port (microsoft/vscode#278512), or the web redirect.
    for redirect_uri in ("http://127.0.0.1:51723/", "https://vscode.dev/redirect"):
        assert consent_page(configured, client_id, redirect_uri).status_code == 200, redirect_uri


def test_vscode_dynamic_registration_as_native(defaults):
    # VS Code's body (fetchDynamicRegistration): its grant types filtered by our metadata,
    # `application_type: native` although it lists https redirects too.
    metadata = requests.get(f"{defaults.origin}/.well-known/oauth-authorization-server",
                            verify=str(defaults.envoy.cert), timeout=10).json()
    vscode_grants = ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"]
    answer = registered(defaults, {
        "client_name": "Visual Studio Code", "client_uri": "https://code.visualstudio.com",
        "grant_types": [g for g in vscode_grants if g in metadata["grant_types_supported"]],
        "response_types": ["code"], "redirect_uris": VSCODE_REDIRECTS, "scope": "mcp",
        "token_endpoint_auth_method": "none", "application_type": "native"})
    assert answer["application_type"] == "native"
    signs_in(defaults, answer["client_id"], "http://127.0.0.1:33418/")
    signs_in(defaults, answer["client_id"], f"http://127.0.0.1:{free_port()}/")
    assert consent_page(defaults, answer["client_id"], "https://vscode.dev/redirect").status_code == 200
    # Another application type is refused as invalid metadata.
    response = register(defaults, {"redirect_uris": VSCODE_REDIRECTS, "application_type": "desktop"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_client_metadata", response.text


# --- Cursor -------------------------------------------------------------------------------------

CURSOR_REGISTRATION = {"client_name": "Cursor", "redirect_uris": [CURSOR], "token_endpoint_auth_method": "none",
                       "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"]}


def test_cursor_custom_scheme_is_refused_by_default_naming_the_setting(defaults):
    response = register(defaults, CURSOR_REGISTRATION)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["error"] == "invalid_redirect_uri"
    assert "oauth.redirect_schemes" in error["error_description"] and CURSOR in error["error_description"]


def test_cursor_custom_scheme_signs_in_when_listed(configured):
    answer = registered(configured, CURSOR_REGISTRATION)
    # The code goes back by a plain 302 to Cursor's scheme, which the OS hands to Cursor.
    signs_in(configured, answer["client_id"], CURSOR)
    # Only the listed scheme and host; never a scheme the browser runs.
    for uri in ("cursor://anysphere.cursor-mcp.evil.example/oauth/callback", "cursor://evil.example/cb",
                "vscode://anysphere.cursor-mcp/oauth/callback", "javascript://anysphere.cursor-mcp/%0aalert(1)"):
        response = register(configured, {**CURSOR_REGISTRATION, "redirect_uris": [uri]})
        assert response.status_code == 400 and response.json()["error"] == "invalid_redirect_uri", uri


def test_a_metadata_documents_custom_scheme_follows_the_setting(defaults, configured, documents):
    both = documents.publish("/cursor-like/client.json", client_name="Custom scheme client",
                             redirect_uris=[CURSOR, "http://127.0.0.1/callback"])
    only_custom = documents.publish("/cursor-only/client.json", client_name="Custom scheme client",
                                    redirect_uris=[CURSOR])
    # Default: the custom scheme is dropped, the loopback one still works.
    refused_page(consent_page(defaults, both, CURSOR), "not registered")
    assert consent_page(defaults, both, "http://127.0.0.1:40001/callback").status_code == 200
    refused_page(consent_page(defaults, only_custom, CURSOR), "oauth.redirect_schemes")
    # Listed: it is used.
    signs_in(configured, both, CURSOR)
    assert consent_page(configured, only_custom, CURSOR).status_code == 200


# --- Claude -------------------------------------------------------------------------------------

@pytest.mark.parametrize("callback", CLAUDE_CALLBACKS)
def test_claude_web_callbacks(defaults, callback):
    # Claude (claude.ai, claude.com, Desktop) registers per connection (DCR).
    answer = registered(defaults, {"client_name": "Claude", "redirect_uris": [callback],
                                   "grant_types": ["authorization_code", "refresh_token"],
                                   "response_types": ["code"], "token_endpoint_auth_method": "none"})
    signs_in(defaults, answer["client_id"], callback)


def test_claude_code_metadata_document_on_an_ephemeral_port(configured, documents):
    # https://claude.ai/oauth/claude-code-client-metadata lists port-less loopback URIs; the CLI
    # listens on an ephemeral port (anthropics/claude-code#37747, #42301). No application_type.
    client_id = documents.publish(
        "/oauth/claude-code-client-metadata", client_name="Claude Code",
        redirect_uris=["http://localhost/callback", "http://127.0.0.1/callback"],
        grant_types=["authorization_code", "refresh_token"], response_types=["code"],
        token_endpoint_auth_method="none")
    signs_in(configured, client_id, f"http://localhost:{free_port()}/callback")
    assert consent_page(configured, client_id, "http://127.0.0.1:8080/callback").status_code == 200
    refused_page(consent_page(configured, client_id, "http://localhost:8080/other"), "not registered")


# --- ChatGPT ------------------------------------------------------------------------------------

@pytest.mark.parametrize("callback", CHATGPT_CALLBACKS)
def test_chatgpt_callbacks(defaults, callback):
    answer = registered(defaults, {"client_name": "ChatGPT", "redirect_uris": [callback],
                                   "grant_types": ["authorization_code", "refresh_token"],
                                   "response_types": ["code"], "token_endpoint_auth_method": "none"})
    signs_in(defaults, answer["client_id"], callback)


# --- MCP Inspector ------------------------------------------------------------------------------

def test_mcp_inspector_registration(defaults):
    # InspectorOAuthClientProvider.clientMetadata: both callbacks, an empty scope when none is known.
    inspector = ["http://localhost:6274/oauth/callback", "http://localhost:6274/oauth/callback/debug"]
    answer = registered(defaults, {"redirect_uris": inspector, "token_endpoint_auth_method": "none",
                                   "grant_types": ["authorization_code", "refresh_token"],
                                   "response_types": ["code"], "client_name": "MCP Inspector",
                                   "client_uri": "https://github.com/modelcontextprotocol/inspector",
                                   "scope": ""})
    assert answer["client_name"] == "MCP Inspector" and answer["application_type"] == "web"
    signs_in(defaults, answer["client_id"], inspector[0])
    assert consent_page(defaults, answer["client_id"], inspector[1]).status_code == 200


# --- the operator's list of client-id hosts -----------------------------------------------------

def test_metadata_documents_only_from_listed_hosts_and_unfetched_otherwise(defaults, configured, documents):
    # The same server under a host name that is not listed (127.0.0.1).
    client_id = documents.publish("/unlisted/client.json", host="127.0.0.1", client_name="Unlisted host",
                                  redirect_uris=["http://127.0.0.1/callback"])
    refused_page(consent_page(configured, client_id, "http://127.0.0.1:40002/callback"), "not accepted here")
    refused_page(consent_page(configured, "https://evil.example/client.json", "http://127.0.0.1:1/cb"),
                 "not accepted here")
    assert documents.requests.get("/unlisted/client.json", 0) == 0, "fetched although the host is not listed"
    # Off by default: any host (still public only, or in client_metadata.allow_hosts).
    assert consent_page(defaults, client_id, "http://127.0.0.1:40002/callback").status_code == 200
    assert documents.requests["/unlisted/client.json"] == 1
    # The token endpoint refuses the unlisted client id too.
    refused = configured.token(grant_type="refresh_token", refresh_token="x", client_id=client_id)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"


# --- redirect status codes ----------------------------------------------------------------------

def test_every_redirect_is_302_or_303_never_307(defaults):
    callback = CLAUDE_CALLBACKS[0]
    client_id = registered(defaults, {"redirect_uris": [callback], "token_endpoint_auth_method": "none"})["client_id"]
    seen = []

    def consent(browser, decision):
        fields = defaults.consent_form(browser, defaults.authorize_url(client_id, secrets.token_urlsafe(48),
                                                                       redirect_uri=callback))
        answer = browser.post(f"{defaults.origin}/oauth/authorize", data={**fields, "decision": decision},
                              allow_redirects=False, timeout=10)
        seen.append(answer.status_code)
        return answer

    # Consent -> Google: 303 (after a form); Google -> us -> the client with a code: 302.
    signs_in(defaults, client_id, callback)
    # The user cancels on the consent page: 302 to the client with access_denied.
    cancelled = consent(defaults.browser(), "deny")
    assert cancelled.status_code == 302 and query_of(cancelled.headers["location"])["error"] == "access_denied"
    # Google says the user declined: 302 with access_denied.
    browser = defaults.browser()
    to_google = consent(browser, "allow")
    assert to_google.status_code == 303
    state = query_of(to_google.headers["location"])["state"]
    declined = browser.get(f"{defaults.origin}/oauth/callback?" + urllib.parse.urlencode(
        {"state": state, "error": "access_denied"}), allow_redirects=False, timeout=10)
    seen.append(declined.status_code)
    assert declined.status_code == 302 and declined.headers["location"].startswith(callback + "?")
    assert query_of(declined.headers["location"])["error"] == "access_denied"
    # The account is refused by the policy: 302 with access_denied.
    browser = defaults.browser()
    to_google = consent(browser, "allow")
    refused = browser.get(google_sign_in(browser, to_google.headers["location"], CONSUMER),
                          allow_redirects=False, timeout=10)
    seen.append(refused.status_code)
    assert refused.status_code == 302 and query_of(refused.headers["location"])["error"] == "access_denied"
    assert set(seen) <= {302, 303}, seen
