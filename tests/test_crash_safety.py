"""Nothing lost, nothing uploaded twice: a run SIGKILLed between the Hub's acknowledgement and the
state update, then run again."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_child(redis_url: str, hub, tmp_path: Path, count: int, kill_at: int = 0,
              outbox: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KILL_AT": str(kill_at), "SAVE_EVERY": "7", "LOG_FILE": str(tmp_path / "child.log"),
           "OUTBOX": "1" if outbox else "0"}
    return subprocess.run([sys.executable, "-m", "tests.crash_child", redis_url, hub.url, hub.token,
                           str(tmp_path), str(count)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


#: The crash child's ACK_BATCH_SIZE: the most documents a kill may leave acknowledged by the Hub and
#: unrecorded (README "Crashes": one batch, the uploads in flight among them).
BATCH = 8


@pytest.mark.parametrize("kill_at", [1, 13, 30])
def test_sigkill_after_hub_ack_loses_nothing_and_repeats_at_most_one_batch(redis_url, hub, tmp_path, kill_at):
    count = 30
    crashed = run_child(redis_url, hub, tmp_path, count, kill_at=kill_at)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    assert kill_at <= len(hub.sim.documents) <= kill_at + 3  # the k-th reached the Hub, plus those in flight
    finished = run_child(redis_url, hub, tmp_path, count)
    while finished.stdout.startswith("locked"):  # the dead run's lease has not expired yet
        time.sleep(0.3)
        finished = run_child(redis_url, hub, tmp_path, count)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert finished.stdout.split()[0] == "ok"
    assert len(hub.sim.documents) == count
    repeats = {key: n for key, n in hub.sim.uploads_per_key.items() if n > 1}
    assert 1 <= len(repeats) <= BATCH and all(n == 2 for n in repeats.values())  # the killed one at least
    assert all(n == 1 for n in hub.sim.stored_per_key.values())


@pytest.mark.parametrize("kill_at", [3, 8, 21])
def test_sigkill_inside_an_outbox_batch_loses_nothing(redis_url, hub, tmp_path, kill_at):
    count = 30
    crashed = run_child(redis_url, hub, tmp_path, count, kill_at=kill_at, outbox=True)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    finished = run_child(redis_url, hub, tmp_path, count, outbox=True)
    while finished.stdout.startswith("locked"):
        time.sleep(0.3)
        finished = run_child(redis_url, hub, tmp_path, count, outbox=True)
    assert finished.returncode == 0 and finished.stdout.split()[0] == "ok", finished.stderr[-2000:]
    outbox = tmp_path / "outbox"
    folders = [p for p in outbox.iterdir() if not p.name.startswith((".", "_"))]
    assert len(folders) == count
    for folder in folders:
        meta = json.loads((folder / "metadata.json").read_text())
        assert hashlib.sha256((folder / meta["stored_as"]).read_bytes()).hexdigest() == folder.name
    assert not [p for p in outbox.iterdir() if p.name.startswith(".tmp-")]
