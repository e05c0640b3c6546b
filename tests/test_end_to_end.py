"""The whole service end to end, as the README runs it: the demo's stack (sandbox/stack.py), a real
Celery worker and beat started with the README's ``--detach`` commands, two rounds, then the README's
operations commands against what is left.

Round 1 ingests the KMRL sample set from all four sources. Between the rounds new items arrive at
every source and one SharePoint file is deleted; round 2 must ingest exactly the new items and report
the deletion. At the end the Hub simulator holds exactly the expected documents: none lost, none
twice (one upload request per Idempotency-Key), each with the language and department its source text
gives. Redis test databases: 5 broker, 6 results, 7 RedBeat, 8 state (tests/conftest.py).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from base.state import StateStore
from sandbox.dovecot import require_dovecot
from sandbox.report import runs_since, totals_by_source, wait_for_round
from sandbox.samples import SampleSet, kmrl_samples
from sandbox.stack import RedisLayout, Stack, fire_beat_entries_now, session_members, wait_until_session_gone
from tests.conftest import flushed_db_url
from tests.readme_commands import readme_command

SEED = 8080
#: Longest wait for one round, seconds. A round takes a few seconds once the worker is up (about
#: 8 s here when idle); this only bounds a hang (a dead worker or beat ends the wait at once), so it
#: leaves room for a machine whose cores are all busy.
ROUND_TIMEOUT = 240.0
PROJECT = Path(__file__).resolve().parents[1]


class Detached:
    """A README ``celery ... --detach --pidfile=... --logfile=...`` command, with the files moved into
    ``folder``; ``stop()`` ends its whole session (the daemon and every child it forked)."""

    def __init__(self, readme_line: str, folder: Path, env: dict[str, str]) -> None:
        words = shlex.split(readme_line)
        assert words[0] == "celery" and "--detach" in words, readme_line
        name = words[3]  # worker / beat
        self.pidfile = folder / f"{name}.pid"
        self.logfile = folder / f"{name}.log"
        args = [w for w in words[1:] if not w.startswith(("--pidfile=", "--logfile="))]
        args += [f"--pidfile={self.pidfile}", f"--logfile={self.logfile}"]
        launcher = subprocess.run([sys.executable, "-m", "celery", *args], env=env, cwd=PROJECT,
                                  capture_output=True, text=True, timeout=60, check=False)
        assert launcher.returncode == 0, f"{readme_line}: {launcher.stdout}{launcher.stderr}"
        deadline = time.monotonic() + 20
        while not (self.pidfile.exists() and self.pidfile.read_text().strip()):
            assert time.monotonic() < deadline, f"{name} wrote no pidfile"
            time.sleep(0.05)
        self.pid = int(self.pidfile.read_text().strip())
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        self.sid = int(stat.rsplit(")", 1)[1].split()[3])

    def alive(self) -> bool:
        return bool(session_members(self.sid))

    def stop(self) -> list[int]:
        """SIGTERM to the daemon, then SIGKILL to anything of its session still there; returns what was left."""
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        if wait_until_session_gone(self.sid, timeout=25):
            return []
        left = session_members(self.sid)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_until_session_gone(self.sid, timeout=5)
        return left


def cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    script = Path(sys.executable).with_name("kmrl-connectors")
    result = subprocess.run([str(script), *args], env=env, cwd=PROJECT, capture_output=True, text=True, timeout=90,
                            check=False)
    return result.returncode, result.stdout + result.stderr


def expected_counts(samples: SampleSet, sources: list[str]) -> dict[str, int]:
    counts = {source: samples.count(source) for source in sources}
    counts["sharepoint"] += len(samples.sharepoint_deletions)
    return counts


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    require_dovecot()
    layout = RedisLayout(*(flushed_db_url(db) for db in (5, 6, 7, 8)))
    with Stack(root=tmp_path / "stack", redis=layout) as running:
        yield running


def test_two_rounds_deliver_every_document_once_and_report_the_deletion(stack: Stack, tmp_path: Path):
    sources = stack.active_sources
    assert sources == ["email", "whatsapp", "maximo", "sharepoint"], stack.skipped
    one, two = kmrl_samples(SEED, 1), kmrl_samples(SEED, 2)
    stack.seed(one)
    env = stack.process_env()
    state = StateStore.from_url(stack.redis.state_url, prefix=stack.key_prefix)
    daemons: list[Detached] = []
    try:
        # -- round 1: the worker and beat exactly as the README runs them in the background ----------------
        since_one = time.time()
        daemons.append(Detached(readme_command("celery -A scheduler worker --loglevel=info --concurrency=2 --detach"),
                                tmp_path, env))
        daemons.append(Detached(readme_command("celery -A scheduler beat --loglevel=info --detach"), tmp_path, env))
        fire_beat_entries_now(stack.redis.redbeat_url, [f"sync-{s}" for s in sources])

        def check() -> str | None:
            dead = [str(d.pidfile) for d in daemons if not d.alive()]
            return f"stopped: {dead}" if dead else None

        wait_for_round(state, since_one, expected_counts(one, sources), timeout=ROUND_TIMEOUT, check=check)
        first = totals_by_source(runs_since(state, since_one))
        for source in sources:
            assert first[source]["new"] + first[source]["duplicate"] == one.count(source), (source, first[source])
            assert first[source]["failed"] == 0, (source, first[source])
        assert first["email"]["duplicate"] == 1  # the board minutes, forwarded: linked, not uploaded again

        inspect = subprocess.run([sys.executable, "-m", *shlex.split(readme_command("celery -A scheduler inspect"))],
                                 env=env, cwd=PROJECT, capture_output=True, text=True, timeout=60, check=False)
        assert inspect.returncode == 0 and "OK" in inspect.stdout, inspect.stdout + inspect.stderr

        # -- round 2: new items at every source, one SharePoint file deleted ------------------------------
        since_two = time.time()
        stack.seed(two)
        fire_beat_entries_now(stack.redis.redbeat_url, [f"sync-{s}" for s in sources])
        wait_for_round(state, since_two, expected_counts(two, sources), timeout=ROUND_TIMEOUT, check=check)
        second = totals_by_source(runs_since(state, since_two))
        for source in sources:
            assert second[source]["new"] == two.count(source), (source, second[source])
            assert second[source]["duplicate"] == second[source]["failed"] == 0, (source, second[source])
        assert second["sharepoint"]["deleted"] == 1
        assert sum(second[s]["deleted"] for s in sources) == 1
    finally:
        left = {str(d.pidfile): d.stop() for d in reversed(daemons)}
    assert not any(left.values()), f"processes left after SIGTERM: {left}"

    # -- the Hub: exactly the expected documents, each uploaded once, the deletion recorded -------------------
    hub = stack.running.hub.state()
    expected = one.distinct_sha256() | two.distinct_sha256()
    stored = {doc["sha256"]: doc for doc in hub["documents"].values()}
    assert set(stored) == expected
    assert set(hub["uploads_per_key"]) == expected
    assert set(hub["uploads_per_key"].values()) == {1}
    assert [link["status"] for link in hub["provenance"]] == [201]
    samples = {f.sha256: (source, f) for s in (one, two) for source, f in s.files()}
    for sha256, doc in stored.items():
        source, sample = samples[sha256]
        meta = doc["metadata"]
        assert meta["source"] == source
        if not (source == "whatsapp" and sample.mime_type.startswith("image/")):  # WhatsApp images carry no name
            assert meta["filename"] == sample.filename
        assert (meta["language"], meta["department"]) == (sample.language, sample.department), sample.key
    [(_, _, path)] = two.sharepoint_deletions
    deleted = next(entry for entry in one.sharepoint if entry.path == path).file
    assert [(d["source"], d["status"]) for d in hub["deletions"]] == [("sharepoint", 204)]
    assert stored[deleted.sha256]["deleted"] and sum(doc["deleted"] for doc in stored.values()) == 1

    # -- the README's operations commands against what the service left -------------------------------------
    code, output = cli(env, *shlex.split(readme_command("kmrl-connectors status"))[1:])
    assert code == 0 and all(source in output for source in sources), output
    code, output = cli(env, *shlex.split(readme_command("kmrl-connectors check"))[1:])
    assert code == 0, output
    code, output = cli(env, *shlex.split(readme_command("kmrl-connectors deadletter list"))[1:])
    assert code == 0, output
    code, output = cli(env, *shlex.split(readme_command("kmrl-connectors sync email --dry-run"))[1:])
    assert code == 0, output
    code, output = cli(env, *shlex.split(readme_command("kmrl-connectors sync all"))[1:])
    assert code == 0, output
    after = stack.running.hub.state()
    assert after["uploads_per_key"] == hub["uploads_per_key"], "a sync after both rounds uploaded again"
    state.redis.close()
