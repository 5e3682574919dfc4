"""Soak run (see scripts/soak; not part of the test suite): a fixed-rate mix of valid, expired,
forged and junk tokens through the real stack for minutes, sampling error rate, latency, RSS
and open file descriptors. Fails if anything that should be denied was allowed, if any answer
was wrong, or if authz's RSS or file descriptors keep growing instead of levelling off.

Unless --plain is given, the stack also has the OAuth facade, and beside the token mix hostile
callers run at steady rates: a sign-in flood (a consent page with a fresh browser, posted,
with the largest registration, client name and state an attacker may send), replays of one
consent form, never-seen junk access tokens, and authorization requests whose client_id is a
metadata URL on an unresolvable host. One real user, signed in through the facade before the
flood, calls /mcp with her access token and refreshes it every 30 s. Also fails if any
legitimate request (valid tokens of the mix, the facade user) is not answered 200, if a hostile
request gets an unexpected answer, if more sign-ins are admitted than the bound, or if Google
(tokeninfo, userinfo, token endpoint) is called faster than `google.new_tokens_per_second`
allows."""

import argparse
import collections
import os
import pathlib
import random
import re
import secrets
import signal
import statistics
import sys
import tempfile
import threading
import time

import requests

from stack import ADA, Stack, mcp_body, mcp_headers
from test_ext_authz import foreign_key_token
from test_oauth import OAuthStack

# What the hostile run configures (and checks against): authz's default rate of never-seen
# access tokens verified per second, and the lifetime of a pending sign-in.
NEW_TOKENS_PER_SECOND = 50
SIGN_IN_TTL = 600


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
    # Legitimate requests: any other answer fails the run.
    LEGIT = ("valid_id", "valid_access")

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


def metrics(authz) -> dict[str, float]:
    """authz's /metrics as {"name{labels}": value}."""
    text = requests.get(f"http://127.0.0.1:{authz.http_port}/metrics", timeout=5).text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                pass
    return values


def metric_sum(values: dict[str, float], name: str) -> float:
    return sum(v for k, v in values.items() if k == name or k.startswith(name + "{"))


def by_label(values: dict[str, float], name: str, label: str) -> dict[str, int]:
    found = {}
    for key, value in values.items():
        if key.startswith(name + "{"):
            match = re.search(label + r'="([^"]*)"', key)
            if match:
                found[match.group(1)] = found.get(match.group(1), 0) + int(value)
    return found


def google_calls(stack) -> int:
    """Calls to Google's verification and token endpoints so far (tokeninfo, userinfo, token)."""
    stats = stack.standin.stats()
    return stats["tokeninfo"] + stats["userinfo"] + stats["token"]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=600, help="seconds (default 600)")
    parser.add_argument("--rate", type=float, default=200,
                        help="token mix: requests per second (default 200)")
    parser.add_argument("--sample", type=float, default=20, help="seconds between samples")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--plain", action="store_true",
                        help="the token mix alone, on a stack without the OAuth facade")
    parser.add_argument("--sign-in-rate", type=float, default=10,
                        help="hostile sign-ins (consent page + post) per second (default 10)")
    parser.add_argument("--replay-rate", type=float, default=5,
                        help="replays of one consent form per second (default 5)")
    parser.add_argument("--junk-access-rate", type=float, default=60,
                        help="never-seen junk access tokens per second (default 60)")
    parser.add_argument("--metadata-rate", type=float, default=5,
                        help="authorization requests with an unresolvable metadata URL per second (default 5)")
    parser.add_argument("--user-rate", type=float, default=1,
                        help="the facade user's /mcp calls per second (default 1)")
    parser.add_argument("--refresh-interval", type=float, default=30,
                        help="seconds between the facade user's refreshes (default 30)")
    parser.add_argument("--max-pending", type=int, default=2000,
                        help="oauth.max_pending_sign_ins (default 2000)")
    parser.add_argument("--allow-ttl", default="5m", help="cache.allow_ttl (default 5m)")
    args = parser.parse_args()

    # A SIGTERM ends the run like Ctrl-C: the stack's processes are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="authz-soak-"))
    # A small cache bound so the junk flood reaches it within the run and the plateau shows.
    if args.plain:
        stack = Stack(workdir, cache_max_entries=5000, deny_ttl="10m", allow_ttl=args.allow_ttl)
    else:
        stack = OAuthStack(
            workdir, groups=False, upstream="echo", allow_ttl=args.allow_ttl,
            oauth_settings={"max_pending_sign_ins": args.max_pending, "sign_in_ttl": f'"{SIGN_IN_TTL}s"',
                            "access_token_ttl": '"60s"'},
            authz_settings={"cache_max_entries": 5000, "deny_ttl": "10m",
                            "google_extra": [f"new_tokens_per_second = {NEW_TOKENS_PER_SECOND}"]})
    try:
        run(stack, args, workdir)
    finally:
        stack.close()


class Hostile:
    """The facade's hostile callers and its one real user, each at a steady rate."""

    EXPECTED = {"consent_page": {200}, "sign_in": {303, 429}, "replay": {400}, "junk_access": {401, 503},
                "metadata": {400}, "user_mcp": {200}, "user_refresh": {200}}
    LEGIT = ("user_mcp", "user_refresh")

    def __init__(self, stack: OAuthStack, args):
        self.stack, self.args = stack, args
        self.lock = threading.Lock()
        self.window: list[tuple[str, int, float]] = []
        self.counts: collections.Counter = collections.Counter()  # (kind, status)
        self.latencies: dict[str, list[float]] = collections.defaultdict(list)
        self.wrong_examples: list[str] = []
        self.legit_failures: list[tuple[float, str, int]] = []  # (t, kind, status)
        self.first_refused: float | None = None
        self.metadata_counter = 0
        # The real user signs in through the facade before the flood.
        self.user_client = stack.register()
        issued = stack.tokens(self.user_client, email=ADA)
        self.user_access, self.user_refresh = issued["access_token"], issued["refresh_token"]
        self.refreshed_at = time.monotonic()
        # The attacker's registration: the most redirect URIs and the longest name allowed.
        self.attacker = stack.register(redirect_uris=[f"http://127.0.0.1:{p}/cb" for p in range(1, 9)],
                                       client_name="x" * 80)
        # One consent form, posted once (a pending sign-in), then replayed.
        browser = stack.browser()
        self.replay_fields = stack.consent_form(browser, stack.authorize_url(self.user_client,
                                                                             secrets.token_urlsafe(48)))
        first = browser.post(f"{stack.origin}/oauth/authorize", data={**self.replay_fields, "decision": "allow"},
                             allow_redirects=False, timeout=10)
        assert first.status_code == 303, first.text
        self.admitted_at = [time.monotonic()]  # every 303, the replayed form's first
        # Sent as a header, as an attacker would: the client's cookie jar drops it after its
        # Max-Age (oauth.sign_in_ttl), authz does not.
        self.replay_cookie = "; ".join(f"{c.name}={c.value}" for c in browser.cookies)

    def record(self, kind: str, status: int, latency: float, start: float, note: str = ""):
        with self.lock:
            self.window.append((kind, status, latency))
            self.counts[(kind, status)] += 1
            self.latencies[kind].append(latency)
            if kind == "sign_in" and status == 303:
                self.admitted_at.append(time.monotonic())
            if kind == "sign_in" and status == 429 and self.first_refused is None:
                self.first_refused = time.monotonic() - start
            if kind in self.LEGIT and status != 200:
                self.legit_failures.append((time.monotonic() - start, kind, status))
            if status not in self.EXPECTED[kind] and len(self.wrong_examples) < 10:
                self.wrong_examples.append(f"{kind}: got {status}, expected {sorted(self.EXPECTED[kind])} {note}")

    def workers(self, stop: threading.Event, start: float) -> list[threading.Thread]:
        a = self.args
        plan = [(self.sign_in, a.sign_in_rate, 6), (self.replay, a.replay_rate, 2),
                (self.junk_access, a.junk_access_rate, 8), (self.metadata, a.metadata_rate, 4),
                (self.user, a.user_rate, 1)]
        threads = []
        for action, rate, count in plan:
            if rate <= 0:
                continue
            for index in range(count):
                threads.append(threading.Thread(
                    target=paced, args=(action, self.stack.browser, rate, count, index, stop, start), daemon=True))
        return threads

    # Each action gets its worker's session and the scheduled time of its request.

    def sign_in(self, session, due: float, start: float):
        # A fresh browser (a new cookie) each time: the per-browser bound does not help.
        browser = self.stack.browser()
        url = self.stack.authorize_url(self.attacker, secrets.token_urlsafe(48), state="s" * 1000,
                                       redirect_uri="http://127.0.0.1:1/cb")
        try:
            page = browser.get(url, allow_redirects=False, timeout=10)
            self.record("consent_page", page.status_code, time.monotonic() - due, start)
            fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page.text))
            if page.status_code != 200 or set(fields) != {"request", "csrf"}:
                return
            posted = time.monotonic()
            answer = browser.post(f"{self.stack.origin}/oauth/authorize", data={**fields, "decision": "allow"},
                                  allow_redirects=False, timeout=10)
            self.record("sign_in", answer.status_code, time.monotonic() - posted, start)
        except requests.RequestException as error:
            self.record("sign_in", -1, time.monotonic() - due, start, repr(error))
        finally:
            browser.close()

    def replay(self, session, due: float, start: float):
        try:
            status = session.post(f"{self.stack.origin}/oauth/authorize",
                                  data={**self.replay_fields, "decision": "allow"},
                                  headers={"cookie": self.replay_cookie},
                                  allow_redirects=False, timeout=10).status_code
        except requests.RequestException:
            status = -1
        self.record("replay", status, time.monotonic() - due, start)

    def junk_access(self, session, due: float, start: float):
        try:
            status = session.get(f"{self.stack.origin}/mcp", timeout=10,
                                 headers={"authorization": "Bearer ya29." + secrets.token_urlsafe(60)}).status_code
        except requests.RequestException:
            status = -1
        self.record("junk_access", status, time.monotonic() - due, start)

    def metadata(self, session, due: float, start: float):
        with self.lock:
            self.metadata_counter += 1
            n = self.metadata_counter
        url = self.stack.authorize_url(f"https://metadata.invalid/client.json?{n}", secrets.token_urlsafe(48))
        try:
            response = session.get(url, allow_redirects=False, timeout=10)
            # A page, never a redirect.
            status = response.status_code if "location" not in response.headers else 1000 + response.status_code
        except requests.RequestException:
            status = -1
        self.record("metadata", status, time.monotonic() - due, start)

    def user(self, session, due: float, start: float):
        if time.monotonic() - self.refreshed_at >= self.args.refresh_interval:
            began = time.monotonic()
            try:
                response = self.stack.token(grant_type="refresh_token", refresh_token=self.user_refresh,
                                            client_id=self.user_client)
                status, body = response.status_code, response.text
                if status == 200:
                    issued = response.json()
                    self.user_access, self.user_refresh = issued["access_token"], issued["refresh_token"]
                    self.refreshed_at = time.monotonic()
            except requests.RequestException as error:
                status, body = -1, repr(error)
            self.record("user_refresh", status, time.monotonic() - began, start, body[:200])
        body = mcp_body("tools/list")
        try:
            status = session.post(f"{self.stack.origin}/mcp", json=body, timeout=10, headers={
                "authorization": f"Bearer {self.user_access}", **mcp_headers("tools/list")}).status_code
        except requests.RequestException:
            status = -1
        self.record("user_mcp", status, time.monotonic() - due, start)

    def take_window(self) -> list[tuple[str, int, float]]:
        with self.lock:
            batch, self.window[:] = list(self.window), []
        return batch

    def count(self, kind: str, status: int | None = None) -> int:
        with self.lock:
            return sum(n for (k, s), n in self.counts.items() if k == kind and (status is None or s == status))

    def wrong(self) -> int:
        with self.lock:
            return sum(n for (k, s), n in self.counts.items() if s not in self.EXPECTED[k])


def paced(action, make_session, rate: float, workers: int, index: int, stop: threading.Event, start: float):
    """One of `workers` threads that together call `action` `rate` times a second, on schedule.
    Each request is sent at a random point of its slot: fixed phases between the streams would
    decide which of them finds room in authz's rate limits, and the figures would measure that."""
    session = make_session()
    interval, i = 1.0 / rate, index
    while not stop.is_set():
        due = start + (i + random.random()) * interval
        i += workers
        delay = due - time.monotonic()
        if delay > 0 and stop.wait(delay):
            break
        action(session, due, start)


def run(stack, args, workdir: pathlib.Path):
    mix = Mix(stack)
    hostile = None if args.plain else Hostile(stack, args)
    authz = stack.authz[0] if isinstance(stack.authz, list) else stack.authz
    authz_pid, envoy_pid = authz.process.popen.pid, stack.envoy.process.popen.pid
    expected = {kind: {status} for kind, status in Mix.EXPECTED.items()}
    if hostile:
        expected["junk_opaque"] = {401, 503}  # beside the junk spray, may be shed like it
    lock = threading.Lock()
    window: list[tuple[str, int, float]] = []
    totals = {"requests": 0, "wrong": 0, "allowed_wrongly": 0}
    mix_counts: collections.Counter = collections.Counter()
    wrong_examples: list[str] = []
    legit_failures: list[tuple[float, str, int]] = []  # (t, kind, status)
    stop = threading.Event()
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
            with lock:
                window.append((kind, status, latency))
                totals["requests"] += 1
                mix_counts[(kind, status)] += 1
                if status not in expected[kind]:
                    totals["wrong"] += 1
                    if len(wrong_examples) < 10:
                        wrong_examples.append(f"{kind}: got {status}, expected {sorted(expected[kind])}")
                if status == 200 and 200 not in expected[kind]:
                    totals["allowed_wrongly"] += 1
                if kind in Mix.LEGIT and status != 200:
                    legit_failures.append((time.monotonic() - start, kind, status))

    if hostile:
        # The mix's users were active before the attack began: their tokens are verified and
        # cached (a never-seen access token competes with the junk spray for verification).
        with requests.Session() as warm:
            for token in mix.valid_id + mix.valid_access:
                status = warm.get(f"{stack.envoy.url}/mcp", verify=str(stack.envoy.cert), timeout=10,
                                  headers={"authorization": f"Bearer {token}"}).status_code
                assert status == 200, f"warm-up: {status}"
    start = time.monotonic() + 0.5
    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(args.workers)]
    if hostile:
        for session_thread in hostile.workers(stop, start):
            threads.append(session_thread)
    google_before, google_at = (google_calls(stack), time.monotonic()) if hostile else (0, 0.0)
    for t in threads:
        t.start()
    samples = []
    print(f"soak: {args.rate:.0f} req/s for {args.duration:.0f} s; logs in {workdir}")
    header = "| t (s) | requests | req/s | wrong | p50 ms | p99 ms | authz RSS MiB | authz FDs | envoy RSS MiB |"
    rule = "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    if hostile:
        a = args
        print(f"hostile: sign-ins {a.sign_in_rate:g}/s (oauth.max_pending_sign_ins = {a.max_pending}), "
              f"consent replays {a.replay_rate:g}/s, junk access tokens {a.junk_access_rate:g}/s "
              f"(google.new_tokens_per_second = {NEW_TOKENS_PER_SECOND}), metadata URLs {a.metadata_rate:g}/s, "
              f"facade user {a.user_rate:g}/s refreshing every {a.refresh_interval:g} s")
        header += (" hostile req/s | sign-ins 303 | sign-ins 429 | shed | Google calls/s |"
                   " metadata fetches | legit ok |")
        rule += "---:|---:|---:|---:|---:|---|---:|"
    print(header)
    print(rule)
    deadline = start + args.duration
    while time.monotonic() < deadline:
        time.sleep(min(args.sample, max(0.0, deadline - time.monotonic())))
        with lock:
            batch, window[:] = list(window), []
            wrong = totals["wrong"]
            legit = sum(n for (k, _), n in mix_counts.items() if k in Mix.LEGIT)
            legit_ok = sum(n for (k, s), n in mix_counts.items() if k in Mix.LEGIT and s == 200)
        latencies = sorted(l for _, _, l in batch)
        p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0
        sample = {
            "t": time.monotonic() - start, "requests": len(batch), "wrong": wrong,
            "rss": proc_status(authz_pid, "VmRSS") / 1024, "fds": open_fds(authz_pid),
            "envoy_rss": proc_status(envoy_pid, "VmRSS") / 1024, "p50": p(0.5), "p99": p(0.99),
        }
        row = (f"| {sample['t']:.0f} | {sample['requests']} | {sample['requests'] / args.sample:.0f} | "
               f"{wrong} | {sample['p50']:.1f} | {sample['p99']:.1f} | {sample['rss']:.1f} | "
               f"{sample['fds']} | {sample['envoy_rss']:.1f} |")
        if hostile:
            now, calls = time.monotonic(), google_calls(stack)
            values = metrics(authz)
            legit += sum(hostile.count(k) for k in Hostile.LEGIT)
            legit_ok += sum(hostile.count(k, 200) for k in Hostile.LEGIT)
            fetches = by_label(values, "authz_client_metadata_fetches_total", "result")
            sample.update({
                "hostile": len(hostile.take_window()) / (now - google_at),
                "admitted": hostile.count("sign_in", 303), "refused": hostile.count("sign_in", 429),
                "shed": int(metric_sum(values, "authz_verifications_shed_total")),
                "google_per_s": (calls - google_before) / (now - google_at),
                "google_calls": calls - google_before, "window": now - google_at,
                "fetches": fetches, "legit": legit, "legit_ok": legit_ok,
            })
            google_before, google_at = calls, now
            fetch_text = " ".join(f"{k} {v}" for k, v in sorted(fetches.items())) or "0"
            row += (f" {sample['hostile']:.0f} | {sample['admitted']} | {sample['refused']} | {sample['shed']} | "
                    f"{sample['google_per_s']:.1f} | {fetch_text} | {legit_ok}/{legit} |")
        samples.append(sample)
        print(row, flush=True)
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
    decided = sorted(e["latency_us"] for e in authz.audit_events() if "latency_us" in e)
    if decided:
        q = lambda f: decided[min(len(decided) - 1, int(f * len(decided)))]
        print(f"authz's own decision latency (audit log, {len(decided)} decisions): "
              f"p50 {q(0.5)} us, p99 {q(0.99)} us, max {decided[-1]} us")
    for example in wrong_examples:
        print("  wrong:", example)
    failed = (totals["allowed_wrongly"] > 0 or totals["wrong"] > 0
              or rss_growth > max(5.0, 0.1 * max(s["rss"] for s in middle)) or fd_growth > 5)
    if hostile:
        failed |= summarize_hostile(stack, authz, hostile, samples, mix_counts, legit_failures, args)
    print("RESULT:", "FAIL" if failed else "PASS")
    sys.exit(1 if failed else 0)


def summarize_hostile(stack, authz, hostile: Hostile, samples: list[dict], mix_counts, legit_failures,
                      args) -> bool:
    """Prints the hostile run's figures; true if it failed."""
    print("\nanswers by kind (status x count; latency p50 / p99 ms):")
    for kind in Mix.EXPECTED:
        statuses = ", ".join(f"{s} x {n}" for (k, s), n in sorted(mix_counts.items()) if k == kind)
        print(f"  {kind}: {statuses}")
    for kind in Hostile.EXPECTED:
        statuses = ", ".join(f"{s} x {n}" for (k, s), n in sorted(hostile.counts.items()) if k == kind)
        lat = sorted(hostile.latencies[kind])
        q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] * 1000 if lat else 0.0
        print(f"  {kind}: {statuses or 'none'}; {q(0.5):.1f} / {q(0.99):.1f}")
    values = metrics(authz)
    shed = by_label(values, "authz_verifications_shed_total", "reason")
    client_503 = hostile.count("junk_access", 503) + sum(n for (k, s), n in mix_counts.items() if s == 503)
    stats = stack.standin.stats()
    # Per full window (the short one after the last sample is left out).
    rates = [s["google_per_s"] for s in samples if s["window"] >= args.sample / 2] or [0.0]
    # tokeninfo starts are bounded by the rate (burst one second's worth); every verification
    # is tokeninfo (+ userinfo only for a real token), every refresh one token call.
    bound = 2 * NEW_TOKENS_PER_SECOND
    over = [s for s in samples if s["google_calls"] > bound * s["window"] + 2 * NEW_TOKENS_PER_SECOND]
    admitted = hostile.count("sign_in", 303)
    # Pending at once: admissions within one sign-in lifetime (less a second for the clocks);
    # the facade user's own sign-in is left out, so this may fall one short of the bound.
    times, most, first = sorted(hostile.admitted_at), 0, 0
    for last, at in enumerate(times):
        while times[first] <= at - (SIGN_IN_TTL - 1):
            first += 1
        most = max(most, last - first + 1)
    legit = sum(n for (k, _), n in mix_counts.items() if k in Mix.LEGIT) + \
        sum(hostile.count(k) for k in Hostile.LEGIT)
    legit_ok = sum(n for (k, s), n in mix_counts.items() if k in Mix.LEGIT and s == 200) + \
        sum(hostile.count(k, 200) for k in Hostile.LEGIT)
    first_refused = f"{hostile.first_refused:.0f} s" if hostile.first_refused is not None else "never"
    print(f"sign-ins admitted (303) {admitted}, refused (429) {hostile.count('sign_in', 429)}, first refusal "
          f"at {first_refused}; most pending at once {most} (bound {args.max_pending}, the replayed form included)")
    print(f"verifications shed (authz_verifications_shed_total) {shed or 0}; 503s seen by clients {client_503}")
    print(f"Google calls (stand-in): tokeninfo {stats['tokeninfo']}, userinfo {stats['userinfo']}, "
          f"token {stats['token']}; per second per window: mean {statistics.mean(rates):.1f}, "
          f"max {max(rates):.1f}")
    print(f"client metadata fetches by result: {by_label(values, 'authz_client_metadata_fetches_total', 'result')}")
    print(f"authz RSS MiB: first sample {samples[0]['rss']:.1f}, max {max(s['rss'] for s in samples):.1f}, "
          f"last {samples[-1]['rss']:.1f}; FDs first {samples[0]['fds']}, max {max(s['fds'] for s in samples)}, "
          f"last {samples[-1]['fds']}")
    print(f"legitimate requests answered 200: {legit_ok}/{legit} ({100.0 * legit_ok / max(1, legit):.3f}%)")
    failures = sorted(legit_failures + hostile.legit_failures)
    for t, kind, status in failures[:20]:
        print(f"  legitimate request refused at {t:.1f} s: {kind} got {status}")
    if len(failures) > 20:
        print(f"  ... and {len(failures) - 20} more, the last at {failures[-1][0]:.1f} s")
    for example in hostile.wrong_examples:
        print("  wrong:", example)
    failed = False
    if legit_ok != legit:
        print("FAIL: a legitimate request was refused")
        failed = True
    if hostile.wrong():
        print(f"FAIL: {hostile.wrong()} hostile requests got an unexpected answer")
        failed = True
    if most > args.max_pending:
        print(f"FAIL: {most} sign-ins admitted within {SIGN_IN_TTL} s, past the bound")
        failed = True
    if over:
        print(f"FAIL: Google called faster than the bound in {len(over)} windows")
        failed = True
    return failed


if __name__ == "__main__":
    main()
