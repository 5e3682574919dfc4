"""The compose dev profile from the host, as a newcomer uses it: `docker-compose --profile dev up`
on chosen ports, then the README's client (demo/connect.py, the official SDK) signs in through
the OAuth facade, with the browser going to the stand-in's published sign-in page, and lists
the tools. Uses the images scripts/build-images made (scripts/test builds them first)."""

import os
import re
import secrets
import shutil
import subprocess

import pytest
import requests

from browser import google_sign_in
from stack import ROOT, free_port, run_connect_script, wait_until

pytestmark = pytest.mark.skipif(shutil.which("docker-compose") is None, reason="needs docker-compose")


def images_present() -> bool:
    names = ["authz:local", "authz-envoy:local", "authz-standin:local", "authz-demo-mcp:local"]
    return all(subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0
               for name in names)


@pytest.fixture(scope="module")
def compose(tmp_path_factory):
    if not images_present():
        pytest.fail("the local images are missing: run scripts/build-images (scripts/test does)")
    https, standin = free_port(), free_port()
    project = f"authzpy{secrets.token_hex(4)}"
    env = {**os.environ, "AUTHZ_HTTPS_PORT": str(https), "AUTHZ_STANDIN_PORT": str(standin)}

    def run(*args, check=True):
        return subprocess.run(["docker-compose", "-f", "compose.yaml", "-p", project, *args], cwd=ROOT,
                              env=env, capture_output=True, text=True, check=check, timeout=300)

    try:
        run("--profile", "dev", "up", "-d")
        origin = f"https://localhost:{https}"
        cert = tmp_path_factory.mktemp("compose") / "dev.crt"
        cert.write_text(subprocess.run(
            ["docker", "run", "--rm", "-v", f"{project}_dev-tls:/tls:ro", "authz-demo-mcp:local", "-c",
             "print(open('/tls/tls.crt').read(), end='')"], capture_output=True, text=True, check=True).stdout)

        def refuses_anonymous():
            return requests.get(f"{origin}/mcp", verify=str(cert), timeout=5).status_code == 401

        wait_until(refuses_anonymous, timeout=90, what="the compose dev stack")
        yield origin, cert, standin
    finally:
        logs = run("--profile", "dev", "logs", "--no-color", check=False).stdout
        run("--profile", "dev", "down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
        print(logs[-4000:])


def test_up_without_a_profile_says_what_to_do():
    project = f"authzpy{secrets.token_hex(4)}"
    args = ["docker-compose", "-f", "compose.yaml", "-p", project]
    try:
        up = subprocess.run([*args, "up"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        said = up.stdout + up.stderr
        assert "choose a profile: docker-compose --profile dev up" in said, said
        created = subprocess.run(
            ["docker", "ps", "--all", "--filter", f"label=com.docker.compose.project={project}",
             "--format", '{{.Label "com.docker.compose.service"}}'], capture_output=True, text=True).stdout
        assert created.split() == ["help"], created
    finally:
        subprocess.run([*args, "down", "--remove-orphans", "--timeout", "5"], cwd=ROOT, capture_output=True)


def test_a_client_on_the_host_signs_in_through_the_facade(compose):
    origin, cert, standin = compose
    metadata = requests.get(f"{origin}/.well-known/oauth-protected-resource/mcp", verify=str(cert), timeout=5).json()
    assert metadata["resource"] == f"{origin}/mcp" and metadata["authorization_servers"] == [origin]

    def sign_in(url: str) -> str:
        browser = requests.Session()
        browser.trust_env = False
        browser.verify = str(cert)
        consent = browser.get(url, timeout=10)
        assert consent.status_code == 200, consent.text
        fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', consent.text))
        to_google = browser.post(f"{origin}/oauth/authorize", data={**fields, "decision": "allow"},
                                 allow_redirects=False, timeout=10)
        assert to_google.status_code == 303, to_google.text
        # The browser is sent to the stand-in's published port, not to the containers' name.
        assert to_google.headers["location"].startswith(f"http://localhost:{standin}/"), to_google.headers
        back = google_sign_in(browser, to_google.headers["location"], "ada@example.com")
        assert back.startswith(f"{origin}/oauth/callback?"), back
        to_client = browser.get(back, allow_redirects=False, timeout=10)
        assert to_client.status_code == 302, to_client.text
        return to_client.headers["location"]

    out = run_connect_script(f"{origin}/mcp", cert, sign_in)
    assert "whoami" in out and "list_dashboards" in out, out
