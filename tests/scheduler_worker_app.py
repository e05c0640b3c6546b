"""``celery -A tests.scheduler_worker_app worker``: the service's app with the fake sources added.

Worker subprocesses in tests import this instead of ``scheduler`` so the fakes of
tests/scheduler_fakes.py exist in the worker too; everything else is the production app.
"""

from __future__ import annotations

import scheduler
from connectors import registry
from scheduler import app
from tests.scheduler_fakes import FAKE_SOURCES

# Settings stay the environment's, read on first use, as for the service's own worker.
scheduler.service.reset(None, sources=registry.sources_with(*FAKE_SOURCES))

__all__ = ["app"]
