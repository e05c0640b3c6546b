"""What a simulator started on its own (``python -m sandbox.NAME``) prints, and how it waits.

Every simulator's ``__main__`` says the same three things, in this order, on stdout: where it listens,
the lines to put in ``.env`` (or to ``export``) so that the service uses it, and how to stop it. The
lines are ``NAME=value``, one per line, as a ``.env`` file takes them; the secrets in them are the
sandbox's own, never a real system's.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Mapping
from typing import TextIO


def announce(what: str, url: str, settings: Mapping[str, str], *, out: TextIO | None = None) -> None:
    """Prints ``what`` and ``url``, then ``settings`` as ``.env`` lines, then how to stop (flushed: a
    parent reading the pipe sees it at once)."""
    import sys

    stream = out or sys.stdout
    stream.write(f"{what} simulator listening on {url}\n")
    stream.write("# for the service, put these lines in .env (or export them):\n")
    stream.writelines(f"{name}={value}\n" for name, value in settings.items())
    stream.write("# Ctrl-C (or SIGTERM) stops it\n")
    stream.flush()


def wait_for_stop() -> None:
    """Blocks until SIGINT or SIGTERM (either ends the wait quietly, without a traceback)."""
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    while not stopped.wait(0.5):
        pass
