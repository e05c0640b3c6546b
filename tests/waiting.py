"""Waiting in tests for what another thread or process does: poll a condition, fail with what was awaited."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(predicate: Callable[[], Any], *, timeout: float = 20.0, what: str = "condition",
             interval: float = 0.05) -> Any:
    """Calls ``predicate`` every ``interval`` seconds until it returns something true, and returns that;
    raises AssertionError naming ``what`` after ``timeout`` seconds (a bound on a hang, not a measurement)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
