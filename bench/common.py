"""What the benchmark scripts share: a Redis of their own for the run."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from config.settings import redis_db_url
from sandbox.stack import RedisServer

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
