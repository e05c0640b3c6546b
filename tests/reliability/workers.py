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

import redis

from sandbox.hub import RunningHub
from tests.reliability.gate import Gate

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


#: An early kill comes at a random moment at most this long after the run took its lease, seconds (it
#: logs in, lists, downloads its first item), or as its first upload reaches the Hub if that is sooner.
EARLY_WINDOW = 0.5
#: After the target upload reached the Hub, the kill waits a random 0 to this, seconds, so that it lands
#: anywhere in the pipeline (the upload's answer, the record, the cursor save, the next download).
KILL_JITTER = 0.05
#: How often a wait also looks whether the worker has ended by itself or Redis changed, seconds.
POLL = 0.01
#: Longest a killed worker's leftovers may take to clear (its upload inside the Hub, its lease), seconds;
#: they take milliseconds and the lease TTL, so only a hung server or Redis comes near this.
SETTLE_TIMEOUT = 60.0
#: A new worker is started once a killed one's lease has at most this long to live, seconds: about what
#: a worker takes to start. Only time rides on it: a run that still finds the scope locked is simply
#: started again, as the next tick would.
LEASE_HEAD_START = 1.0


class Leases:
    """The leases (``lock:{source}:{scope}``) of one source's scopes in the state Redis, as a test sees them."""

    def __init__(self, state_url: str, source: str, *, prefix: str = "kmrl:") -> None:
        self.client = redis.Redis.from_url(state_url)
        self.pattern = f"{prefix}lock:{source}:*"
        self.source = source

    def held(self) -> dict[bytes, tuple[bytes, float]]:
        """Each live lease: key -> (the holder's token, seconds it has left)."""
        leases: dict[bytes, tuple[bytes, float]] = {}
        for key in self.client.scan_iter(match=self.pattern):
            token, ttl_ms = self.client.get(key), self.client.pttl(key)  # PTTL: -2 once it has lapsed
            if isinstance(token, bytes) and ttl_ms != -2:
                leases[key] = (token, ttl_ms / 1000 if ttl_ms >= 0 else float("inf"))
        return leases

    def wait_until_lapsing(self, within: float = 0.0, *, timeout: float = SETTLE_TIMEOUT) -> None:
        """Waits until every lease has at most ``within`` seconds left (0: none is held)."""
        deadline = time.monotonic() + timeout
        while True:
            left = {key: ttl for key, (_, ttl) in self.held().items() if ttl > within}
            if not left:
                return
            assert time.monotonic() < deadline, f"leases of {self.source} still held after {timeout} s: {left}"
            time.sleep(POLL)

    def close(self) -> None:
        self.client.close()


@dataclass
class KillRound:
    """What one kill round did.

    killed: the worker was alive when SIGKILLed (always, unless it ended by itself before).
    early: the kill was aimed before the run's first upload. target: the upload of the round after which
    the kill was aimed (0 for an early kill). uploads: upload requests of the round that reached the Hub.
    """

    killed: bool
    early: bool
    target: int
    uploads: int
    result: RunResult


def wait_for_gate(process: subprocess.Popen[bytes], gate: Gate, condition: Callable[[Gate], bool], *,
                  what: str, err: Path | None = None, timeout: float = RUN_TIMEOUT) -> bool:
    """Waits until ``condition(gate)`` holds (True) or ``process`` has ended (False); a worker that neither
    gets there nor ends in ``timeout`` seconds is hung (AssertionError naming ``what``)."""
    hung_at = time.monotonic() + timeout
    while process.poll() is None:
        if gate.wait_for(condition, timeout=POLL):
            return True
        if time.monotonic() > hung_at:
            tail = err.read_text(errors="replace")[-2000:] if err else ""
            raise AssertionError(f"the worker did not reach {what} in {timeout} s; stderr: {tail}")
    return condition(gate)


def kill_round(worker: Worker, gate: Gate, leases: Leases, rng: random.Random, source: str, *, remaining: int,
               max_step: int, early_share: float = 0.2) -> KillRound:
    """Starts ``sync source`` and SIGKILLs it part-way: never after it could have finished.

    remaining: documents the Hub does not have yet (at least 2). The Hub's upload ``gate`` lets at most
    ``remaining - 1`` uploads of this round through (later ones wait inside the Hub until the kill), so
    the run cannot complete before the kill lands, however fast or slow the machine.

    Mostly the kill is aimed at progress: the ``target``-th upload request of the round reaching the Hub
    (``target`` random in 1 to ``max_step``), plus a random 0 to ``KILL_JITTER`` s. With probability
    ``early_share`` it is aimed before any upload (none is let through): once the run holds its lease
    (seen in Redis), at a random moment of the next ``EARLY_WINDOW`` s, or when its first upload arrives,
    whichever comes first. A run that finds the scope locked ends by itself, not killed.
    """
    if remaining < 2:
        raise ValueError(f"a kill round needs at least 2 documents left to interrupt, not {remaining}")
    early = rng.random() < early_share
    target = 0 if early else rng.randint(1, max(1, min(max_step, remaining - 1)))
    delay = rng.uniform(0.0, EARLY_WINDOW if early else KILL_JITTER)
    base = gate.arrived
    gate.allow(0 if early else min(remaining - 1, target + max_step))
    dead_leases = leases.held()
    process, out, err = worker.start("sync", source)
    hung_at = time.monotonic() + RUN_TIMEOUT
    try:
        if early:
            while process.poll() is None and gate.arrived == base and all(
                    dead_leases.get(key, (None,))[0] == token for key, (token, _) in leases.held().items()):
                assert time.monotonic() < hung_at, f"sync {source} did not take its lease in {RUN_TIMEOUT} s"
                time.sleep(POLL)
            until = time.monotonic() + delay
            while process.poll() is None and (left := until - time.monotonic()) > 0:
                if gate.wait_for(lambda g: g.arrived > base, timeout=min(POLL, left)):
                    break
        elif wait_for_gate(process, gate, lambda g: g.arrived - base >= target, what=f"upload {target}", err=err):
            time.sleep(delay)
        alive = process.poll() is None
        if alive:
            process.send_signal(signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=SETTLE_TIMEOUT)
        # The killed worker's uploads held at the gate never reach the Hub; one already inside may still
        # be finishing, and must be counted before the next round looks at what is stored.
        gate.drop_held()
        settled = gate.wait_for(lambda g: g.inside == 0, timeout=SETTLE_TIMEOUT)
        gate.open()
    assert settled, f"the Hub still handles a killed worker's upload after {SETTLE_TIMEOUT} s"
    return KillRound(alive and process.returncode == -signal.SIGKILL, early, target, gate.arrived - base,
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
