"""Webhook benchmark: signed WhatsApp notifications from wrk against gunicorn, beside a bare endpoint.

Both apps run under the same gunicorn settings (web/gunicorn_conf.py: 2 workers of 8 threads,
unless overridden) on loopback, one after the other in the same run, each loaded by ``wrk -t2 -c32 -d30s`` posting the same pre-signed bodies
(each a notification of one document message with its own wamid, signed like Meta's). Then every
wamid the webhook answered 200 for must be in the stream exactly once, and nothing else.
Targets (issue 6): at least half the bare endpoint's requests/s, p99 under 20 ms, nothing lost.

State goes to Redis database 10 under a key prefix of this run only (removed afterwards), so the
benchmark never flushes a database another run may be using.

    .venv/bin/python -m bench.bench_webhook [--duration 30] [--connections 32] [--threads 2]
        [--workers 2] [--worker-class gthread] [--worker-threads 8] [--bodies 150000]

Needs wrk (``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import requests
from flask import Flask

from config.settings import redis_db_url
from connectors.whatsapp_inbox import InboundMedia
from sandbox.servers import free_port
from sandbox.whatsapp import inbound_notification, media_message, meta_body, signature

#: Redis database the benchmark writes to (the spare test database, see tests/conftest.py).
BENCH_DB = 10
#: The app secret the benchmark's webhook checks (a benchmark value, not a credential).
BENCH_APP_SECRET = "bench-app-secret"
ROOT = Path(__file__).resolve().parents[1]

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
    """The baseline: a Flask endpoint that only answers 'ok' (gunicorn 'bench.bench_webhook:bare_app()')."""
    app = Flask("bare")

    @app.post("/webhooks/whatsapp")
    def bare() -> str:
        return "ok"

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


class Gunicorn:
    """One gunicorn serving ``app`` on a free loopback port for the ``with`` block."""

    def __init__(self, app: str, *, overrides: list[str], env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, "-m", "gunicorn", "-c", "python:web.gunicorn_conf",
                     "--bind", f"127.0.0.1:{self.port}", *overrides, app]
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Gunicorn:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(self.url + "/healthz", timeout=2)
                return self
            except (requests.ConnectionError, requests.Timeout):
                if self.process.poll() is not None:
                    break
                time.sleep(0.1)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=30, help="seconds per endpoint")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, help="gunicorn workers (default: web/gunicorn_conf.py)")
    parser.add_argument("--worker-class", help="gunicorn worker class, e.g. sync (default: the config's)")
    parser.add_argument("--worker-threads", type=int, help="threads per worker (default: the config's)")
    parser.add_argument("--bodies", type=int, default=150000, help="distinct pre-signed notifications")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")

    state_url = redis_db_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), BENCH_DB)
    prefix = f"kmrl-bench-{secrets.token_hex(4)}:"
    stream = f"{prefix}whatsapp:inbox"
    client = redis.Redis.from_url(state_url)
    client.ping()
    work = Path(tempfile.mkdtemp(prefix="kmrl-bench-webhook-"))
    try:
        print(f"writing {args.bodies} signed notifications ...", flush=True)
        wamids = write_bodies(work / "bodies.txt", args.bodies)
        script = work / "post.lua"
        script.write_text(WRK_SCRIPT % {"bodies": work / "bodies.txt", "path": "/webhooks/whatsapp"})
        env = {**os.environ, "KMRL_ENV_FILE": "", "STATE_REDIS_URL": state_url, "KMRL_KEY_PREFIX": prefix,
               "WHATSAPP_APP_SECRET": BENCH_APP_SECRET, "WHATSAPP_VERIFY_TOKEN": "bench-verify",
               "LOG_FILE": str(work / "web.log"), "LOG_LEVEL": "INFO"}
        overrides = [flag for option, value in (("--workers", args.workers), ("--worker-class", args.worker_class),
                                                ("--threads", args.worker_threads)) if value is not None
                     for flag in (option, str(value))]
        config = subprocess.run([sys.executable, "-c", "import web.gunicorn_conf as c; "
                                 "print(c.workers, c.worker_class, c.threads)"], cwd=ROOT, env=env,
                                capture_output=True, text=True, check=True).stdout.split()
        workers = args.workers or int(config[0])
        worker_class = args.worker_class or config[1]
        threads = args.worker_threads or int(config[2])
        wrk_options = {"threads": args.threads, "connections": args.connections, "duration": args.duration}
        load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
        results: list[WrkResult] = []
        for label, app in (("bare Flask 'ok'", "bench.bench_webhook:bare_app()"),
                           ("webhook (verify + queue)", "web.app:create_app()")):
            print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s against {label} ...", flush=True)
            calls_before = _script_calls(client)
            with Gunicorn(app, overrides=overrides, env=env, log_path=work / f"gunicorn-{len(results)}.log") as server:
                results.append(run_wrk(label, server.url + "/webhooks/whatsapp", script, **wrk_options))
            script_calls = _script_calls(client) - calls_before
            if label.startswith("bare"):
                remove_keys(client, prefix)
        bare, webhook = results

        posted, repeats = sent_wamids(wamids, webhook.sent_per_thread, args.threads)
        queued = stream_wamids(client, stream)
        unique = set(queued)
        duplicates = len(queued) - len(unique)
        strangers = len(unique - posted)
        missing_floor = webhook.ok - repeats - len(unique)  # > 0 means an accepted message is missing

        print()
        print(f"gunicorn -c web/gunicorn_conf.py: {workers} workers, {worker_class}, {threads} threads; "
              f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s; {os.cpu_count()} CPUs; "
              f"load average before: {load_before}")
        print(f"{'endpoint':<26} {'requests':>9} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
              f"{'non-200':>8} {'sock err':>8}")
        for r in results:
            print(f"{r.label:<26} {r.requests:>9} {r.rps:>8.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} {r.max_ms:>7.1f} "
                  f"{r.not_ok:>8} {r.socket_errors:>8}")
        ratio = webhook.rps / bare.rps if bare.rps else 0.0
        print()
        print(f"webhook/bare throughput: {ratio:.2f}  (target >= 0.50: {'met' if ratio >= 0.5 else 'NOT met'})")
        print(f"webhook p99: {webhook.p99_ms:.2f} ms  (target < 20 ms: {'met' if webhook.p99_ms < 20 else 'NOT met'})")
        print(f"stream: {len(queued)} entries, {len(unique)} distinct wamids, {duplicates} stored twice, "
              f"{strangers} never posted; {webhook.ok} answered 200 ({repeats} of them repeats of a wamid)")
        lost = duplicates or strangers or missing_floor > 0
        print(f"Redis script calls during the webhook run: {script_calls} for {len(queued)} messages "
              f"({len(queued) / script_calls if script_calls else 0:.1f} per call; counts every client of this "
              "Redis server)")
        print(f"exactly once: {'yes' if not lost else 'NO'}"
              f" (posted and unanswered at the end: {len(posted) - len(unique) if len(posted) >= len(unique) else 0})")
    finally:
        remove_keys(client, prefix)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
