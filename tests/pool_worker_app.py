"""``celery -A tests.pool_worker_app worker``: the service's app with two tasks that use the process
pool from inside a prefork child (a daemonic process), for tests/test_pool.py. They write what they
saw into the state Redis under ``pool-test:*``."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from base.pool import PoolError, pool_for
from scheduler import app, service
from tests import pool_tasks


def _record(name: str, value: dict[str, Any]) -> None:
    service.state.redis.set(f"pool-test:{name}", json.dumps(value))


@app.task(name="kmrl_test.pool_round_trip", ignore_result=True)
def pool_round_trip() -> None:
    """Runs a task and a crashing task in the pool; records the pids and the crash's error."""
    pool = pool_for(service.settings)
    child = pool.run(pool_tasks.child_pid, None)
    try:
        pool.run(pool_tasks.segfault, None)
        error = ""
    except PoolError as exc:
        error = f"{type(exc).__name__}: {exc}"
    _record("round_trip", {"worker_pid": os.getpid(), "child_pid": child, "crash": error,
                           "after_crash": pool.run(pool_tasks.echo, "still working"), "pids": pool.pids})


@app.task(name="kmrl_test.pool_busy_child", ignore_result=True)
def pool_busy_child() -> None:
    """Leaves a pool child busy (a 60 s task) in a thread and records its pid."""
    pool = pool_for(service.settings)
    started = threading.Event()

    def busy() -> None:
        started.set()
        try:
            pool.run(pool_tasks.sleep, 60, seconds=120)
        except PoolError:
            pass  # the pool is closed under it when the worker stops

    threading.Thread(target=busy, daemon=True).start()
    started.wait(5)
    while not pool.pids:
        threading.Event().wait(0.05)
    _record("busy", {"worker_pid": os.getpid(), "child_pids": pool.pids})


__all__ = ["app"]
