"""Sets up the compose dev profile's stand-in for Google (never for production): the Google web
client the OAuth facade signs users in through, and the demo accounts.

    python3 seed.py STANDIN_URL FACADE_ORIGIN

Runs in the authz-demo-mcp image as a one-shot compose service once the stand-in answers; the
stand-in keeps everything in memory, so this runs again whenever the profile starts.
"""

import json
import sys
import time
import urllib.request

# docker/dev/authz.toml names the same client; the secret is the stand-in's, not a real one.
GOOGLE_CLIENT_ID = "dev-client.apps.googleusercontent.com"
GOOGLE_CLIENT_SECRET = "dev-stand-in-secret"
DOMAIN = "example.com"
WORKSPACE_USERS = ["ada", "grace", "bob"]


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def main():
    standin, origin = sys.argv[1].rstrip("/"), sys.argv[2].rstrip("/")
    for _ in range(60):
        try:
            urllib.request.urlopen(f"{standin}/.well-known/openid-configuration", timeout=2).close()
            break
        except OSError:
            time.sleep(0.5)
    post(f"{standin}/_standin/oauth_client", {"client_id": GOOGLE_CLIENT_ID, "client_secret": GOOGLE_CLIENT_SECRET,
                                              "redirect_uris": [f"{origin}/oauth/callback"]})
    for user in WORKSPACE_USERS:
        post(f"{standin}/_standin/user", {"email": f"{user}@{DOMAIN}", "hd": DOMAIN, "email_verified": True})
    # A consumer account with the company's suffix: Google says no hd, so authz refuses it.
    post(f"{standin}/_standin/user", {"email": f"mallory@{DOMAIN}", "email_verified": True})
    print(f"stand-in ready: sign in at {origin} as ada@{DOMAIN}, grace@{DOMAIN} or bob@{DOMAIN}")


if __name__ == "__main__":
    main()
