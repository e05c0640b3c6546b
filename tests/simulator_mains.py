"""Starting a sandbox simulator as an operator does (``python -m sandbox.NAME``) and reading what it
announces: the ``NAME=value`` lines it prints for ``.env`` (sandbox/announce.py). Shared by the tests
that use a simulator started on its own."""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
#: Seconds a simulator gets to print its settings.
ANNOUNCE_TIMEOUT = 60.0


def read_announcement(stream: IO[str], *, timeout: float = ANNOUNCE_TIMEOUT) -> tuple[str, dict[str, str]]:
    """(the "listening on" line, the settings) read from ``stream`` up to its "# Ctrl-C" line;
    AssertionError with what was read when it does not come within ``timeout``."""
    lines: queue.Queue[str] = queue.Queue()
    # A thread reads: a blocking readline cannot be given a deadline, and select() does not see what the
    # text layer has buffered already.
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    listening, settings = "", {}
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            raise AssertionError(f"no announcement within {timeout} s: {seen}") from None
        seen.append(line)
        if " simulator listening on " in line:
            listening = line.strip()
        elif re.match(r"^[A-Z][A-Z0-9_]*=", line):
            name, _, value = line.strip().partition("=")
            settings[name] = value
        elif line.startswith("# Ctrl-C"):
            return listening, settings


@contextmanager
def simulator(module: str, args: Sequence[str] = (), *,
              on_stderr: bool = False) -> Iterator[tuple[str, dict[str, str]]]:
    """``python -m sandbox.<module> *args`` running; yields its announcement; stopped (SIGTERM) after."""
    process = subprocess.Popen([sys.executable, "-m", f"sandbox.{module}", *args], cwd=ROOT, text=True,
                               stdout=subprocess.DEVNULL if on_stderr else subprocess.PIPE,
                               stderr=subprocess.PIPE if on_stderr else subprocess.DEVNULL)
    try:
        stream = process.stderr if on_stderr else process.stdout
        assert stream is not None
        yield read_announcement(stream)
    finally:
        process.terminate()
        process.wait(timeout=30)
