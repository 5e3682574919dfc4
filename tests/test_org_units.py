"""End to end: a policy that admits only active accounts of given organizational units.

The Directory API's `users.get` (at the Google stand-in, with the service account's delegated
token) says whether an account is suspended or archived and where it sits; the answer is cached
like a group membership. Through a real Envoy, with Google ID tokens.
"""

import json

import pytest

from stack import DIRECTORY_SCOPE, DOMAIN, Stack, demo_workspace, mcp_body, mcp_headers, wait_until

USER_SCOPE = "https://www.googleapis.com/auth/admin.directory.user.readonly"
ADA, GRACE, BOB, DAVE, ERIN = (f"{name}@{DOMAIN}" for name in ("ada", "grace", "bob", "dave", "erin"))
# The default policy: active accounts of /Engineering (and below) only.
POLICY = '[policies.default]\norg_units = ["/Engineering"]\n'


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("org-units")
    workspace = demo_workspace(workdir, {"positive_ttl": "1m", "negative_ttl": "1m", "refresh_ahead": "0s"},
                               scopes=(DIRECTORY_SCOPE, USER_SCOPE))

    def before_authz(standin):
        settings = workspace(standin)
        settings["extra_config"] += POLICY
        standin.add_user(ADA, hd=DOMAIN, org_unit="/Engineering/SRE")
        standin.add_user(GRACE, hd=DOMAIN, org_unit="/Sales")
        standin.add_user(BOB, hd=DOMAIN, org_unit="/Engineering", archived=True)
        standin.add_user(ERIN, hd=DOMAIN, org_unit="/Engineering-Contractors")
        return settings

    s = Stack(workdir, upstream="mcp", before_authz=before_authz, allow_ttl="1m", deny_ttl="1s")
    yield s
    s.close()


def status(stack, email: str) -> int:
    token = stack.standin.user_id_token(email)
    body = json.dumps(mcp_body("tools/list"))
    return stack.envoy.request(method="POST", path="/mcp", token=token, data=body,
                               headers=mcp_headers("tools/list")).status_code


def test_only_active_accounts_of_the_units_are_admitted(stack):
    assert status(stack, ADA) == 200  # a sub-unit of /Engineering
    assert status(stack, GRACE) == 403  # another unit
    assert status(stack, BOB) == 403  # archived
    assert status(stack, ERIN) == 403  # a look-alike unit name, not a sub-unit
    assert status(stack, DAVE) == 403  # not an account of the tenant: users.get is a 404
    # Cached like memberships: asking again costs no Directory call.
    before = stack.standin.stats()["directory_users_get"]
    assert [status(stack, email) for email in (ADA, GRACE, BOB)] == [200, 403, 403]
    assert stack.standin.stats()["directory_users_get"] == before


def test_a_suspended_account_is_refused_on_the_check_once_invalidated(stack):
    assert status(stack, ADA) == 200
    stack.standin.add_user(ADA, hd=DOMAIN, org_unit="/Engineering/SRE", suspended=True)
    try:
        # The cached answers hold (1 minute) until the operator off-boards her.
        assert status(stack, ADA) == 200
        result = stack.authz.admin("invalidate-user", ADA)
        assert result.returncode == 0, result.stderr
        assert status(stack, ADA) == 403
    finally:
        stack.standin.add_user(ADA, hd=DOMAIN, org_unit="/Engineering/SRE")
        stack.authz.admin("invalidate-user", ADA)
    wait_until(lambda: status(stack, ADA) == 200, timeout=3, what="reinstated")


def test_a_directory_outage_is_a_503_not_a_denial(stack):
    stack.standin.fault("error", status=503, endpoints=["directory"])
    try:
        assert status(stack, "frank@" + DOMAIN) == 503
    finally:
        stack.standin.fault("ok")
