"""A private redis-server with append-only persistence, for tests that restart or kill Redis.

``PrivateRedis(directory)`` runs ``redis-server`` in the foreground on a free loopback port with
``--appendonly yes`` (fsync every second, Redis' default), so a restart keeps what was written:
``restart()`` is a clean shutdown (Redis fsyncs the append-only file on SIGTERM) followed, after
``down_for`` seconds, by a start on the same port from the same files.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import redis

from sandbox.servers import free_port
from tests.conftest import skip_or_fail

#: Seconds to wait for the server to answer PING after a start, and to exit after SIGTERM.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def require_redis_server() -> str:
    """The redis-server binary, or a skip saying how to install it."""
    binary = shutil.which("redis-server")
    if not binary:
        skip_or_fail("redis-server is not installed: apt-get install -y redis-server")
    return binary


class PrivateRedis:
    """A redis-server of our own; ``url(db)`` addresses one of its databases."""

    def __init__(self, directory: Path) -> None:
        self.binary = require_redis_server()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> PrivateRedis:
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - owned by the child process
        self._process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--appendonly", "yes", "--save", "", "--daemonize", "no", "--protected-mode", "yes"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                try:
                    # Still loading the append-only file answers LOADING: not ready yet.
                    if client.ping():
                        return self
                except (redis.ConnectionError, redis.BusyLoadingError):
                    if time.monotonic() > deadline or self._process.poll() is not None:
                        raise RuntimeError(f"redis-server did not start; see {self.directory / 'redis.log'}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        """A clean shutdown: SIGTERM, which makes Redis fsync its append-only file before it exits."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def restart(self, *, down_for: float = 1.0, while_down: Callable[[], object] | None = None) -> None:
        """Stops the server, calls ``while_down`` (if given), leaves it down ``down_for`` seconds, starts
        it again with its data."""
        self.stop()
        if while_down is not None:
            while_down()
        time.sleep(down_for)
        self.start()
        self.restarts += 1

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
