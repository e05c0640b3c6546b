"""``celery -A tests.scheduler_worker_app worker``: the service's app with the fake sources registered.

Worker subprocesses in tests import this instead of ``scheduler`` so the fakes of
tests/scheduler_fakes.py exist in the worker too; everything else is the production app.
"""

from __future__ import annotations

from connectors import registry
from scheduler import app
from tests.scheduler_fakes import FAKE_SOURCES

for _source in FAKE_SOURCES:
    registry.register(_source)

__all__ = ["app"]
