"""Connect to an MCP server behind authz with the official Python SDK, sign in, list the tools.

    python demo/connect.py https://localhost:8443/grafana/mcp --cafile "$D/cert.pem"

The SDK finds the sign-in from the server's 401, registers, and hands us the consent page's
URL: open it in a browser (it is printed too). The browser comes back to a one-shot listener on
127.0.0.1:33418 with the code. Tokens are kept in memory only.
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import ssl
import threading
import urllib.parse
import webbrowser

import httpx2
from mcp.client.auth import OAuthClientProvider
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

CALLBACK = ("127.0.0.1", 33418)


class Memory:
    """Where the SDK keeps its registration and tokens (a real client would use a file)."""

    tokens = client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


def wait_for_redirect() -> dict:
    """Serves one request on CALLBACK and returns its query (code, state, iss)."""
    answer: dict = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the standard library's name
            answer.update(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"Signed in. You can close this window.\n")

        def log_message(self, *args):
            pass

    with http.server.HTTPServer(CALLBACK, Handler) as server:
        server.handle_request()
    return answer


async def main(url: str, cafile: str | None) -> None:
    async def open_browser(consent_url: str) -> None:
        print(f"Sign in: {consent_url}", flush=True)
        threading.Thread(target=webbrowser.open, args=(consent_url,), daemon=True).start()

    async def wait_for_code() -> AuthorizationCodeResult:
        query = await asyncio.to_thread(wait_for_redirect)
        if "error" in query:
            raise SystemExit(f"sign-in refused: {query.get('error_description', query['error'])}")
        return AuthorizationCodeResult(code=query["code"], state=query.get("state"), iss=query.get("iss"))

    auth = OAuthClientProvider(
        server_url=url, storage=Memory(), redirect_handler=open_browser, callback_handler=wait_for_code,
        client_metadata=OAuthClientMetadata(
            client_name="authz demo client", redirect_uris=[f"http://{CALLBACK[0]}:{CALLBACK[1]}/callback"],
            grant_types=["authorization_code", "refresh_token"], response_types=["code"],
            token_endpoint_auth_method="none"))
    tls = ssl.create_default_context(cafile=cafile)
    async with httpx2.AsyncClient(auth=auth, verify=tls, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as mcp:
                await mcp.discover()  # MCP 2026-07-28, which servers with tool rules require
                tools = await mcp.list_tools()
                print("tools:", ", ".join(tool.name for tool in tools.tools), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the MCP server's URL, as in [[resources]]")
    parser.add_argument("--cafile", help="a CA to trust (the dev stack's self-signed certificate)")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.url, arguments.cafile))
