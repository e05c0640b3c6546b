"""Webhook benchmark: signed WhatsApp notifications from wrk against gunicorn, beside a bare endpoint.

Both apps are served by the README's command, ``gunicorn -c python:web.gunicorn_conf APP``, with
nothing added: the same config file, so the same workers, threads, worker class and binds (both
listeners, on free loopback ports given through WEB_PUBLIC_PORT / WEB_INTERNAL_PORT). The bare app
(``bench.bench_webhook:bare_app()``) is a minimal Flask app that reads the body and answers 200; the
webhook is ``web.app:create_app()``. They run alternately, bare then webhook, ``--rounds`` times (3)
in the same run, each loaded by ``wrk -t2 -c32 -d30s`` posting the same pre-signed bodies (each a
notification of one document message with its own wamid, signed like Meta's); the figures are the
medians over the rounds. After each webhook round, every wamid it answered 200 for must be in the
stream exactly once, and nothing else.

Targets: at least 0.50x the bare endpoint's requests/s, p99 at most 1.5x the bare endpoint's p99,
0 duplicates (issue 15); p99 under 20 ms (issue 6).

State goes to Redis database 10 under a key prefix of each round only (removed afterwards), so the
benchmark never flushes a database another run may be using.

    .venv/bin/python -m bench.bench_webhook [--rounds 3] [--duration 30] [--connections 32] [--threads 2]
        [--bodies 200000] [--json PATH]

WEB_CONCURRENCY and WEB_THREADS in the environment change both servers alike, as they change the
README's command. Needs wrk (``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
import requests
from flask import Flask, Response, request

from bench.report import Figure, Result, met
from config.settings import redis_db_url
from connectors.whatsapp_inbox import InboundMedia
from sandbox.servers import free_port
from sandbox.whatsapp import inbound_notification, media_message, meta_body, signature

#: Redis database the benchmark writes to (the spare test database, see tests/conftest.py).
BENCH_DB = 10
#: The app secret the benchmark's webhook checks (a benchmark value, not a credential).
BENCH_APP_SECRET = "bench-app-secret"
ROOT = Path(__file__).resolve().parents[1]
#: The two apps, as gunicorn is given them.
BARE_APP = "bench.bench_webhook:bare_app()"
WEBHOOK_APP = "web.app:create_app()"
#: The targets (issue 15): webhook/bare requests/s, webhook p99 / bare p99; and issue 6's p99.
MIN_RPS_RATIO = 0.5
MAX_P99_RATIO = 1.5
MAX_P99_MS = 20.0

#: wrk script: each thread posts its share of the pre-signed bodies (file lines "signature<TAB>body")
#: in order, counts 200 answers, and ``done`` prints one JSON line the benchmark parses.
WRK_SCRIPT = r"""
local bodies_path, path = "%(bodies)s", "%(path)s"
local threads, next_id = {}, 1

function setup(thread)
  thread:set("id", next_id)
  table.insert(threads, thread)
  next_id = next_id + 1
end

function init(args)
  local n_threads = tonumber(args[1])
  bodies, sigs, sent, ok, not_ok = {}, {}, 0, 0, 0
  local i = 0
  for line in io.lines(bodies_path) do
    if i %% n_threads == id - 1 then
      local tab = line:find("\t", 1, true)
      sigs[#sigs + 1] = line:sub(1, tab - 1)
      bodies[#bodies + 1] = line:sub(tab + 1)
    end
    i = i + 1
  end
end

function request()
  sent = sent + 1
  local k = ((sent - 1) %% #bodies) + 1
  return wrk.format("POST", path, {["Content-Type"] = "application/json",
                                   ["X-Hub-Signature-256"] = sigs[k]}, bodies[k])
end

function response(status, headers, body)
  if status == 200 then ok = ok + 1 else not_ok = not_ok + 1 end
end

function done(summary, latency, requests)
  local per_thread, total_ok, total_not_ok = {}, 0, 0
  for _, t in ipairs(threads) do
    per_thread[#per_thread + 1] = string.format("[%%d,%%d]", t:get("id"), t:get("sent"))
    total_ok = total_ok + t:get("ok")
    total_not_ok = total_not_ok + t:get("not_ok")
  end
  local e = summary.errors
  io.write(string.format('BENCH {"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p99_us":%%d,"max_us":%%d,' ..
    '"ok":%%d,"not_ok":%%d,"errors":%%d,"sent":[%%s]}\n', summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max, total_ok, total_not_ok,
    e.connect + e.read + e.write + e.timeout, table.concat(per_thread, ",")))
end
"""


def bare_app() -> Flask:
    """The baseline: a Flask endpoint that reads the body and answers 200 'ok'."""
    app = Flask("bare")

    @app.post("/webhooks/whatsapp")
    def bare() -> Response:
        request.get_data(cache=False)
        return Response("ok", status=200, mimetype="text/plain")

    return app


@dataclass
class WrkResult:
    label: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    ok: int
    not_ok: int
    socket_errors: int
    sent_per_thread: dict[int, int]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass
class StreamCheck:
    """What one webhook round left in the stream, against what wrk posted and was answered."""

    entries: int
    distinct: int
    duplicates: int  # entries whose wamid is stored more than once
    strangers: int  # distinct wamids never posted
    lost: int  # answered 200 (less repeated posts) but not in the stream: at least this many
    script_calls: int


def write_bodies(path: Path, count: int) -> list[str]:
    """``count`` signed one-document notifications, one per line; returns their wamids in order."""
    wamids: list[str] = []
    now = int(time.time())
    with path.open("w", encoding="ascii") as out:
        for n in range(count):
            wamid = f"wamid.BENCH{secrets.token_hex(6)}{n:07d}"
            message = media_message("document", str(10**15 + n), mime_type="application/pdf",
                                    sha256="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", sender="919847000001",
                                    caption="Track maintenance report", filename=f"TMR-{n}.pdf", wamid=wamid,
                                    timestamp=now)
            body = meta_body(inbound_notification([message], profile_names={"919847000001": "Bench Sender"}))
            out.write(f"{signature(BENCH_APP_SECRET, body)}\t{body.decode('ascii')}\n")
            wamids.append(wamid)
    return wamids


def gunicorn_command() -> list[str]:
    """The README's command: ``gunicorn -c python:web.gunicorn_conf`` (the app is appended)."""
    script = Path(sys.executable).with_name("gunicorn")
    program = [str(script)] if script.is_file() else [sys.executable, "-m", "gunicorn"]
    return [*program, "-c", "python:web.gunicorn_conf"]


class Gunicorn:
    """One gunicorn serving ``app`` with the README's command for the ``with`` block: both listeners
    on free loopback ports, chosen through the environment like a deployment chooses them."""

    def __init__(self, app: str, *, env: dict[str, str], log_path: Path) -> None:
        self.port, self.internal_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [*gunicorn_command(), app]
        self.env = {**env, "WEB_PUBLIC_HOST": "127.0.0.1", "WEB_PUBLIC_PORT": str(self.port),
                    "WEB_INTERNAL_HOST": "127.0.0.1", "WEB_INTERNAL_PORT": str(self.internal_port)}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Gunicorn:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                # Any answer on both listeners: every worker of the bare app answers 404 there.
                requests.get(f"http://127.0.0.1:{self.internal_port}/healthz", timeout=2)
                requests.get(self.url + "/", timeout=2)
                return self
            except (requests.ConnectionError, requests.Timeout):
                if self.process.poll() is not None:
                    break
                time.sleep(0.1)
        self.__exit__()
        raise SystemExit(f"gunicorn did not start; see {self.log_path}")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self._log.close()


def run_wrk(label: str, url: str, script: Path, *, threads: int, connections: int, duration: int) -> WrkResult:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "5s", "-s", str(script),
               url, "--", str(threads)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next((ln for ln in output.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no result:\n{output}")
    data: dict[str, Any] = json.loads(line[6:])
    return WrkResult(label=label, requests=data["requests"], seconds=data["duration_us"] / 1e6,
                     p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000, max_ms=data["max_us"] / 1000,
                     ok=data["ok"], not_ok=data["not_ok"], socket_errors=data["errors"],
                     sent_per_thread={int(t): int(n) for t, n in data["sent"]})


def sent_wamids(wamids: list[str], sent_per_thread: dict[int, int], threads: int) -> tuple[set[str], int]:
    """The wamids wrk posted (each thread walks its share in order) and how many posts were repeats."""
    shares = {t: wamids[t - 1::threads] for t in range(1, threads + 1)}
    posted: set[str] = set()
    repeats = 0
    for thread, count in sent_per_thread.items():
        share = shares[thread]
        posted.update(share[:count])
        repeats += max(0, count - len(share))
    return posted, repeats


def stream_wamids(client: redis.Redis, stream: str) -> list[str]:
    found: list[str] = []
    start = "-"
    while True:
        page: Any = client.xrange(stream, min=start, count=10000)
        if not page:
            return found
        found.extend(InboundMedia.from_fields(fields).wamid for _, fields in page)
        last = page[-1][0].decode() if isinstance(page[-1][0], bytes) else str(page[-1][0])
        start = "(" + last


def _script_calls(client: redis.Redis) -> int:
    stats: Any = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


def remove_keys(client: redis.Redis, prefix: str) -> None:
    batch: list[Any] = []
    for key in client.scan_iter(match=f"{prefix}*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


def check_stream(client: redis.Redis, stream: str, wamids: list[str], result: WrkResult, threads: int,
                 script_calls: int) -> StreamCheck:
    posted, repeats = sent_wamids(wamids, result.sent_per_thread, threads)
    queued = stream_wamids(client, stream)
    unique = set(queued)
    return StreamCheck(entries=len(queued), distinct=len(unique), duplicates=len(queued) - len(unique),
                       strangers=len(unique - posted), lost=max(0, result.ok - repeats - len(unique)),
                       script_calls=script_calls)


@dataclass
class Summary:
    """The medians over the rounds and what the stream checks found in all of them."""

    bare: list[WrkResult]
    webhook: list[WrkResult]
    checks: list[StreamCheck]

    @staticmethod
    def _median(values: Sequence[float]) -> float:
        return statistics.median(values) if values else 0.0

    def rps(self, runs: list[WrkResult]) -> float:
        return self._median([r.rps for r in runs])

    def p50(self, runs: list[WrkResult]) -> float:
        return self._median([r.p50_ms for r in runs])

    def p99(self, runs: list[WrkResult]) -> float:
        return self._median([r.p99_ms for r in runs])

    @property
    def rps_ratio(self) -> float:
        bare = self.rps(self.bare)
        return self.rps(self.webhook) / bare if bare else 0.0

    @property
    def p99_ratio(self) -> float:
        bare = self.p99(self.bare)
        return self.p99(self.webhook) / bare if bare else 0.0

    @property
    def duplicates(self) -> int:
        return sum(c.duplicates for c in self.checks)

    @property
    def exactly_once(self) -> bool:
        return not any(c.duplicates or c.strangers or c.lost for c in self.checks)

    def figures(self) -> list[Figure]:
        rps_ratio, p99_ratio, p99 = round(self.rps_ratio, 2), round(self.p99_ratio, 2), self.p99(self.webhook)
        once = "yes" if self.exactly_once else "no"
        return [
            Figure("webhook (verify signature + queue): requests/s", round(self.rps(self.webhook)), "req/s"),
            Figure("bare Flask endpoint (reads the body, answers 200), same command: requests/s",
                   round(self.rps(self.bare)), "req/s"),
            Figure("webhook / bare requests/s", rps_ratio, "x", f">= {MIN_RPS_RATIO:.2f}x bare req/s (issue 15)",
                   met(rps_ratio, at_least=MIN_RPS_RATIO)),
            Figure("webhook p50 latency", round(self.p50(self.webhook), 2), "ms"),
            Figure("bare p50 latency", round(self.p50(self.bare), 2), "ms"),
            Figure("webhook p99 latency", round(p99, 2), "ms", f"< {MAX_P99_MS:g} ms (issue 6)",
                   met(p99, below=MAX_P99_MS)),
            Figure("bare p99 latency", round(self.p99(self.bare), 2), "ms"),
            Figure("webhook p99 / bare p99", p99_ratio, "x", f"p99 <= {MAX_P99_RATIO:g}x bare p99 (issue 15)",
                   met(p99_ratio, at_most=MAX_P99_RATIO)),
            Figure("wamids stored more than once", self.duplicates, "", "0 duplicates (issue 15)",
                   met(self.duplicates, at_most=0)),
            Figure("every accepted message in the stream exactly once", once, "", "yes (issue 6)",
                   self.exactly_once),
        ]


def _print_runs(summary: Summary) -> None:
    print(f"{'round':<6} {'endpoint':<26} {'requests':>9} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'non-200':>8} {'sock err':>8}")
    for n, (bare, webhook) in enumerate(zip(summary.bare, summary.webhook, strict=True), start=1):
        for r in (bare, webhook):
            print(f"{n:<6} {r.label:<26} {r.requests:>9} {r.rps:>8.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} "
                  f"{r.max_ms:>7.1f} {r.not_ok:>8} {r.socket_errors:>8}")
    for n, check in enumerate(summary.checks, start=1):
        print(f"round {n} stream: {check.entries} entries, {check.distinct} distinct wamids, {check.duplicates} "
              f"stored twice, {check.strangers} never posted, {check.lost} answered 200 and missing; "
              f"{check.script_calls} append script calls ({check.entries / check.script_calls if check.script_calls else 0:.1f}"
              " messages per call; counts every client of this Redis server)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="bare then webhook, this many times; medians")
    parser.add_argument("--duration", type=int, default=30, help="seconds per endpoint and round")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--bodies", type=int, default=200000, help="distinct pre-signed notifications")
    parser.add_argument("--json", help="also write the figures to this result file")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    state_url = redis_db_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), BENCH_DB)
    run_prefix = f"kmrl-bench-{secrets.token_hex(4)}"
    client = redis.Redis.from_url(state_url)
    client.ping()
    work = Path(tempfile.mkdtemp(prefix="kmrl-bench-webhook-"))
    started, started_at = time.perf_counter(), datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    try:
        print(f"writing {args.bodies} signed notifications ...", flush=True)
        wamids = write_bodies(work / "bodies.txt", args.bodies)
        script = work / "post.lua"
        script.write_text(WRK_SCRIPT % {"bodies": work / "bodies.txt", "path": "/webhooks/whatsapp"})
        env = {**os.environ, "KMRL_ENV_FILE": "", "STATE_REDIS_URL": state_url,
               "WHATSAPP_APP_SECRET": BENCH_APP_SECRET, "WHATSAPP_VERIFY_TOKEN": "bench-verify",
               "LOG_FILE": str(work / "web.log"), "LOG_LEVEL": "INFO"}
        config = subprocess.run([sys.executable, "-c", "import web.gunicorn_conf as c; "
                                 "print(c.workers, c.worker_class, c.threads)"], cwd=ROOT, env=env,
                                capture_output=True, text=True, check=True).stdout.split()
        setting = (f"gunicorn -c python:web.gunicorn_conf APP: {config[0]} workers, {config[1]}, "
                   f"{config[2]} threads; wrk -t{args.threads} -c{args.connections} -d{args.duration}s; "
                   f"{args.rounds} rounds, bare then webhook; {os.cpu_count()} CPUs; "
                   f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        wrk_options = {"threads": args.threads, "connections": args.connections, "duration": args.duration}
        summary = Summary([], [], [])
        for n in range(1, args.rounds + 1):
            print(f"round {n}: wrk -t{args.threads} -c{args.connections} -d{args.duration}s against the bare "
                  "endpoint ...", flush=True)
            with Gunicorn(BARE_APP, env=env, log_path=work / f"gunicorn-bare-{n}.log") as server:
                summary.bare.append(run_wrk("bare Flask (read, 200)", server.url + "/webhooks/whatsapp", script,
                                            **wrk_options))
            print(f"round {n}: ... against the webhook ...", flush=True)
            prefix = f"{run_prefix}-{n}:"
            calls_before = _script_calls(client)
            with Gunicorn(WEBHOOK_APP, env={**env, "KMRL_KEY_PREFIX": prefix},
                          log_path=work / f"gunicorn-webhook-{n}.log") as server:
                result = run_wrk("webhook (verify + queue)", server.url + "/webhooks/whatsapp", script,
                                 **wrk_options)
            summary.webhook.append(result)
            summary.checks.append(check_stream(client, f"{prefix}whatsapp:inbox", wamids, result, args.threads,
                                               _script_calls(client) - calls_before))
            remove_keys(client, prefix)

        print()
        print(setting)
        _print_runs(summary)
        print()
        print(f"medians of {args.rounds}: webhook {summary.rps(summary.webhook):.0f} req/s, p50 "
              f"{summary.p50(summary.webhook):.2f} ms, p99 {summary.p99(summary.webhook):.2f} ms; bare "
              f"{summary.rps(summary.bare):.0f} req/s, p50 {summary.p50(summary.bare):.2f} ms, p99 "
              f"{summary.p99(summary.bare):.2f} ms")
        print(f"webhook/bare throughput: {summary.rps_ratio:.2f}  (target >= {MIN_RPS_RATIO:.2f}: "
              f"{'met' if summary.rps_ratio >= MIN_RPS_RATIO else 'NOT met'})")
        print(f"webhook p99 / bare p99: {summary.p99_ratio:.2f}  (target <= {MAX_P99_RATIO:g}: "
              f"{'met' if summary.p99_ratio <= MAX_P99_RATIO else 'NOT met'})")
        print(f"duplicates: {summary.duplicates}  (target 0); exactly once: {'yes' if summary.exactly_once else 'NO'}")
        if args.json:
            outcome = Result("webhook", "WhatsApp webhook under wrk beside a bare endpoint (issues 6, 15)",
                             "python -m bench.bench_webhook " + " ".join(argv if argv is not None else sys.argv[1:]),
                             figures=summary.figures(), seconds=time.perf_counter() - started,
                             started_at=started_at, notes=[setting, "medians of the rounds; the printed output has each round's figures"])
            outcome.save(args.json)
    finally:
        remove_keys(client, run_prefix)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
