"""The Envoy configs that are not run by the end-to-end tests: validated by the real Envoy binary.

envoy/compose.yaml (the compose stack) must also stay envoy/local.yaml with the compose names
filled in, so that what the end-to-end tests prove about local.yaml holds for compose too.
Every HttpConnectionManager of every config in envoy/ carries the path and header hardening
(tests/test_hostile_envoy.py shows what it does).
"""

import json
import re
import string
import subprocess
import sys

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from stack import ROOT, TARGET, envoy_binary, self_signed_cert

COMPOSE_VALUES = {
    "ADMIN_PORT": 9901, "LISTEN_ADDRESS": "0.0.0.0", "LISTEN_PORT": 8443,
    "TLS_CERT": "/etc/envoy/tls/tls.crt", "TLS_KEY": "/etc/envoy/tls/tls.key",
    "AUTHZ_HOST": "authz", "AUTHZ_GRPC_PORT": 9191, "AUTHZ_HTTP_PORT": 9192,
    "UPSTREAM_HOST": "mcp", "UPSTREAM_PORT": 8000,
}

# envoy/bench/*.yaml: `${NAME}` placeholders, filled in by the benchmark with plain string
# replacement (JWKS is the JWKS document as a double-quoted JSON string).
BENCH_VALUES = {
    "ADMIN_PORT": 9901, "LISTEN_PORT": 10000, "AUTHZ_GRPC_PORT": 9191,
    "ISSUER": "http://127.0.0.1:8080", "AUDIENCE": "test-client.apps.googleusercontent.com",
}

HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def bench_values() -> dict:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**json.loads(RSAAlgorithm.to_jwk(key.public_key())), "kid": "k1", "alg": "RS256", "use": "sig"}
    return {**BENCH_VALUES, "JWKS": json.dumps(json.dumps({"keys": [jwk]}))}


def fill(text: str, values: dict) -> str:
    """The bench's rendering: replaces every `${NAME}`, fails on a name it has no value for."""
    return re.sub(r"\$\{(\w+)\}", lambda m: str(values[m.group(1)]), text)


def envoy_configs() -> dict:
    """Every Envoy config under envoy/, as Envoy would get it: name -> YAML text."""
    configs = {}
    for path in sorted((ROOT / "envoy").rglob("*.yaml")):
        name = str(path.relative_to(ROOT / "envoy"))
        text = path.read_text()
        if name == "local.yaml":
            text = string.Template(text).substitute(COMPOSE_VALUES)
        elif name.startswith("bench/"):
            text = fill(text, {**BENCH_VALUES, "JWKS": '"{}"'})
        configs[name] = text
    return configs


def connection_managers(node):
    """Every HttpConnectionManager config in a parsed Envoy config, wherever it sits."""
    if isinstance(node, dict):
        if node.get("@type") == HCM_TYPE:
            yield node
        for value in node.values():
            yield from connection_managers(value)
    elif isinstance(node, list):
        for value in node:
            yield from connection_managers(value)


# authz picks its policy by the path Envoy hands it, so that must be the path the upstream reads;
# and an upstream folding `_` into `-` must never see a client's `x_auth_request_email`.
HARDENING = {
    "normalize_path": True,
    "merge_slashes": True,
    "path_with_escaped_slashes_action": "REJECT_REQUEST",
    "headers_with_underscores_action": "REJECT_REQUEST",
}


def hardening_of(hcm: dict) -> dict:
    return {
        "normalize_path": hcm.get("normalize_path"),
        "merge_slashes": hcm.get("merge_slashes"),
        "path_with_escaped_slashes_action": hcm.get("path_with_escaped_slashes_action"),
        "headers_with_underscores_action":
            (hcm.get("common_http_protocol_options") or {}).get("headers_with_underscores_action"),
    }


def validate(config_text: str, workdir) -> subprocess.CompletedProcess:
    path = workdir / "envoy.yaml"
    path.write_text(config_text)
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True, text=True, timeout=120,
    )


def test_compose_and_ecs_configs_are_rendered_from_local_yaml():
    """envoy/compose.yaml and envoy/ecs.yaml are local.yaml with fixed values (ECS: without the
    demo routes); rerun scripts/render-envoy-configs when this fails."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "render-envoy-configs"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    ecs = (ROOT / "envoy" / "ecs.yaml").read_text()
    assert "/grafana/" not in ecs and "/sre/" not in ecs and "127.0.0.1, port_value: 9191" in ecs


@pytest.mark.parametrize("name", ["compose.yaml", "ecs.yaml"])
def test_rendered_configs_are_valid(tmp_path, name):
    cert, key = self_signed_cert(tmp_path)  # Envoy loads the files it names, so point at real ones
    text = (ROOT / "envoy" / name).read_text()
    text = text.replace("/etc/envoy/tls/tls.crt", str(cert)).replace("/etc/envoy/tls/tls.key", str(key))
    result = validate(text, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def first_connection_manager(config: dict) -> dict:
    return next(connection_managers(config))


def test_mesh_snippet_has_local_yamls_filters_and_authz_clusters():
    """What the mesh snippet tells you to add is what the end-to-end tests run: the same HTTP
    filters in the same order, the same authz clusters (but for the address), the same routes to
    authz."""
    local = yaml.safe_load(string.Template((ROOT / "envoy" / "local.yaml").read_text()).substitute(
        {**COMPOSE_VALUES, "AUTHZ_HOST": "127.0.0.1"}))
    mesh = yaml.safe_load((ROOT / "envoy" / "mesh-snippet.yaml").read_text())
    assert first_connection_manager(mesh)["http_filters"] == first_connection_manager(local)["http_filters"]
    clusters = lambda config: {c["name"]: c for c in config["static_resources"]["clusters"]}
    for name in ("authz_grpc", "authz_http"):
        assert clusters(mesh)[name] == clusters(local)[name], name
    routes = lambda config: {json.dumps(r["match"]): r for r in
                             first_connection_manager(config)["route_config"]["virtual_hosts"][0]["routes"]
                             if r.get("route", {}).get("cluster") == "authz_http"}
    assert routes(mesh) == routes(local)
    cors = lambda config: first_connection_manager(config)["route_config"]["virtual_hosts"][0]["typed_per_filter_config"]
    assert cors(mesh) == cors(local)


def test_mesh_snippet_is_valid(tmp_path):
    result = validate((ROOT / "envoy" / "mesh-snippet.yaml").read_text(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mesh_snippet_keeps_the_settings_that_matter():
    text = (ROOT / "envoy" / "mesh-snippet.yaml").read_text()
    settings = [line.split("#")[0].strip() for line in text.splitlines()]
    for setting in ["failure_mode_allow: false", "status_on_error: { code: ServiceUnavailable }",
                    "- { exact: authorization, ignore_case: true }", "clear_route_cache: false",
                    "common_lb_config: { healthy_panic_threshold: { value: 0 } }"]:
        assert setting in settings, setting
    # ext_authz before the router, and switched off for OAuth discovery.
    assert text.index("name: envoy.filters.http.ext_authz\n") < text.index("name: envoy.filters.http.router")
    assert re.search(r'prefix: "/\.well-known/".*?disabled: true', text, re.S)


def test_ecs_task_definition_wires_the_sidecar():
    task = json.loads((ROOT / "envoy" / "ecs-task-definition.json").read_text())
    containers = {c["name"]: c for c in task["containerDefinitions"]}
    authz, envoy = containers["authz"], containers["envoy"]
    assert authz["healthCheck"]["command"][:2] == ["CMD", "/usr/local/bin/authz"]
    assert "healthcheck" in authz["healthCheck"]["command"]
    assert {"containerName": "authz", "condition": "HEALTHY"} in envoy["dependsOn"]
    for container in containers.values():
        assert container["readonlyRootFilesystem"] is True, container["name"]
        assert container["user"] not in ("0", "root", "0:0"), container["name"]
    # The client id is not a secret; the facade's secrets are references authz reads (and
    # re-reads on rotation) from Secrets Manager itself.
    environment = {e["name"]: e["value"] for e in authz["environment"]}
    assert "AUTHZ_GOOGLE__CLIENT_IDS" in environment
    for name in ("AUTHZ_OAUTH__GOOGLE_CLIENT_SECRET", "AUTHZ_OAUTH__SIGNING_KEYS", "AUTHZ_OAUTH__SEALING_KEYS"):
        assert environment[name].startswith("{ aws_secret = "), name
    # The environment is a configuration authz accepts (references are checked, not fetched).
    checked = subprocess.run([str(TARGET / "authz"), "--check-config"], capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin", **environment,
                                  **{s["name"]: "x" * 43 for s in authz["secrets"]}})
    assert checked.returncode == 0, checked.stderr
    # Envoy waits for authz's readiness, not for a health command inside your MCP image.
    assert {"containerName": "mcp", "condition": "START"} in envoy["dependsOn"]
    assert "healthCheck" not in containers["mcp"]
    # Every container of the task shares 127.0.0.1: the admin API wants its token, which the
    # CLI (run through ECS Exec in the authz container) finds in AUTHZ_ADMIN_TOKEN.
    secrets = {s["name"]: s["valueFrom"] for s in authz["secrets"]}
    assert secrets["AUTHZ_LISTEN__ADMIN_TOKEN"] == secrets["AUTHZ_ADMIN_TOKEN"]
    assert "AUTHZ_ADMIN_TOKEN" not in {s["name"] for c in containers.values() if c is not authz
                                       for s in c.get("secrets") or []}


def test_every_connection_manager_is_hardened():
    configs = envoy_configs()
    # The shipped configs; any other YAML added under envoy/ is checked too.
    assert {"local.yaml", "compose.yaml", "mesh-snippet.yaml", "bench/ext_authz.yaml",
            "bench/jwt_authn.yaml", "bench/noauth.yaml"} <= set(configs)
    for name, text in configs.items():
        managers = list(connection_managers(yaml.safe_load(text)))
        assert managers, f"{name}: no HttpConnectionManager found"
        for hcm in managers:
            assert hardening_of(hcm) == HARDENING, f"{name}: HttpConnectionManager {hcm.get('stat_prefix')}"


@pytest.mark.parametrize("name", ["ext_authz", "jwt_authn", "noauth"])
def test_bench_config_is_valid(tmp_path, name):
    text = fill((ROOT / "envoy" / "bench" / f"{name}.yaml").read_text(), bench_values())
    result = validate(text, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
