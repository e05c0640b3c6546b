"""Progress of an in-process sync: one live line on a terminal, plain lines otherwise.

``SyncProgress.watch(connector)`` counts the changes each scope yields while the pipeline reads
them, so the display needs nothing from the pipeline beyond the connector contract.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, TextIO

from base.contract import Checkpoint

#: Redraws of the live line per second, at most.
REFRESH_PER_SECOND = 8
#: Without a terminal, a progress line every this many changes.
PLAIN_EVERY = 500


class SyncProgress:
    """Reports scope starts, changes read, and scope ends on ``stream``.

    tty: redraw one line in place (``\\r``) instead of printing lines.
    """

    def __init__(self, stream: TextIO, *, tty: bool) -> None:
        self.stream = stream
        self.tty = tty
        self._label = ""
        self._count = 0
        self._started = 0.0
        self._drawn = 0.0

    def watch(self, connector: Any) -> None:
        """Wraps ``connector.list_changes`` so every change it yields is counted."""
        original = connector.list_changes

        def counted(scope: str, cursor: Any) -> Iterator[Any]:
            label = getattr(connector, "scope_label", lambda name: name)(scope)  # a library's name, not its id
            self.start(f"{connector.name} {label}")
            try:
                for change in original(scope, cursor):
                    if not isinstance(change, Checkpoint):  # a safe point in the feed, not a change
                        self.step()
                    yield change
            finally:
                self.stop()

        # An instance attribute shadows the method for this run only; the class is untouched.
        connector.list_changes = counted

    def start(self, label: str) -> None:
        self._label, self._count, self._started, self._drawn = label, 0, time.monotonic(), 0.0
        if self.tty:
            self._draw()
        else:
            self.stream.write(f"{label}: reading changes\n")
            self.stream.flush()

    def step(self) -> None:
        self._count += 1
        if self.tty:
            if time.monotonic() - self._drawn >= 1 / REFRESH_PER_SECOND:
                self._draw()
        elif self._count % PLAIN_EVERY == 0:
            self.stream.write(f"{self._label}: {self._count} changes read\n")
            self.stream.flush()

    def stop(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
        else:
            self.stream.write(f"{self._label}: {self._count} changes read in "
                              f"{time.monotonic() - self._started:.1f} s\n")
        self.stream.flush()

    def _draw(self) -> None:
        self._drawn = time.monotonic()
        elapsed = self._drawn - self._started
        self.stream.write(f"\r\x1b[K{self._label}: {self._count} changes read, {elapsed:.0f} s")
        self.stream.flush()
