"""Email benchmark: the whole ingest of a 10,000-message mailbox, beside mbsync on the same mailbox.

A private Dovecot on loopback (sandbox/dovecot.py) holds N messages of about 28 KB, each with one
20 KB attachment (distinct bytes, so nothing is deduplicated). Each round, in alternating order:

- the connector as a user runs it: ``kmrl-connectors sync email`` (the installed command, its start-up
  included, settings from the environment as env.example gives them: the local outbox with its
  default durability, every batch fsynced before its records and cursor are written; the service
  and audit logs), state in a private redis-server flushed before the round; then a second sync with
  nothing new, timed inside a process;
- mbsync (isync, default settings, so it fsyncs every message) pulling the same folder into an
  empty maildir on the same disk as the outbox;
- the connector alone, without the pipeline: fetch, parse, and read and hash every attachment
  (what the connector itself costs, beside what storing and recording each document costs).

Prints the median of the rounds: messages/s, MB/s (message bytes on the server), peak RSS of each
process, their ratio, and the no-change sync time. One untimed mbsync pass first warms Dovecot's
index and the page cache for both. Logging at WARNING without a log file (the audit log is kept).

    .venv/bin/python -m bench.bench_email [--messages 10000] [--rounds 3] [--dir .bench/email]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import redis

from bench.common import private_redis
from sandbox.dovecot import DovecotServer, crlf

#: Size of each attachment before base64, bytes.
ATTACHMENT_BYTES = 20 * 1024
#: The benchmark's mailbox user and password.
USER, PASSWORD = "bench@kmrl.test", "bench-password"
#: Targets from the email issue.
TARGET_RSS_MB = 150
TARGET_NO_CHANGE_MS = 100


def make_message(index: int, rng: random.Random) -> bytes:
    """One ~28 KB message: headers, a short body, one 20 KB attachment of random bytes."""
    attachment = base64.encodebytes(rng.randbytes(ATTACHMENT_BYTES))
    return crlf(
        f"Return-Path: <depot{index % 7}@kochimetro.org>\n"
        f"Received: from mx.kochimetro.org (mx.kochimetro.org [10.20.0.{index % 250}]) by imap.kmrl.co.in\n"
        f"\twith ESMTPS id {index:08x}; Mon, 1 Jan 2024 10:{index % 60:02d}:00 +0530\n"
        f"From: Depot {index % 7} <depot{index % 7}@kochimetro.org>\n"
        "To: maintenance@kmrl.co.in\n"
        f"Subject: Daily inspection report {index}\n"
        f"Date: Mon, 1 Jan 2024 10:{index % 60:02d}:00 +0530\n"
        f"Message-ID: <{index}.bench@kochimetro.org>\n"
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=\"kmrl-bench-boundary\"\n\n"
        "--kmrl-bench-boundary\n"
        "Content-Type: text/plain; charset=utf-8\n\n"
        f"Inspection report {index} for the Aluva-Petta line is attached.\n\n"
        "--kmrl-bench-boundary\n"
        f"Content-Type: application/pdf; name=\"inspection-{index}.pdf\"\n"
        f"Content-Disposition: attachment; filename=\"inspection-{index}.pdf\"\n"
        "Content-Transfer-Encoding: base64\n\n".encode() + attachment + b"--kmrl-bench-boundary--\n")


@dataclass
class Measure:
    seconds: float
    peak_rss_mb: float
    messages: int
    documents: int = 0
    no_change_ms: float = 0.0


def _wait(process: subprocess.Popen[bytes]) -> tuple[int, float]:
    """Waits for ``process``; (exit status, its own peak RSS in MB)."""
    _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss / 1024


def run_mbsync(server: DovecotServer, root: Path, messages: int) -> Measure:
    """mbsync pulling INBOX into an empty maildir under ``root``, with isync's defaults (FSync yes)."""
    maildir = root / "maildir"
    shutil.rmtree(root, ignore_errors=True)
    maildir.mkdir(parents=True)
    config = root / "mbsyncrc"
    config.write_text(
        f"IMAPAccount bench\nHost localhost\nPort {server.imaps_port}\nUser {USER}\nPass {PASSWORD}\n"
        f"SSLType IMAPS\nCertificateFile {server.ca_path}\n\n"
        "IMAPStore bench-far\nAccount bench\n\n"
        f"MaildirStore bench-near\nPath {maildir}/\nInbox {maildir}/INBOX\n\n"
        "Channel bench\nFar :bench-far:\nNear :bench-near:\nPatterns INBOX\nSync Pull\nCreate Near\n"
        "SyncState *\n", encoding="utf-8")
    log = root / "mbsync.log"
    started = time.perf_counter()
    with open(log, "wb") as out:
        process = subprocess.Popen(["mbsync", "-q", "-c", str(config), "bench"], stdout=out, stderr=out)
        code, rss = _wait(process)
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"mbsync failed ({code}): {log.read_text(errors='replace')[-3000:]}")
    fetched = len(os.listdir(maildir / "INBOX" / "cur")) + len(os.listdir(maildir / "INBOX" / "new"))
    if fetched != messages:
        raise SystemExit(f"mbsync pulled {fetched} of {messages} messages")
    return Measure(seconds, rss, fetched)


def cli_environment(server: DovecotServer, root: Path, state_url: str, *, fsync: bool = True,
                    pool: bool = False) -> dict[str, str]:
    """The environment ``kmrl-connectors`` gets: this mailbox, state in ``state_url``, every folder
    under ``root``; nothing read from a developer's .env."""
    return {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root"), "KMRL_ENV_FILE": "",
            "REDIS_URL": state_url, "STATE_REDIS_URL": state_url, "EMAIL_HOST": "127.0.0.1",
            "EMAIL_PORT": str(server.imaps_port), "EMAIL_USER": USER, "EMAIL_PASSWORD": PASSWORD,
            "EMAIL_SSL_CA_FILE": server.ca_path, "EMAIL_FOLDERS": "INBOX", "EMAIL_PARSE_IN_POOL": "1" if pool else "0",
            "HUB_OUTBOX_DIR": str(root / "outbox"), "HUB_OUTBOX_FSYNC": "1" if fsync else "0",
            "SPOOL_DIR": str(root / "spool"), "DEADLETTER_DIR": str(root / "deadletter"),
            "HELD_DIR": str(root / "held"), "LOG_FILE": str(root / "logs" / "kmrl-connectors.log"),
            "AUDIT_LOG": str(root / "logs" / "audit.log"), "SPOOL_MIN_FREE_MB": "64"}


def run_cli_sync(server: DovecotServer, root: Path, state_url: str, messages: int, *, fsync: bool = True,
                 pool: bool = False) -> Measure:
    """``kmrl-connectors sync email`` in a fresh process, timed from its start to its exit; then the
    outbox is counted (every message's attachment must be there) and a no-change sync is timed."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    redis.Redis.from_url(state_url).flushdb()
    command = Path(sys.executable).with_name("kmrl-connectors")
    out_path, err_path = root / "cli.out", root / "cli.err"
    started = time.perf_counter()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        process = subprocess.Popen([str(command), "sync", "email"], stdout=out, stderr=err,
                                   env=cli_environment(server, root, state_url, fsync=fsync, pool=pool),
                                   cwd=root)
        code, rss = _wait(process)
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"kmrl-connectors sync email failed ({code}): "
                         f"{out_path.read_text(errors='replace')[-2000:]}{err_path.read_text(errors='replace')[-2000:]}")
    stored = [entry for entry in os.scandir(root / "outbox") if not entry.name.startswith((".", "_"))]
    if len(stored) != messages:
        raise SystemExit(f"kmrl-connectors sync email stored {len(stored)} of {messages} documents")
    no_change = _no_change_ms(server, root, state_url)
    return Measure(seconds, rss, messages, len(stored), no_change)


def _no_change_ms(server: DovecotServer, root: Path, state_url: str) -> float:
    """A sync with nothing new, on the state the last sync left, timed inside a fresh process."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.bench_email", "--child", "--no-change", "--port", str(server.imaps_port),
         "--ca", server.ca_path, "--root", str(root), "--state", state_url],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], check=False)
    if result.returncode != 0:
        raise SystemExit(f"no-change sync failed: {result.stderr[-3000:]}")
    return float(json.loads(result.stdout.strip().splitlines()[-1])["no_change_ms"])


def run_connector(server: DovecotServer, root: Path, state_url: str, messages: int, *, fsync: bool = True,
                  alone: bool = False, pool: bool = False) -> Measure:
    """A full sync then a no-change sync, in a fresh Python process (its peak RSS is its own); or,
    ``alone``, the connector's listing with every attachment read and hashed, no pipeline. ``pool``:
    messages are parsed in the process pool (EMAIL_PARSE_IN_POOL=1), whose children's memory is not
    in the peak RSS; else in the connector's own process, the default."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    redis.Redis.from_url(state_url).flushdb()
    out_path, err_path = root / "child.out", root / "child.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_email", "--child", "--port", str(server.imaps_port), "--ca",
             server.ca_path, "--root", str(root), "--state", state_url, "--fsync", "1" if fsync else "0",
             *(["--alone"] if alone else []), *(["--pool"] if pool else [])],
            stdout=out, stderr=err, cwd=Path(__file__).resolve().parents[1])
        code, rss = _wait(process)
    if code != 0:
        raise SystemExit(f"connector run failed ({code}): {err_path.read_text(errors='replace')[-3000:]}")
    result = json.loads(out_path.read_text().strip().splitlines()[-1])
    if result["new"] != messages:
        raise SystemExit(f"connector ingested {result['new']} of {messages} documents: {result}")
    return Measure(result["seconds"], rss, messages, result["new"], result["no_change_ms"])


def child(port: int, ca: str, root: Path, state_url: str, fsync: bool, alone: bool = False,
          pool: bool = False, no_change: bool = False) -> None:
    """The connector side of one round (run with --child): prints one JSON line."""
    from config.settings import Settings
    from connectors.email_connector import EmailConnector
    from utils.logging import configure_logging

    configure_logging(log_file="", level="WARNING", force=True)
    settings = Settings(redis_url=state_url, state_redis_url=state_url, hub_outbox_dir=str(root / "outbox"),
                        spool_dir=str(root / "spool"), deadletter_dir=str(root / "deadletter"), log_file="",
                        audit_log=str(root / "audit.log"), spool_min_free_mb=1, log_level="WARNING",
                        hub_fsync=fsync)
    connector = EmailConnector("127.0.0.1", port, ssl_ca_file=ca, settings=settings, parse_in_pool=pool)
    credentials = {"email": USER, "password": PASSWORD}
    if alone:
        alone_listing(connector, credentials)
        return
    if no_change:
        started = time.perf_counter()
        again = connector.sync_documents(credentials)
        elapsed = time.perf_counter() - started
        if again.state != "ok" or again.totals["new"]:
            raise SystemExit(f"the no-change sync found work: {again.as_dict()}")
        print(json.dumps({"no_change_ms": elapsed * 1000}))
        return
    started = time.perf_counter()
    summary = connector.sync_documents(credentials)
    seconds = time.perf_counter() - started
    if summary.state != "ok":
        raise SystemExit(f"sync ended {summary.state}: {[s.error for s in summary.scopes]}")
    started = time.perf_counter()
    again = connector.sync_documents(credentials)
    nothing_new = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "new": summary.totals["new"], "no_change_ms": nothing_new * 1000,
                      "no_change_fetched": again.totals["fetched"]}))


def alone_listing(connector: object, credentials: dict[str, str]) -> None:
    """Lists every change and reads and hashes every attachment, without the pipeline."""
    import hashlib

    from base.contract import Item
    from connectors.email_connector import EmailConnector

    assert isinstance(connector, EmailConnector)
    documents = 0
    started = time.perf_counter()
    with connector.connect(credentials):
        for scope in connector.scopes():
            for change in connector.list_changes(scope, None):
                if isinstance(change, Item) and change.open is not None:
                    digest = hashlib.sha256()
                    for chunk in change.open():
                        digest.update(chunk)
                    documents += 1
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "new": documents, "no_change_ms": 0.0}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=".bench/email", help="outbox and maildir (same disk), kept for a look")
    parser.add_argument("--diagnose-fsync", action="store_true",
                        help="also time one connector round with HUB_OUTBOX_FSYNC=0 (not the target setting)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--fsync", default="1", help=argparse.SUPPRESS)
    parser.add_argument("--alone", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-change", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pool", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compare-pool", action="store_true",
                        help="also time, in every round, the connector parsing in the process pool "
                             "(EMAIL_PARSE_IN_POOL=1)")
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.port, args.ca, Path(args.root), args.state, args.fsync == "1", args.alone, args.pool,
              args.no_change)
        return 0
    if shutil.which("mbsync") is None:
        raise SystemExit("mbsync is not installed: apt-get install -y isync")
    bench_dir = Path(args.dir).resolve()
    bench_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(20240101)
    with DovecotServer() as server, private_redis() as state_url:
        server.add_user(USER, PASSWORD)
        started = time.perf_counter()
        server.seed(USER, (make_message(i, rng) for i in range(args.messages)))
        seeded = time.perf_counter() - started
        mailbox_bytes = sum(f.stat().st_size for f in (server.maildir(USER) / "cur").iterdir())
        run_mbsync(server, bench_dir / "warm-up", args.messages)
        ours: list[Measure] = []
        theirs: list[Measure] = []
        bare: list[Measure] = []
        pooled: list[Measure] = []
        for round_no in range(args.rounds):
            order: tuple[str, ...] = (("connector", "mbsync", "alone") if round_no % 2 == 0
                                      else ("alone", "mbsync", "connector"))
            if args.compare_pool:
                order = ("pooled", *order) if round_no % 2 == 0 else (*order, "pooled")
            for which in order:
                root = bench_dir / f"round-{round_no + 1}-{which}"
                if which == "connector":
                    ours.append(run_cli_sync(server, root, state_url, args.messages))
                elif which == "alone":
                    bare.append(run_connector(server, root, state_url, args.messages, alone=True))
                elif which == "pooled":
                    pooled.append(run_cli_sync(server, root, state_url, args.messages, pool=True))
                else:
                    theirs.append(run_mbsync(server, root, args.messages))
        unsynced = (run_connector(server, bench_dir / "no-fsync", state_url, args.messages, fsync=False)
                    if args.diagnose_fsync else None)
    report(args.messages, mailbox_bytes, seeded, ours, theirs, bare, bench_dir)
    if pooled:
        seconds = statistics.median(r.seconds for r in pooled)
        print(f"connector parsing in the process pool (EMAIL_PARSE_IN_POOL=1): {seconds:.2f} s, "
              f"{args.messages / seconds:.0f} msg/s, parent's peak RSS {max(r.peak_rss_mb for r in pooled):.0f} MB; "
              "rounds (s): " + ", ".join(f"{r.seconds:.2f}" for r in pooled))
    if unsynced is not None:
        print(f"diagnostic, outbox without fsync: {unsynced.seconds:.2f} s, "
              f"{args.messages / unsynced.seconds:.0f} msg/s (the default keeps fsync on)")
    return 0


def report(messages: int, mailbox_bytes: int, seeded: float, ours: list[Measure], theirs: list[Measure],
           bare: list[Measure], bench_dir: Path) -> None:
    mb = mailbox_bytes / 1e6

    def row(name: str, runs: list[Measure]) -> dict[str, float]:
        seconds = statistics.median(r.seconds for r in runs)
        return {"seconds": seconds, "messages_per_s": messages / seconds, "mb_per_s": mb / seconds,
                "peak_rss_mb": max(r.peak_rss_mb for r in runs)}

    connector, mbsync, alone = row("connector", ours), row("mbsync", theirs), row("alone", bare)
    no_change = statistics.median(r.no_change_ms for r in ours)
    ratio = connector["messages_per_s"] / mbsync["messages_per_s"]
    print(f"Email: {messages} messages, {mb:.0f} MB on the server ({mailbox_bytes / messages / 1024:.1f} KiB each, "
          f"one 20 KiB attachment), seeded in {seeded:.1f} s; median of {len(ours)} rounds")
    print(f"{'':28}{'seconds':>9}{'msg/s':>9}{'MB/s':>8}{'peak RSS MB':>13}")
    for name, data in (("kmrl-connectors sync email", connector), ("mbsync (maildir, fsync)", mbsync),
                       ("connector alone, no pipeline", alone)):
        print(f"{name:28}{data['seconds']:9.2f}{data['messages_per_s']:9.0f}{data['mb_per_s']:8.1f}"
              f"{data['peak_rss_mb']:13.1f}")
    print(f"ratio connector/mbsync: {ratio:.2f} (target >= 1.00); peak RSS {connector['peak_rss_mb']:.0f} MB "
          f"(target < {TARGET_RSS_MB}); no-change sync {no_change:.0f} ms (target < {TARGET_NO_CHANGE_MS})")
    print("rounds (s): connector " + ", ".join(f"{r.seconds:.2f}" for r in ours)
          + "; mbsync " + ", ".join(f"{r.seconds:.2f}" for r in theirs)
          + "; connector alone " + ", ".join(f"{r.seconds:.2f}" for r in bare))
    results = {"messages": messages, "mailbox_mb": mb, "connector": connector, "mbsync": mbsync,
               "connector_alone": alone, "ratio": ratio,
               "no_change_ms": no_change, "rounds": {"connector": [asdict(r) for r in ours],
                                                     "mbsync": [asdict(r) for r in theirs],
                                                     "connector_alone": [asdict(r) for r in bare]}}
    (bench_dir / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
