"""Fixtures every test module shares: a real Redis, settings rooted in a temporary folder, the Hub.

Redis databases used by tests (DESIGN.md: 5 to 10 and 15, never others):

| db | for                                                   |
|----|-------------------------------------------------------|
| 15 | service state in unit and integration tests (default) |
| 5  | Celery broker in worker tests                         |
| 6  | Celery results in worker tests                        |
| 7  | RedBeat schedule and lock in beat tests               |
| 8  | service state of worker, demo and end-to-end tests    |
| 9  | fault-injection (reliability) tests                   |
| 10 | spare, for tests that need a second isolated state    |

Each test that takes ``redis_url`` (or a fixture built on it) starts with that database flushed.
``REDIS_URL`` names the server (``make test`` exports it; default 127.0.0.1:6379).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import redis

from base.state import StateStore
from config.settings import Settings, redis_db_url

STATE_DB = 15
SHARED_TESTDATA = Path(__file__).resolve().parents[1].parent / "shared" / "testdata"


def skip_or_fail(reason: str) -> NoReturn:
    """Skips locally, saying why; in CI (CI=true) a missing prerequisite is a failure, never a skip."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason)
    pytest.skip(reason)


def server_url() -> str:
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def flushed_db_url(db: int) -> str:
    """The URL of test database ``db``, flushed now."""
    if db not in (5, 6, 7, 8, 9, 10, 15):
        raise ValueError(f"tests may use Redis databases 5-10 and 15 only, not {db}")
    url = redis_db_url(server_url(), db)
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture
def redis_url() -> str:
    """Test database 15, flushed."""
    return flushed_db_url(STATE_DB)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def state(redis_url: str) -> StateStore:
    return StateStore.from_url(redis_url)


def make_settings(root: Path, state_url: str, **overrides: Any) -> Settings:
    """Settings whose folders all live under ``root`` and whose state is ``state_url``."""
    values: dict[str, Any] = {
        "redis_url": state_url,
        "state_redis_url": state_url,
        "hub_outbox_dir": str(root / "outbox"),
        "spool_dir": str(root / "spool"),
        "deadletter_dir": str(root / "deadletter"),
        "held_dir": str(root / "held"),
        "log_file": str(root / "logs" / "kmrl-connectors.log"),
        "audit_log": str(root / "logs" / "audit.log"),
        "spool_min_free_mb": 1,
        "content_rules_file": "",
    }
    values.update(overrides)
    environ = dict(values.pop("environ", {}) or {})
    return Settings(**values, environ=environ)


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    """Settings for one test: outbox, spool, dead letters and logs under ``tmp_path``; state in db 15."""
    return make_settings(tmp_path, redis_url)


@pytest.fixture
def outbox_dir(settings: Settings) -> str:
    return settings.hub_outbox_dir


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Any]:
    """A running Knowledge Hub simulator (``.url``, ``.sim``, token ``hub.token``)."""
    from sandbox.hub import SANDBOX_TOKEN, running_hub

    with running_hub(token=SANDBOX_TOKEN, data_dir=tmp_path / "hub-data") as running:
        yield running


@pytest.fixture
def mime_corpus() -> Path:
    """../shared/testdata/mime (skips, saying why, where ../shared is absent; fails in CI)."""
    folder = SHARED_TESTDATA / "mime"
    if not folder.is_dir():
        skip_or_fail(f"the shared MIME corpus is not at {folder}")
    return folder
