"""A small process supervisor: what ``kmrl-connectors run`` uses to keep a worker (with its beat), the
web app and the watcher running side by side on one machine.

Each child runs in its own process group. SIGTERM, SIGINT or SIGHUP to the supervisor is passed to
every child; the supervisor then waits up to ``grace`` seconds and kills what is left. When one child
exits on its own, the others are stopped the same way and the supervisor exits with that child's
code: one process missing is an outage, and the machine's init system (systemd, Docker's restart
policy) restarts the whole set, rather than the set limping on without, say, its worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from utils.logging import get_logger

log = get_logger("supervisor")

#: Seconds children get to stop after SIGTERM before they are killed (a worker finishes its run's
#: current batch; Celery's warm shutdown waits for its tasks).
DEFAULT_GRACE = 60.0
POLL_INTERVAL = 0.2


@dataclass
class Child:
    """One supervised command: ``name`` (for logs) and ``argv``."""

    name: str
    argv: Sequence[str]
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    """Starts ``children`` with ``env`` and keeps them until one exits or a signal arrives.

    grace: seconds between SIGTERM and SIGKILL when stopping the set.
    """

    def __init__(self, children: Sequence[Child], *, env: Mapping[str, str] | None = None,
                 grace: float = DEFAULT_GRACE) -> None:
        self.children = list(children)
        self.env = dict(os.environ if env is None else env)
        self.grace = grace
        self._signalled: int | None = None

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signalled = signum

    def run(self) -> int:
        """Runs the set; returns the exit code: that of the child that exited first, or 0 when the set
        was stopped by a signal and every child stopped in time (1 when one had to be killed)."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            for child in self.children:
                child.process = subprocess.Popen(list(child.argv), env=self.env, start_new_session=True)
                log.info("process_started", process=child.name, pid=child.process.pid)
            code = self._wait()
        finally:
            stopped_cleanly = self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if code is None:
            return 0 if stopped_cleanly else 1
        return code

    def _wait(self) -> int | None:
        while self._signalled is None:
            for child in self.children:
                if child.process is not None and (code := child.process.poll()) is not None:
                    log.error("process_exited", process=child.name, pid=child.process.pid, code=code,
                              effect="stopping the others; the init system restarts the set")
                    return code if code != 0 else 1
            time.sleep(POLL_INTERVAL)
        log.info("supervisor_stopping", signal=signal.Signals(self._signalled).name)
        return None

    def _stop_all(self) -> bool:
        """SIGTERM to every child's group, then SIGKILL after ``grace``; True when none needed SIGKILL."""
        for child in self.children:
            if child.alive():
                _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        clean = True
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("process_killed", process=child.name, pid=child.process.pid, grace=self.grace)
                _signal_group(child, signal.SIGKILL)
                child.process.wait(timeout=10)
                clean = False
            # The group may hold children that outlived their parent (a prefork pool's workers).
            _signal_group(child, signal.SIGKILL)
        return clean


def _signal_group(child: Child, signum: int) -> None:
    if child.process is None:
        return
    try:
        os.killpg(child.process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
