"""Graph throttling seen by two workers at once: two ``kmrl-connectors sync sharepoint`` processes, one
per site of the same tenant, both mid-download when Graph answers 429 with ``Retry-After``. The pause is
shared through Redis, so no request from either worker reaches Graph before the time has passed (the
simulator's request log, stamped on arrival, says so), but the one the other worker had already sent;
both then finish, every file stored once. Graph holds requests at points of the run the test chooses
(tests/reliability/gate.py), so no clock decides whether both workers were caught mid-download or
what counts as already sent.
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import redis

from sandbox.hub import RunningHub
from sandbox.tls import CertAuthority
from tests.reliability.beds import service_env, sharepoint_bed
from tests.reliability.checks import assert_delivered_once, assert_settled
from tests.reliability.conftest import FULL
from tests.reliability.gate import Gate
from tests.reliability.recorder import Recorder, Seen
from tests.reliability.workers import RUN_TIMEOUT, Worker

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900 if FULL else 300)]

SITES = ("sites/operations", "sites/engineering")
#: Files per site: far more than are downloaded before the 429, so both workers go on after the pause.
FILES_PER_SITE = 500 if FULL else 100
#: Downloads let through before Graph holds the next one of each worker (the 429 comes then).
FIRST_DOWNLOADS = 10
#: The Retry-After Graph answers, seconds (below the inline cap of 60: workers wait, then go on).
RETRY_AFTER = 3


def gated(seen: Seen) -> bool:
    """Graph and download requests (the throttle gate covers them; Entra's token endpoint is msal's)."""
    return seen.path.startswith("/v1.0/") or seen.path.startswith("/_layouts/")


def graph_request(environ: dict[str, Any]) -> bool:
    return str(environ.get("PATH_INFO", "")).startswith(("/v1.0/", "/_layouts/"))


def download(environ: dict[str, Any]) -> bool:
    return str(environ.get("PATH_INFO", "")).startswith("/_layouts/")


class HoldUntilPaused:
    """Closes the Graph gate as a 429 leaves the simulator and opens it again once the pause that 429
    causes is in Redis (or has run out): a worker's next request waits at the gate meanwhile, so the one
    it had already sent is all that can reach Graph inside the pause, however long the told worker
    takes to record it on a loaded machine."""

    def __init__(self, gate: Gate, state_url: str) -> None:
        self.gate = gate
        self.client = redis.Redis.from_url(state_url)
        self.closed_at: float | None = None  # time.time() of the last 429 not yet covered by a pause
        self.lock = threading.Lock()
        gate.on_status(429, call=self._closed)

    def _closed(self) -> None:
        with self.lock:
            self.gate.close()
            self.closed_at = time.time()

    def paused_until(self) -> float:
        values = [self.client.get(key) for key in self.client.scan_iter(match="kmrl:throttle:graph:*")]
        return max((float(v) for v in values if v is not None), default=0.0)

    def step(self) -> None:
        """Opens the gate if the last 429's pause is recorded (it ends at least RETRY_AFTER after the
        429 left) or over."""
        with self.lock:
            if self.closed_at is None:
                return
            covered = self.closed_at + RETRY_AFTER
            if self.paused_until() >= covered or time.time() >= covered:
                self.closed_at = None
                self.gate.open()

    def close(self) -> None:
        self.client.close()


@pytest.mark.parametrize("told", [1, 2], ids=["one-worker-told", "both-workers-told"])
def test_retry_after_seen_by_two_workers_holds_both_until_the_time_has_passed(
        told: int, tmp_path: Path, state_url: str, rel_hub: RunningHub, ca: CertAuthority) -> None:
    """told=1: one worker gets the 429, the other must learn the pause from Redis alone;
    told=2: the next two downloads get it, typically one from each worker."""
    recorders: list[Recorder] = []
    gates: list[Gate] = []

    def serve(sim: Any) -> Recorder:
        gates.append(Gate(sim, download))
        recorders.append(Recorder(gates[-1]))
        return recorders[-1]

    with ExitStack() as stack:
        bed = stack.enter_context(sharepoint_bed(ca, FILES_PER_SITE * len(SITES), sites=SITES, serve=serve))
        graph, log, gate = bed.sims["graph"], recorders[0].seen, gates[0]
        stack.callback(gate.open)  # never leave a server thread waiting at the gate
        site_of_guid = {item.guid: drive.site.path for drive in bed.sims["drives"] for item in drive.items.values()}

        def site_of(query: str) -> str | None:
            return site_of_guid.get(parse_qs(query).get("UniqueId", [""])[0])

        workers = [Worker({**service_env(tmp_path, state_url, rel_hub), **bed.env, "SHAREPOINT_SITES": site},
                          tmp_path / f"worker-{n}") for n, site in enumerate(SITES)]
        # Both workers mid-download when the 429 comes, on any machine: after the first downloads, Graph
        # holds each worker's next one until both are waiting there.
        gate.allow(FIRST_DOWNLOADS)
        running = [worker.start("sync", "sharepoint") for worker in workers]
        deadline = time.monotonic() + RUN_TIMEOUT
        while not gate.wait_for(lambda g: {site_of(e.get("QUERY_STRING", "")) for e in g.waiting}
                                >= {f"/{site}" for site in SITES}, timeout=0.05):
            assert all(p.poll() is None for p, _, _ in running), "a worker ended before its downloads were held"
            assert time.monotonic() < deadline, "both workers should be downloading by now"
        hold = HoldUntilPaused(gate, state_url)
        stack.callback(hold.close)
        graph.inject("download", 429, count=told, retry_after=RETRY_AFTER)
        gate.match = graph_request
        gate.open()
        while any(p.poll() is None for p, _, _ in running):
            hold.step()
            assert time.monotonic() < deadline, f"the workers did not finish in {RUN_TIMEOUT} s"
            time.sleep(0.01)
        results = [worker.result(*run) for run, worker in zip(running, workers, strict=True)]

        assert all(r.all_ok for r in results), [r.describe() for r in results]
        throttled = [s for s in log if s.status == 429]
        assert throttled, "Graph never answered 429"
        # Every 429 pauses both workers: inside another 429's window, nothing of theirs may reach Graph
        # but the one request the worker not told had already sent (each worker sends one at a time).
        for t in throttled:
            inside = [s for s in log if gated(s) and s is not t and t.answered < s.arrived < t.answered + RETRY_AFTER]
            assert len(inside) <= len(SITES) - 1, (
                f"{len(inside)} requests reached Graph during a Retry-After of {RETRY_AFTER} s: "
                f"{[(round(s.arrived - t.answered, 3), s.path, s.status) for s in inside]}")
        # Both workers were mid-sync on both sides of the pause: each was held by it, not just finished.
        start, end = throttled[0].answered, throttled[-1].answered + RETRY_AFTER
        for site in SITES:
            mine = [s for s in log if site_of(s.query) == f"/{site}"]
            assert any(s.arrived < start for s in mine) and any(s.arrived >= end for s in mine), \
                f"the worker of {site} was not downloading before and after the pause"
        assert_delivered_once(rel_hub, bed.expected, max_repeats=0, context="two workers throttled")
        assert_settled(state_url, "sharepoint")
