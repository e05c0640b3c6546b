"""Exponential backoff with jitter, for loops that reconnect on their own (watchers)."""

from __future__ import annotations

import random
from collections.abc import Callable

#: The first wait after a failure, seconds (before jitter).
DEFAULT_BASE = 1.0  # seconds
#: The longest wait, seconds.
DEFAULT_CAP = 300.0  # seconds


class Backoff:
    """Waits that double after each failure up to ``cap`` ("equal jitter": each wait is drawn
    between half and all of the doubled value, so many clients cut off together do not come back
    together, and none comes back at once).

    base: the first wait before jitter, seconds (default 1).
    cap: the longest wait, seconds (default 300).
    rng: a source of numbers in [0, 1) (default ``random.random``).
    """

    def __init__(self, *, base: float = DEFAULT_BASE, cap: float = DEFAULT_CAP,
                 rng: Callable[[], float] = random.random) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.rng = rng
        self.failures = 0

    def next_wait(self) -> float:
        """The wait after one more failure, seconds."""
        self.failures += 1
        ceiling = min(self.cap, self.base * 2 ** min(self.failures - 1, 60))
        return ceiling / 2 + self.rng() * ceiling / 2

    def reset(self) -> None:
        """After a success: the next failure waits ``base`` again."""
        self.failures = 0
