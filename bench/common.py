"""What the benchmark scripts share: a Redis of their own for the run, the Hub simulator in a process of
its own, the median of rounds."""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
import requests

from config.settings import redis_db_url
from sandbox.stack import RedisServer

ROOT = Path(__file__).resolve().parent.parent
#: Redis database a benchmark flushes when it cannot start its own redis-server (a test database).
BENCH_DB = 10


@contextmanager
def private_redis() -> Iterator[str]:
    """A private, non-persistent redis-server on a free loopback port for the run (no test that
    flushes a shared database can take a scope's lease away mid-run); without redis-server,
    database ``BENCH_DB`` of $REDIS_URL, flushed."""
    if shutil.which("redis-server") is None:
        url = redis_db_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), BENCH_DB)
        redis.Redis.from_url(url).flushdb()
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="kmrl-bench-redis-") as directory:
        server = RedisServer(directory)
        try:
            yield server.url
        finally:
            server.stop()


#: Bearer token of a benchmark's Hub simulator (loopback only, for the run).
HUB_TOKEN = "kmrl-bench-hub-token"


class HubProcess:
    """The Hub simulator as a process of its own (``python -m sandbox.hub --memory``), so that it does not
    compete with the benchmark's connector for one interpreter lock: ``url``, ``token``, ``reset()``,
    ``state()``, ``close()`` (SIGTERM, then SIGKILL). Blobs go to ``data_dir``; the index stays in memory."""

    def __init__(self, data_dir: str | Path, *, token: str = HUB_TOKEN) -> None:
        self.token = token
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sandbox.hub", "--port", "0", "--token", token, "--data-dir", str(data_dir),
             "--memory", "--log-level", "WARNING"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the Hub simulator process did not start (exit {self.process.wait()})")
        self.url = str(json.loads(line)["url"])

    def _admin(self, method: str, path: str) -> Any:
        response = requests.request(method, f"{self.url}{path}", headers={"Authorization": f"Bearer {self.token}"},
                                    timeout=120)
        response.raise_for_status()
        return response.json() if response.content else None

    def reset(self) -> None:
        """Forgets every stored document and count (and removes their bytes)."""
        self._admin("POST", "/_sim/reset")

    def state(self) -> dict[str, Any]:
        """Everything received (GET /_sim/state)."""
        return dict(self._admin("GET", "/_sim/state"))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def __enter__(self) -> HubProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (the middle one of an odd count, the mean of the two middle ones of an even)."""
    return float(statistics.median(values))


@contextmanager
def counting_round_trips() -> Iterator[list[int]]:
    """Counts the request/response exchanges every redis-py connection of this process makes."""
    from redis.connection import Connection

    count = [0]
    original = Connection.send_packed_command

    def counted(self: Any, command: Any, check_health: Any = True) -> Any:
        count[0] += 1
        return original(self, command, check_health)

    Connection.send_packed_command = counted  # type: ignore[method-assign]
    try:
        yield count
    finally:
        Connection.send_packed_command = original  # type: ignore[method-assign]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used so far, seconds (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
