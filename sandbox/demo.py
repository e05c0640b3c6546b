"""``make demo``: the whole service, once, against simulated sources; then everything stops.

    make demo                      # installs into .venv first, then runs: python -m sandbox.demo

1. Redis: the server at REDIS_URL (``make demo`` starts a private redis-server when none answers).
   The demo runs the service's normal layout there (database 0 broker, 1 results, 2 RedBeat,
   3 state) only when databases 0 to 4 are all empty, and empties 0 to 3 again when it ends, so it
   leaves that server as it found it. When any of them holds keys (a service may be using it) the
   demo touches nothing there: it says so in one line and starts a private redis-server of its own
   (or, without the binary, says how to get one and stops). It never uses the test databases
   (5-10, 15) or the reserved ones (11-14).
2. The simulated sources (sandbox/stack.py), seeded with the KMRL sample set (sandbox/samples.py):
   Dovecot for email when installed (email is shown as skipped, with the reason, when it is not),
   Maximo, Microsoft Graph with Entra ID, the WhatsApp Cloud API posting signed webhooks to our
   web app, and the Knowledge Hub simulator, which keeps what it receives under ``var/demo/hub``.
3. A real Celery worker and beat, as production runs them (``celery -A scheduler worker`` and
   ``celery -A scheduler beat``), with one-minute source intervals. Beat ticks on whole minutes, so
   instead of waiting for the minute to turn the demo tells RedBeat that each source's entry is
   overdue (``fire_beat_entries_now``): beat itself sends the ticks within seconds, the worker
   fans them out per scope and runs the pipeline. The demo waits until
   every seeded item is settled (the service's own run history in Redis says so), prints a table
   per source (fetched, new, duplicate, failed; by language; by department), one row per
   content-only document (neutral names: how its text was read, by text layer or OCR, its language,
   its department and the terms that decided it), where the documents
   landed and ``kmrl-connectors status``, then stops beat, the worker, the simulators and Dovecot
   (and its private redis-server) and checks that none of their processes is left.

Exit status 0 when the round settled every item without failure, 1 otherwise. Everything the demo
writes stays in ``var/demo`` (Hub blobs and index, logs, audit log) for a look afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import redis

from base.state import StateStore
from config.settings import PROJECT_ROOT, redis_db_url
from sandbox.report import (
    content_table,
    hub_breakdown,
    runs_since,
    summary_tables,
    totals_by_source,
    wait_for_round,
)
from sandbox.samples import kmrl_samples
from sandbox.samples_content import SITE as CONTENT_SITE
from sandbox.stack import (
    ALL_SOURCES,
    RedisLayout,
    RedisServer,
    ServiceProcess,
    Stack,
    celery_argv,
    fire_beat_entries_now,
    redis_answers,
    session_members,
    used_databases,
)
from utils.tables import safe_url

#: Where the demo keeps what it writes (emptied at the start of each demo).
DEMO_DIR = PROJECT_ROOT / "var" / "demo"
#: Databases of the service's layout the demo may use on a shared server (all must be empty).
SERVICE_DATABASES = (0, 1, 2, 3, 4)
#: Longest wait for the round, seconds (the whole demo must end within two minutes of installing).
ROUND_TIMEOUT = 80.0
#: Seed of the sample set.
DEFAULT_SEED = 2024


def out(line: str = "") -> None:
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the generated KMRL documents")
    parser.add_argument("--dir", type=Path, default=DEMO_DIR, help="where the demo writes (default var/demo)")
    parser.add_argument("--timeout", type=float, default=ROUND_TIMEOUT, help="longest wait for the round, seconds")
    parser.add_argument("--install-seconds", type=int, default=None,
                        help="how long installing took (make demo measures it), to report")
    args = parser.parse_args(argv)
    started = time.monotonic()
    out("KMRL Connectors demo")
    install = args.install_seconds
    if install is not None:
        out("  install     " + (".venv was already up to date (0 s)" if install == 0 else
                              f"installed into .venv in {install} s"))
    root: Path = args.dir.resolve()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    with ExitStack() as cleanup:
        layout = _choose_redis(root, cleanup)
        if layout is None:
            return 1
        ok = _run(root, layout, args.seed, args.timeout, cleanup)
    out(f"Everything the demo started is stopped and no process of it is left; the demo took "
        f"{time.monotonic() - started:.0f} s. Its files stay in {_shown(root)}.")
    return 0 if ok else 1


def _choose_redis(root: Path, cleanup: ExitStack) -> RedisLayout | None:
    """The Redis layout of the demo (see the module docstring), registering its clean-up."""
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    reason = ""
    if not redis_answers(url):
        reason = f"no Redis answers at {safe_url(url)}"
    else:
        used = used_databases(url, SERVICE_DATABASES)
        if not used:
            out(f"  redis       {safe_url(redis_db_url(url, 0))}: databases 0-3 (broker, results, beat, state); "
                "they were empty and are emptied again at the end")
            cleanup.callback(_flush, url, (0, 1, 2, 3))
            return RedisLayout.service(url)
        which = f"databases {', '.join(map(str, used))} hold" if len(used) > 1 else f"database {used[0]} holds"
        reason = f"{which} data on {safe_url(url)}, so the demo leaves that server alone"
    if shutil.which("redis-server") is None:
        out(f"  redis       {reason}, and redis-server is not installed: apt-get install -y redis-server, "
            "or set REDIS_URL to a Redis whose databases 0-4 are empty")
        return None
    server = RedisServer(root / "redis")
    cleanup.callback(server.stop)
    out(f"  redis       {reason}: using a private redis-server on {safe_url(server.url)} (stopped at the end)")
    return RedisLayout.service(server.url)


def _flush(url: str, dbs: tuple[int, ...]) -> None:
    for db in dbs:
        client = redis.Redis.from_url(redis_db_url(url, db))
        try:
            client.flushdb()
        finally:
            client.close()


def _run(root: Path, layout: RedisLayout, seed: int, timeout: float, cleanup: ExitStack) -> bool:
    stack = Stack(root=root, redis=layout)
    cleanup.callback(stack.stop)
    stack.start()
    samples = kmrl_samples(seed)
    stack.seed(samples)
    for what, where in stack.describe():
        out(f"  simulator   {what:<28} {where}")
    for source, why in stack.skipped.items():
        out(f"  skipped     {source}: {why}")
    out(f"  seeded      {len(samples.mails)} mails with {samples.count('email')} attachments, "
        f"{len(samples.work_orders)} Maximo work orders with {samples.count('maximo')} doclinks, "
        f"{samples.count('sharepoint')} SharePoint files in {len({e.site for e in samples.sharepoint})} sites, "
        f"{samples.count('whatsapp')} WhatsApp media messages (English, Malayalam, mixed; PDF, DOCX, XLSX, PNG)")

    env = stack.process_env()
    logs = root / "logs"
    since = time.time()
    worker = ServiceProcess("worker", celery_argv("-A", "scheduler", "worker", "--loglevel=info", "--concurrency=2",
                                                  "-n", f"kmrl-demo-{os.getpid()}@%h"),
                            env=env, cwd=PROJECT_ROOT, log_path=logs / "worker.log")
    processes = [worker]
    cleanup.callback(_stop_all, processes)
    beat = ServiceProcess("beat", celery_argv("-A", "scheduler", "beat", "--loglevel=info"), env=env,
                          cwd=PROJECT_ROOT, log_path=logs / "beat.log")
    processes.append(beat)
    # Beat ticks on whole minutes; rather than wait for the minute to turn, RedBeat is told the
    # sources' entries are overdue, and beat sends their ticks at its next loop.
    fire_beat_entries_now(layout.redbeat_url, [f"sync-{source}" for source in stack.active_sources])
    out(f"  celery      worker (pid {worker.pid}, 2 processes) and beat (pid {beat.pid}, RedBeat) started; "
        "beat sends each source's tick now; waiting for the round ...")

    expected = {source: samples.count(source) for source in stack.active_sources}
    state = StateStore.from_url(layout.state_url, prefix=stack.key_prefix)
    cleanup.callback(state.redis.close)
    try:
        waited = wait_for_round(state, since, expected, timeout=timeout, check=_died(processes))
    except (TimeoutError, RuntimeError) as exc:
        out(f"  round       did not finish: {exc}")
        for process in processes:
            out(f"--- last lines of {_shown(process.log_path)}")
            out(process.tail(15))
        return False
    out(f"  round       every seeded item settled {waited:.1f} s after beat started")
    _stop_all(processes)

    totals = totals_by_source(runs_since(state, since))
    hub = stack.running.hub
    out()
    out(summary_tables(list(ALL_SOURCES), totals, hub_breakdown(hub), stack.skipped))
    out()
    hub_state = hub.state()
    links = sum(1 for link in hub_state["provenance"] if link.get("status") in (200, 201))
    out(f"Where the documents landed: the Knowledge Hub simulator at {stack.running.hub_url} stored "
        f"{len(hub_state['documents'])} documents ({links} more source item(s) linked to one already stored)")
    if any(entry.site == CONTENT_SITE for entry in samples.sharepoint):
        out()
        out(f"What the documents say: the files in {CONTENT_SITE} have neutral names, so their language and "
            "department come from their text alone (a scan is read by OCR):")
        out(content_table(hub, CONTENT_SITE))
        out()
    out(f"  files     {_shown(hub.blob_dir)}/<sha256>")
    out(f"  index     {_shown(hub.index_path)}  (each document's metadata: source, language, department, ...)")
    out(f"  audit     {_shown(Path(stack.env()['AUDIT_LOG']))}  (one line per document decision)")
    out(f"  logs      {_shown(logs)}/  (kmrl-connectors.log, worker.log, beat.log)")
    out()
    out("$ kmrl-connectors status")
    out(_cli(["status"], env))
    failed = sum(t.get("failed", 0) for t in totals.values())
    return failed == 0


def _died(processes: list[ServiceProcess]) -> Callable[[], str | None]:
    def check() -> str | None:
        for process in processes:
            if not process.alive():
                return f"the {process.name} exited with {process.process.returncode}"
        return None
    return check


def _stop_all(processes: list[ServiceProcess]) -> None:
    """Beat first (no new ticks), then the worker; each with every process of its session."""
    for process in reversed(processes):
        process.stop()
        left = session_members(process.pid)
        if left:
            out(f"  warning     {process.name}: processes {left} did not stop")
    processes.clear()


def _cli(args: list[str], env: dict[str, str]) -> str:
    """``kmrl-connectors ARGS`` (the installed entry point) and what it printed."""
    script = Path(sys.executable).with_name("kmrl-connectors")
    argv = [str(script)] if script.exists() else [sys.executable, "-c", "import sys, cli; sys.exit(cli.main())"]
    result = subprocess.run([*argv, *args], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=60, check=False)
    return (result.stdout + (result.stderr if result.returncode else "")).rstrip()


def _shown(path: Path) -> str:
    """``path`` relative to the project when it is inside it (shorter to read)."""
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    raise SystemExit(main())
