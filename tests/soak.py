"""Soak run (see scripts/soak; not part of the test suite): a fixed-rate mix of valid, expired,
forged and junk tokens through the real stack for minutes, sampling error rate, latency, RSS
and open file descriptors. Fails if anything that should be denied was allowed, if any answer
was wrong, or if authz's RSS or file descriptors keep growing instead of levelling off."""

import argparse
import os
import pathlib
import secrets
import statistics
import sys
import tempfile
import threading
import time

import requests

from stack import Stack
from test_ext_authz import foreign_key_token


def proc_status(pid: int, field: str) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Mix:
    """What to send next, and the status each kind must get."""

    EXPECTED = {"valid_id": 200, "valid_access": 200, "expired": 401, "forged": 401,
                "junk_jwt": 401, "junk_opaque": 401, "wrong_domain": 403}

    def __init__(self, stack: Stack):
        now = int(time.time())
        s = stack.standin
        self.valid_id = [s.id_token(sub=f"user-{i}", exp=now + 7200) for i in range(200)]
        self.valid_access = [s.access_token(sub=f"access-{i}") for i in range(50)]
        self.expired = [s.id_token(sub=f"old-{i}", iat=now - 7200, exp=now - 3600) for i in range(20)]
        self.forged = [foreign_key_token("unknown") for _ in range(20)]
        self.wrong_domain = [s.id_token(sub=f"evil-{i}", hd="evil.example") for i in range(20)]
        self.counter = 0
        self.lock = threading.Lock()

    def next(self) -> tuple[str, str]:
        with self.lock:
            i = self.counter
            self.counter += 1
        slot = i % 20
        if slot < 10:
            return "valid_id", self.valid_id[i % len(self.valid_id)]
        if slot < 12:
            return "valid_access", self.valid_access[i % len(self.valid_access)]
        if slot < 14:
            return "expired", self.expired[i % len(self.expired)]
        if slot < 16:
            return "forged", self.forged[i % len(self.forged)]
        if slot < 17:
            return "wrong_domain", self.wrong_domain[i % len(self.wrong_domain)]
        if slot < 19:
            # Never seen before: every one is a new cache entry (bounded by cache.max_entries).
            return "junk_jwt", f"eyJ{secrets.token_urlsafe(24)}.eyJ{secrets.token_urlsafe(48)}.{secrets.token_urlsafe(64)}"
        return "junk_opaque", "ya29." + secrets.token_urlsafe(60)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=600, help="seconds (default 600)")
    parser.add_argument("--rate", type=float, default=200, help="requests per second (default 200)")
    parser.add_argument("--sample", type=float, default=20, help="seconds between samples")
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="authz-soak-"))
    # A small cache bound so the junk flood reaches it within the run and the plateau shows.
    stack = Stack(workdir, cache_max_entries=5000, deny_ttl="10m")
    try:
        run(stack, args, workdir)
    finally:
        stack.close()


def run(stack: Stack, args, workdir: pathlib.Path):
    mix = Mix(stack)
    authz_pid, envoy_pid = stack.authz.process.popen.pid, stack.envoy.process.popen.pid
    lock = threading.Lock()
    window: list[tuple[str, int, float]] = []
    totals = {"requests": 0, "wrong": 0, "allowed_wrongly": 0}
    wrong_examples: list[str] = []
    stop = threading.Event()
    start = time.monotonic() + 0.5
    interval = 1.0 / args.rate

    def worker(index: int):
        session = requests.Session()
        i = index
        while not stop.is_set():
            due = start + i * interval
            i += args.workers
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            kind, token = mix.next()
            try:
                response = session.get(f"{stack.envoy.url}/mcp", verify=str(stack.envoy.cert),
                                       headers={"authorization": f"Bearer {token}"}, timeout=10)
                status = response.status_code
            except requests.RequestException:
                status = -1
            latency = time.monotonic() - due  # from the scheduled time: no coordinated omission
            expected = Mix.EXPECTED[kind]
            with lock:
                window.append((kind, status, latency))
                totals["requests"] += 1
                if status != expected:
                    totals["wrong"] += 1
                    if len(wrong_examples) < 10:
                        wrong_examples.append(f"{kind}: got {status}, expected {expected}")
                if status == 200 and expected != 200:
                    totals["allowed_wrongly"] += 1

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(args.workers)]
    for t in threads:
        t.start()
    samples = []
    print(f"soak: {args.rate:.0f} req/s for {args.duration:.0f} s; logs in {workdir}")
    print("| t (s) | requests | req/s | wrong | p50 ms | p99 ms | authz RSS MiB | authz FDs | envoy RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    deadline = start + args.duration
    while time.monotonic() < deadline:
        time.sleep(min(args.sample, max(0.0, deadline - time.monotonic())))
        with lock:
            batch, window[:] = list(window), []
            wrong = totals["wrong"]
        latencies = sorted(l for _, _, l in batch)
        p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0
        sample = {
            "t": time.monotonic() - start, "requests": len(batch), "wrong": wrong,
            "rss": proc_status(authz_pid, "VmRSS") / 1024, "fds": open_fds(authz_pid),
            "envoy_rss": proc_status(envoy_pid, "VmRSS") / 1024, "p50": p(0.5), "p99": p(0.99),
        }
        samples.append(sample)
        print(f"| {sample['t']:.0f} | {sample['requests']} | {sample['requests'] / args.sample:.0f} | "
              f"{wrong} | {sample['p50']:.1f} | {sample['p99']:.1f} | {sample['rss']:.1f} | "
              f"{sample['fds']} | {sample['envoy_rss']:.1f} |", flush=True)
    stop.set()
    for t in threads:
        t.join(15)

    third = max(1, len(samples) // 3)
    middle, last = samples[third:2 * third] or samples, samples[-third:]
    rss_growth = max(s["rss"] for s in last) - max(s["rss"] for s in middle)
    fd_growth = max(s["fds"] for s in last) - max(s["fds"] for s in middle)
    all_latencies_p99 = statistics.median(s["p99"] for s in samples)
    print(f"\ntotal requests {totals['requests']}, wrong answers {totals['wrong']}, "
          f"allowed that should have been denied {totals['allowed_wrongly']}")
    print(f"authz RSS growth, last third vs middle third: {rss_growth:+.1f} MiB; FDs: {fd_growth:+d}; "
          f"median of per-window p99: {all_latencies_p99:.1f} ms")
    decided = sorted(e["latency_us"] for e in stack.authz.audit_events() if "latency_us" in e)
    if decided:
        q = lambda f: decided[min(len(decided) - 1, int(f * len(decided)))]
        print(f"authz's own decision latency (audit log, {len(decided)} decisions): "
              f"p50 {q(0.5)} us, p99 {q(0.99)} us, max {decided[-1]} us")
    for example in wrong_examples:
        print("  wrong:", example)
    failed = (totals["allowed_wrongly"] > 0 or totals["wrong"] > 0
              or rss_growth > max(5.0, 0.1 * max(s["rss"] for s in middle)) or fd_growth > 5)
    print("RESULT:", "FAIL" if failed else "PASS")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
