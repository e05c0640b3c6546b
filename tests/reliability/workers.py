"""Worker processes for fault tests: ``kmrl-connectors`` in a subprocess, run to the end or killed.

A ``Worker`` runs the real CLI (``python -m cli``, what the ``kmrl-connectors`` script runs) with an
environment built from scratch (``Bed.env`` + ``service_env``), so nothing from the developer's
shell or ``.env`` leaks in. Its stdout and stderr go to files (a killed process cannot fill a pipe),
and the scope lines ``sync`` prints are parsed into ``RunResult.states``.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.hub import RunningHub

ROOT = Path(__file__).resolve().parents[2]
#: Variables of the test process a worker inherits; everything else it gets is set on purpose.
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "PYTHONHASHSEED")
#: A sync line: "<source> <scope>: <state>  fetched=..."
_SCOPE_LINE = re.compile(r"^(?P<source>[a-z]+) (?P<scope>.+?): (?P<state>[a-z_]+)  ")
#: Longest one worker run may take before the test calls it hung; seconds.
RUN_TIMEOUT = 300.0


@dataclass
class RunResult:
    """One finished (or killed) worker run."""

    returncode: int
    stdout: str
    stderr: str
    states: dict[str, str] = field(default_factory=dict)

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL

    @property
    def all_ok(self) -> bool:
        return bool(self.states) and all(state == "ok" for state in self.states.values())

    @property
    def locked(self) -> bool:
        return any(state == "locked" for state in self.states.values())

    def describe(self) -> str:
        return f"rc={self.returncode} states={self.states} stderr tail: {self.stderr[-1500:]}"


class Worker:
    """Starts ``kmrl-connectors`` processes with ``env``; each run's output lands under ``root``."""

    def __init__(self, env: Mapping[str, str], root: Path) -> None:
        self.env = {name: os.environ[name] for name in INHERITED if name in os.environ}
        self.env.update(env)
        self.env["PYTHONPATH"] = str(ROOT)
        self.root = root
        self.runs = 0
        root.mkdir(parents=True, exist_ok=True)

    def start(self, *args: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
        self.runs += 1
        out, err = self.root / f"run-{self.runs}.out", self.root / f"run-{self.runs}.err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            process = subprocess.Popen([sys.executable, "-m", "cli", "-v", *args], cwd=ROOT, env=self.env,
                                       stdout=stdout, stderr=stderr)
        return process, out, err

    @staticmethod
    def result(process: subprocess.Popen[bytes], out: Path, err: Path) -> RunResult:
        stdout = out.read_text(errors="replace")
        states = {}
        for line in stdout.splitlines():
            match = _SCOPE_LINE.match(line)
            if match:
                states[match["scope"]] = match["state"]
        return RunResult(process.returncode, stdout, err.read_text(errors="replace"), states)

    def run(self, *args: str, timeout: float = RUN_TIMEOUT) -> RunResult:
        """Runs one command to its end."""
        process, out, err = self.start(*args)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"kmrl-connectors {' '.join(args)} hung for {timeout} s; "
                                 f"stderr: {err.read_text(errors='replace')[-2000:]}") from None
        return self.result(process, out, err)


def hub_uploads(hub: RunningHub) -> int:
    """Upload requests the Hub has received so far (every try counts)."""
    return sum(list(hub.sim.uploads_per_key.values()))


@dataclass
class KillRound:
    """What one kill round did: whether the worker was alive when killed, and how far it had come."""

    killed: bool
    early: bool
    uploads_before: int
    uploads_after: int
    result: RunResult


def kill_round(worker: Worker, hub: RunningHub, rng: random.Random, source: str, *, max_step: int,
               early_share: float = 0.2) -> KillRound:
    """Starts ``sync source`` and SIGKILLs it at a random moment.

    Mostly the moment is after the Hub has received a random number (1 to ``max_step``) of new
    uploads, plus a random 0-50 ms so the kill lands anywhere in the pipeline (download, spool,
    upload, state update, cursor save). With probability ``early_share`` it is a random time in the
    first 1.5 s instead: while the process starts, takes its lease or logs in.
    """
    before = hub_uploads(hub)
    process, out, err = worker.start("sync", source)
    early = rng.random() < early_share
    if early:
        deadline = time.monotonic() + rng.uniform(0.0, 1.5)
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    else:
        target = before + rng.randint(1, max(1, max_step))
        deadline = time.monotonic() + RUN_TIMEOUT
        while process.poll() is None and hub_uploads(hub) < target and time.monotonic() < deadline:
            time.sleep(0.002)
        if process.poll() is None:
            time.sleep(rng.uniform(0.0, 0.05))
    alive = process.poll() is None
    if alive:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    return KillRound(alive and process.returncode == -signal.SIGKILL, early, before, hub_uploads(hub),
                     worker.result(process, out, err))


def run_until(worker: Worker, source: str, done: Callable[[RunResult], bool], *, attempts: int = 30,
              pause: float = 0.5, args: tuple[str, ...] = ()) -> list[RunResult]:
    """Runs ``sync source`` again and again (as the beat would) until ``done`` says so; the runs.

    A run that finds the scope still leased by a killed worker, or ends in a transient error, is
    simply followed by the next one, ``pause`` seconds later, as the next tick would.
    """
    results: list[RunResult] = []
    for _ in range(attempts):
        result = worker.run("sync", source, *args)
        results.append(result)
        if done(result):
            return results
        time.sleep(pause)
    raise AssertionError(f"sync {source} did not finish in {attempts} runs; last: {results[-1].describe()}")
