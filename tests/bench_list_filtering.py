"""What list filtering costs: the same requests through two Envoys in one run, one with
envoy/local.yaml as shipped (ext_proc filter in), one with the ext_proc filter taken out, in
front of the same authz and the same demo MCP server serving 200 tools.

    cargo build --release -p authz -p standin
    .venv/bin/python tests/bench_list_filtering.py [requests-per-case]

Sequential requests on one keep-alive TLS connection per Envoy (HTTP/1.1), warmed up first, the
two Envoys interleaved request by request so that drift hits both alike. Prints p50/p90/p99 per
case in microseconds and the difference. ada's tools/list loses its 101 `delete_*` tools (the
filter reads, decides and rewrites 200 entries); grace's keeps all 200 (read and decided,
passed unchanged).
"""

from __future__ import annotations

import json
import pathlib
import statistics
import sys
import tempfile
import time

import requests

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from stack import ADA, GRACE, ROOT, Envoy, McpUpstream, Stack, demo_workspace, mcp_body, mcp_headers  # noqa: E402


def without_ext_proc(workdir: pathlib.Path) -> pathlib.Path:
    text = (ROOT / "envoy" / "local.yaml").read_text()
    start = text.index("          # List filtering:")
    end = text.index("          - name: envoy.filters.http.router\n")
    path = workdir / "no-ext-proc.yaml"
    path.write_text(text[:start] + text[end:])
    return path


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(samples, n=100)
    return q[49], q[89], q[98]


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-filtering-"))
    stack = Stack(workdir, upstream="mcp", before_authz=demo_workspace(workdir))
    extra = []
    try:
        # 3 demo tools + 197 generated = 200.
        upstream = McpUpstream(workdir, ("--extra-tools", "197"), "mcp-200")
        extra.append(upstream)
        envoys = {}
        for name, template in (("with", ROOT / "envoy" / "local.yaml"), ("without", without_ext_proc(workdir))):
            directory = workdir / name
            directory.mkdir()
            envoys[name] = Envoy(directory, stack.authz, upstream.port, template=template)
            extra.append(envoys[name])
        tokens = {who: stack.standin.user_id_token(who) for who in (ADA, GRACE)}
        cases = {
            "tools/call (not a list)": (ADA, "tools/call", {"name": "whoami", "arguments": {}}),
            "tools/list, 200 tools, 101 hidden": (ADA, "tools/list", None),
            "tools/list, 200 tools, none hidden": (GRACE, "tools/list", None),
        }
        sessions = {name: requests.Session() for name in envoys}
        print(f"{count} requests per case and Envoy; microseconds")
        print(f"{'case':40} {'without p50/p90/p99':>22} {'with p50/p90/p99':>22} {'added p50':>10}")
        for label, (who, method, params) in cases.items():
            headers = {**mcp_headers(method, (params or {}).get("name")), "authorization": f"Bearer {tokens[who]}"}
            body = json.dumps(mcp_body(method, params))
            samples = {name: [] for name in envoys}
            sizes = {}
            for i in range(count + 200):
                for name, envoy in envoys.items():
                    started = time.perf_counter()
                    response = sessions[name].post(f"{envoy.url}/grafana/mcp", headers=headers, data=body,
                                                   verify=str(envoy.cert), timeout=10)
                    elapsed = (time.perf_counter() - started) * 1e6
                    assert response.status_code == 200, response.text
                    sizes[name] = len(response.content)
                    if i >= 200:
                        samples[name].append(elapsed)
            without, with_ = percentiles(samples["without"]), percentiles(samples["with"])
            print(f"{label:40} {'/'.join(f'{v:.0f}' for v in without):>22} "
                  f"{'/'.join(f'{v:.0f}' for v in with_):>22} {with_[0] - without[0]:>10.0f}"
                  f"   (bytes {sizes['without']} -> {sizes['with']})")
    finally:
        for thing in reversed(extra):
            if isinstance(thing, Envoy):
                thing.process.stop()
            else:
                thing.close()
        stack.close()


if __name__ == "__main__":
    main()
