"""Email watcher idle cost: one watcher process for 5 accounts of 10 folders each, when nothing happens.

A private Dovecot on loopback (sandbox/dovecot.py) holds 5 mailbox users with 10 folders each; the
accounts come from an EMAIL_ACCOUNTS_FILE, as an operator configures department mailboxes. The
watcher runs as the service runs it (``python -m watchers``, its start-up included, state and
broker in a private redis-server). Once every account's record says ``connected``, the process is
left alone for ``--seconds``: its CPU time (user + system, all threads, from /proc) over that window
is the share of one core it costs, and its resident memory at the end (and peak) is its memory.

Modes: ``notify`` (Dovecot offers NOTIFY: one connection per account) and ``idle``
(EMAIL_WATCH_MODE=idle: IDLE on 4 folders and one polling connection for the other 6, 25
connections in all, polling every EMAIL_WATCH_POLL_SECONDS).

Targets (issue 16): under 100 MB RSS and under 1% of a core.

    .venv/bin/python -m bench.bench_watcher_idle [--mode notify|idle|both] [--seconds 30] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis

from bench.common import ROOT, private_redis
from bench.report import Figure, Result, met
from sandbox.dovecot import DovecotServer

ACCOUNTS = 5
FOLDERS = 10
#: Targets from the issue.
TARGET_RSS_MB = 100
TARGET_CPU_PERCENT = 1.0
#: Seconds to wait for every account to connect.
CONNECT_TIMEOUT = 60.0
#: Seconds left after connecting before the window opens (start-up work settles).
SETTLE_SECONDS = 3.0


@dataclass
class IdleCost:
    mode: str
    accounts: int
    folders: int
    connections: int
    seconds: float
    cpu_percent: float
    rss_mb: float
    peak_rss_mb: float


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of every thread of ``pid`` so far, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15 of stat)


def _memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid``, MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def _accounts_file(server: DovecotServer, directory: Path) -> tuple[Path, dict[str, str]]:
    """Users with their folders on ``server`` and the TOML file naming them; returns (file, passwords env)."""
    lines, env = [], {}
    for index in range(ACCOUNTS):
        user = f"dept{index}@kmrl.test"
        password = f"bench-password-{index}"
        server.add_user(user, password)
        folders = ["INBOX", *(f"Folder{n}" for n in range(1, FOLDERS))]
        for folder in folders:
            server.create_folder(user, folder)
        variable = f"BENCH_MAIL_PASSWORD_{index}"
        env[variable] = password
        lines += ["[[account]]", 'host = "127.0.0.1"', f"port = {server.imaps_port}", f'user = "{user}"',
                  f'password_env = "{variable}"', f"folders = {json.dumps(folders)}",
                  f'ssl_ca_file = "{server.ca_path}"', ""]
    path = directory / "accounts.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path, env


def measure(mode: str, seconds: float, server: DovecotServer, accounts_file: Path, passwords: dict[str, str],
            redis_url: str, directory: Path) -> IdleCost:
    """Starts ``python -m watchers`` in ``mode``, waits for every account, then measures the window."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMAIL_", "KMRL_", "CELERY_", "STATE_"))}
    env.update(passwords)
    env.update({"KMRL_ENV_FILE": "", "EMAIL_ACCOUNTS_FILE": str(accounts_file), "REDIS_URL": redis_url,
                "STATE_REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url,
                "REDBEAT_REDIS_URL": redis_url, "LOG_LEVEL": "WARNING", "LOG_FILE": str(directory / "watch.log"),
                "AUDIT_LOG": str(directory / "audit.log"), "EMAIL_WATCH_MODE": "idle" if mode == "idle" else "auto"})
    process = subprocess.Popen([sys.executable, "-m", "watchers"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + CONNECT_TIMEOUT
        records: list[dict[str, str]] = []
        while time.monotonic() < deadline:
            records = [client.hgetall(key) for key in client.scan_iter(match="kmrl:watcher:*")]
            if len(records) == ACCOUNTS and all(r.get("state") == "connected" for r in records):
                break
            if process.poll() is not None:
                raise RuntimeError(f"the watcher process exited with {process.returncode}")
            time.sleep(0.2)
        else:
            raise RuntimeError(f"not every account connected within {CONNECT_TIMEOUT} s: {records}")
        time.sleep(SETTLE_SECONDS)
        cpu_before, started = _cpu_seconds(process.pid), time.monotonic()
        time.sleep(seconds)
        cpu_used, elapsed = _cpu_seconds(process.pid) - cpu_before, time.monotonic() - started
        rss, peak = _memory_mb(process.pid)
        connections = sum(int(r.get("connections") or 0) for r in records)
        return IdleCost(mode, ACCOUNTS, FOLDERS, connections, round(elapsed, 1), round(100 * cpu_used / elapsed, 3),
                        round(rss, 1), round(peak, 1))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("notify", "idle", "both"), default="both")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the idle window")
    parser.add_argument("--json", help="also write the figures to this result file")
    args = parser.parse_args(argv)
    modes = ("notify", "idle") if args.mode == "both" else (args.mode,)
    started, wall = datetime.now(UTC), time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="kmrl-bench-watch-") as tmp, private_redis() as redis_url:
        directory = Path(tmp)
        os.chmod(directory, 0o755)  # noqa: S103 - Dovecot (as nobody under root) reads the CA path
        with DovecotServer() as server:
            accounts_file, passwords = _accounts_file(server, directory)
            for mode in modes:
                results.append(measure(mode, args.seconds, server, accounts_file, passwords, redis_url, directory))
    report = Result("watcher", "Email watcher idle cost: 5 accounts of 10 folders, nothing happening (issue 16)",
                    "python -m bench.bench_watcher_idle " + shlex.join(argv if argv is not None else sys.argv[1:]),
                    started_at=started.strftime("%Y-%m-%d %H:%M UTC"))
    for result in results:
        fits = result.rss_mb < TARGET_RSS_MB and result.cpu_percent < TARGET_CPU_PERCENT
        print(f"watcher idle ({result.mode}): {result.accounts} accounts x {result.folders} folders, "
              f"{result.connections} connections: {result.cpu_percent:.3f}% of a core over {result.seconds} s "
              f"(target < {TARGET_CPU_PERCENT}%), RSS {result.rss_mb} MB, peak {result.peak_rss_mb} MB "
              f"(target < {TARGET_RSS_MB} MB){'' if fits else '  ** over target **'}")
        where = f"{result.mode}, {result.connections} connections"
        report.figures += [
            Figure(f"CPU while idle ({where})", result.cpu_percent, "% of a core", f"< {TARGET_CPU_PERCENT}% (issue 16)",
                   met(result.cpu_percent, below=TARGET_CPU_PERCENT), note=f"over {result.seconds} s"),
            Figure(f"RSS ({where})", result.rss_mb, "MB", f"< {TARGET_RSS_MB} MB (issue 16)",
                   met(result.rss_mb, below=TARGET_RSS_MB), note=f"peak {result.peak_rss_mb} MB"),
        ]
    report.seconds = time.perf_counter() - wall
    if args.json:
        report.save(args.json)
    return 0  # a missed target is a figure, not a failure of the benchmark


if __name__ == "__main__":
    sys.exit(main())
