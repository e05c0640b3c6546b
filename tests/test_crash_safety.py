"""Nothing lost, nothing uploaded twice: a run SIGKILLed between the Hub's acknowledgement and the
state update, then run again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_child(redis_url: str, hub, tmp_path: Path, count: int, kill_at: int = 0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KILL_AT": str(kill_at), "SAVE_EVERY": "7", "LOG_FILE": str(tmp_path / "child.log")}
    return subprocess.run([sys.executable, "-m", "tests.crash_child", redis_url, hub.url, hub.token,
                           str(tmp_path), str(count)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("kill_at", [1, 13, 30])
def test_sigkill_after_hub_ack_loses_nothing_and_repeats_at_most_one_upload(redis_url, hub, tmp_path, kill_at):
    count = 30
    crashed = run_child(redis_url, hub, tmp_path, count, kill_at=kill_at)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    assert len(hub.sim.documents) == kill_at  # the last one reached the Hub, its record did not
    finished = run_child(redis_url, hub, tmp_path, count)
    while finished.stdout.startswith("locked"):  # the dead run's lease has not expired yet
        time.sleep(0.3)
        finished = run_child(redis_url, hub, tmp_path, count)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert finished.stdout.split()[0] == "ok"
    assert len(hub.sim.documents) == count
    repeats = {key: n for key, n in hub.sim.uploads_per_key.items() if n > 1}
    assert len(repeats) <= 1 and all(n == 2 for n in repeats.values())
    assert all(n == 1 for n in hub.sim.stored_per_key.values())
