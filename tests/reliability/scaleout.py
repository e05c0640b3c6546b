"""Celery workers on machines of their own: each ``celery -A scheduler worker`` in its own network
namespace, sharing the eight scopes (sites) of one Maximo through one Redis and one Hub.

``fleet(root, links, docs_per_scope=...)`` starts, bound to the first link's host-side address (the
"service address", reached from every namespace over its own veth and the host's routing, as from
another machine): a private redis-server (state in database 0, the broker in 1), the Hub simulator
behind a ``Recorder`` (arrival time, client address and idempotency key of every request) and one
upload ``Gate`` per namespace (matching uploads from that namespace's address), and the Maximo
simulator holding ``docs_per_scope`` attachments on each of ``SITES``. ``Fleet.start_worker(i)``
runs the production worker command under ``ip netns exec`` in namespace ``i``; ``Fleet.tick()``
sends ``kmrl.tick`` as beat does. What the workers did is read back afterwards: ``runs()`` from
their JSON log files (``run_started``: who ran which scope from when) and the scopes' run history
in Redis (when each run ended), ``uploads()`` from the Hub's recorder.

The test (test_two_workers.py) and the benchmark (bench/bench_workers.py) share it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from config.settings import redis_db_url
from sandbox.hub import HubSimulator, RunningHub
from sandbox.servers import ServerThread
from sandbox.stack import RedisServer, ServiceProcess
from tests.reliability.beds import Bed, maximo_bed, service_env
from tests.reliability.checks import stored_sha256s
from tests.reliability.gate import Gate, is_upload
from tests.reliability.netns import Link
from tests.reliability.recorder import Recorder, Seen
from tests.reliability.workers import INHERITED, ROOT

#: The eight scopes: Maximo sites, one scope each (MAXIMO_SITE_IDS).
SITES = ("ALUVA", "KALAMASSERY", "EDAPALLY", "KALOOR", "MGROAD", "VYTTILA", "PETTA", "MUTTOM")
SOURCE = "maximo"
#: The Hub token of the fleet's Hub simulator (a sandbox value).
HUB_TOKEN = "scaleout-hub-token-6e2a"
#: Seconds a worker may take to start (import, connect to the broker) before it is called hung.
START_TIMEOUT = 60.0
#: Seconds a worker has to finish its task and exit after SIGTERM.
STOP_GRACE = 30.0
#: How often waits look again, seconds.
POLL = 0.02
#: The Celery queue the tasks go to (Celery's default; the service sets no other).
QUEUE = "celery"


@dataclass
class Run:
    """One scope run that held the scope's lease: who ran it, from when to when.

    started: the ``run_started`` log line's time (written just after the lease was taken). ended: the
    run's ``ended_at`` in the scope's history (set before the lease is given back), or for a run whose
    worker was killed, when the worker was seen dead (before its lease could lapse). Both lie inside
    the time the run held the lease, so two runs of one scope whose [started, ended] overlap held it
    at the same time.
    """

    worker: int
    scope: str
    run_id: str
    started: float
    ended: float | None = None
    state: str = ""


@dataclass
class FleetWorker:
    index: int
    link: Link
    process: ServiceProcess
    log_file: Path
    killed_at: float | None = None


@dataclass
class Fleet:
    """What ``fleet()`` started; see the module docstring."""

    root: Path
    links: Sequence[Link]
    bed: Bed
    hub: RunningHub
    recorder: Recorder
    gates: dict[str, Gate]
    state_url: str
    broker_url: str
    env: dict[str, str]
    producer: Celery
    workers: dict[int, FleetWorker] = field(default_factory=dict)

    # ----- workers -----------------------------------------------------------------------------

    def worker_env(self, index: int) -> dict[str, str]:
        """The environment of worker ``index``: its own folders and log file, as on its own machine."""
        home = self.root / f"worker-{index}"
        env = {name: os.environ[name] for name in INHERITED if name in os.environ}
        env.update(service_env(home, self.state_url, self.hub))
        env.update(self.bed.env)
        env.update({"PYTHONPATH": str(ROOT), "MAXIMO_SITE_IDS": ",".join(SITES),
                    "CELERY_BROKER_URL": self.broker_url,
                    "CELERY_RESULT_BACKEND": redis_db_url(self.state_url, 2),
                    "REDBEAT_REDIS_URL": redis_db_url(self.state_url, 3),
                    "WORKER_LIVENESS_FILE": str(home / "alive")})
        env.update(self.env)
        return env

    def start_worker(self, index: int) -> FleetWorker:
        """Starts ``celery -A scheduler worker`` (one process for tasks) inside namespace ``index``."""
        link = self.links[index]
        env = self.worker_env(index)
        argv = [*link.exec_prefix, sys.executable, "-m", "celery", "-A", "scheduler", "worker", "-P", "prefork",
                "-c", "1", "-n", f"w{index}@%h", "--without-mingle", "--without-gossip", "--loglevel=info"]
        process = ServiceProcess(f"worker-{index}", argv, env=env, cwd=ROOT,
                                 log_path=self.root / f"worker-{index}" / "celery.out")
        worker = FleetWorker(index, link, process, Path(env["LOG_FILE"]))
        self.workers[index] = worker
        return worker

    def wait_ready(self, *indexes: int, timeout: float = START_TIMEOUT) -> None:
        """Waits until each worker answers a ping over the broker (it consumes tasks from then on)."""
        names = {f"w{i}@" for i in indexes}
        deadline = time.monotonic() + timeout
        while True:
            for i in indexes:
                if not self.workers[i].process.alive():
                    raise AssertionError(f"worker {i} exited at start: {self.workers[i].process.tail(40)}")
            replies = self.producer.control.ping(timeout=0.5) or []
            answered = {name.split("@", 1)[0] + "@" for reply in replies for name in reply}
            if names <= answered:
                return
            if time.monotonic() > deadline:
                tails = "\n".join(self.workers[i].process.tail(20) for i in indexes)
                raise AssertionError(f"workers {sorted(names - answered)} did not answer in {timeout} s:\n{tails}")

    def kill(self, index: int) -> float:
        """SIGKILLs worker ``index`` and every process it forked, as a machine that dies; returns the
        moment it was seen dead."""
        worker = self.workers[index]
        os.killpg(worker.process.pid, signal.SIGKILL)
        worker.process.process.wait(timeout=30)
        worker.killed_at = time.time()
        return worker.killed_at

    def stop(self, index: int, *, grace: float = STOP_GRACE) -> int | None:
        """Stops worker ``index`` as its container would: SIGTERM to the main process only, whose warm
        shutdown lets a task under way finish; whatever is left of its session after ``grace`` seconds
        is killed. Returns the main process's exit code."""
        process = self.workers[index].process
        if process.alive():
            process.process.send_signal(signal.SIGTERM)
            try:
                process.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        return process.stop(grace=5)

    # ----- driving -------------------------------------------------------------------------------

    def tick(self) -> None:
        """Sends ``kmrl.tick`` for Maximo, as beat does: a worker lists the scopes and sends one
        ``kmrl.sync_scope`` per scope."""
        self.producer.send_task("kmrl.tick", args=(SOURCE,))

    def queued(self) -> int:
        client = redis.Redis.from_url(self.broker_url)
        try:
            return int(client.llen(QUEUE))
        finally:
            client.close()

    # ----- what happened ---------------------------------------------------------------------------

    def state(self) -> redis.Redis:
        return redis.Redis.from_url(self.state_url, decode_responses=True)

    def leases(self) -> dict[str, float]:
        """Scope -> seconds its lease has left, for every lease held now."""
        client = self.state()
        try:
            held = {}
            for key in client.scan_iter(match=f"kmrl:lock:{SOURCE}:*"):
                ttl = client.pttl(key)
                if ttl != -2:
                    held[key.rsplit(":", 1)[1]] = ttl / 1000
            return held
        finally:
            client.close()

    def statuses(self) -> dict[str, str]:
        client = self.state()
        try:
            return {scope: str(client.hget(f"kmrl:status:{SOURCE}:{scope}", "state") or "") for scope in SITES}
        finally:
            client.close()

    def stored(self) -> int:
        return len(self.hub.sim.documents)

    def complete(self) -> bool:
        """Every document in the Hub, every scope's last run ``ok``, no lease held."""
        return (self.bed.expected <= stored_sha256s(self.hub) and set(self.statuses().values()) == {"ok"}
                and not self.leases())

    def uploads(self) -> list[Seen]:
        """Every upload request the Hub received (gated or not), in arrival order."""
        return sorted((s for s in list(self.recorder.seen) if s.method == "POST" and is_upload(
            {"REQUEST_METHOD": s.method, "PATH_INFO": s.path})), key=lambda s: s.arrived)

    def worker_of(self, address: str) -> int:
        return next(i for i, link in enumerate(self.links) if link.ns_addr == address)

    def runs(self) -> list[Run]:
        """Every run that took a lease, from the workers' logs and the scopes' history."""
        runs: dict[str, Run] = {}
        for index, worker in self.workers.items():
            if not worker.log_file.exists():
                continue
            for line in worker.log_file.read_text(errors="replace").splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") == "run_started" and event.get("connector") == SOURCE:
                    stamp = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
                    runs[event["run_id"]] = Run(index, event["scope"], event["run_id"], stamp)
        client = self.state()
        try:
            for scope in SITES:
                for raw in client.lrange(f"kmrl:history:{SOURCE}:{scope}", 0, -1):
                    summary = json.loads(raw)
                    run = runs.get(summary["run_id"])
                    if run is not None:
                        run.ended, run.state = float(summary["ended_at"]), summary["state"]
        finally:
            client.close()
        for run in runs.values():
            killed_at = self.workers[run.worker].killed_at
            if run.ended is None and killed_at is not None:
                run.ended, run.state = killed_at, "killed"
        return sorted(runs.values(), key=lambda r: r.started)


def drive(fleet: Fleet, *, timeout: float, every: float = 1.0,
          done: Callable[[], bool] | None = None) -> int:
    """Acts as beat until ``done()`` (default: ``fleet.complete()``): sends a tick whenever the queue is
    empty and no lease is held (nothing runs), at most once per ``every`` seconds; returns the ticks sent."""
    finished = done or fleet.complete
    deadline = time.monotonic() + timeout
    last, ticks = 0.0, 0
    while not finished():
        if time.monotonic() > deadline:
            raise AssertionError(f"the workers did not finish in {timeout} s: stored {fleet.stored()} of "
                                 f"{len(fleet.bed.expected)}, statuses {fleet.statuses()}, leases {fleet.leases()}")
        if time.monotonic() - last >= every and fleet.queued() == 0 and not fleet.leases():
            fleet.tick()
            last, ticks = time.monotonic(), ticks + 1
        time.sleep(POLL)
    return ticks


def _from(address: str) -> Callable[[dict[str, Any]], bool]:
    return lambda environ: is_upload(environ) and environ.get("REMOTE_ADDR") == address


@contextmanager
def fleet(root: Path, links: Sequence[Link], *, docs_per_scope: int,
          env: Mapping[str, str] | None = None) -> Iterator[Fleet]:
    """The servers of the module docstring, and the workers started on them, for the ``with`` block.

    env: variables for every worker on top of the fleet's (e.g. LOCK_TTL_SECONDS, ACK_BATCH_SIZE).
    Workers still running at the end are stopped (SIGTERM, then SIGKILL).
    """
    address = links[0].host_addr
    with ExitStack() as stack:
        server = RedisServer(root / "redis", bind=(address,))
        stack.callback(server.stop)
        sim = HubSimulator(token=HUB_TOKEN, data_dir=root / "hub")
        stack.callback(sim.close)
        app: Any = sim.app
        gates = {}
        for link in links:
            gates[link.ns_addr] = app = Gate(app, _from(link.ns_addr))
        recorder = Recorder(app)
        hub_server = stack.enter_context(ServerThread(recorder, host=address))
        for gate in gates.values():
            stack.callback(gate.open)
            stack.callback(gate.drop_held)  # first (callbacks run last-in first-out): no server thread left held
        hub = RunningHub(url=hub_server.url, sim=sim, token=HUB_TOKEN, server=hub_server)
        bed = stack.enter_context(maximo_bed(docs_per_scope * len(SITES), sites=SITES, host=address))
        broker_url = redis_db_url(server.url, 1)
        producer = Celery("kmrl-scaleout", broker=broker_url, set_as_current=False)
        producer.conf.update(task_serializer="json", accept_content=["json"],
                             broker_connection_retry_on_startup=True)
        stack.callback(producer.close)
        running = Fleet(root, links, bed, hub, recorder, gates, redis_db_url(server.url, 0), broker_url,
                        dict(env or {}), producer)
        try:
            yield running
        finally:
            for index in list(running.workers):
                running.stop(index)
