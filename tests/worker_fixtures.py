"""A real Celery worker (threads pool, in the test process) running the service's tasks against the fake
sources of tests/scheduler_fakes.py, with broker, results and state in test databases 5, 6 and 8.

Test modules use the fixtures by importing them: ``from tests.worker_fixtures import use, worker``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker

import scheduler
from base.state import StateStore
from config.settings import Settings
from connectors import registry
from tests.conftest import flushed_db_url, make_settings
from tests.scheduler_fakes import FAKE_SOURCES

BROKER_DB, RESULTS_DB, STATE_DB = 5, 6, 8


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The worker, for the whole module. It does not sync at start (these tests count runs)."""
    root = tmp_path_factory.mktemp("worker")
    settings = make_settings(root, flushed_db_url(STATE_DB), broker_url=flushed_db_url(BROKER_DB),
                             result_backend=flushed_db_url(RESULTS_DB), redbeat_redis_url=flushed_db_url(7),
                             environ={"WORKER_LIVENESS_FILE": str(root / "worker.alive"), "SYNC_AT_START": "0"})
    scheduler.configure(settings, sources=registry.sources_with(*FAKE_SOURCES))
    try:
        with start_worker(scheduler.app, pool="threads", concurrency=3, perform_ping_check=False,
                          loglevel="WARNING", shutdown_timeout=15) as running:
            yield running
    finally:
        scheduler.service.reset(scheduler.service.settings, sources=registry.SOURCES)


@pytest.fixture
def use(worker: Any, tmp_path: Path) -> Callable[..., tuple[Settings, StateStore]]:
    """Points the worker's tasks at fresh state (db 8 flushed, folders under tmp_path) and ``env``."""
    def configure(**env: str) -> tuple[Settings, StateStore]:
        settings = make_settings(tmp_path, flushed_db_url(STATE_DB), broker_url=scheduler.app.conf.broker_url,
                                 result_backend=scheduler.app.conf.result_backend, environ=env)
        scheduler.service.reset(settings)
        return settings, StateStore.from_url(settings.state_redis_url)
    return configure
