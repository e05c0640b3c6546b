"""Graph throttling seen by two workers at once: two ``kmrl-connectors sync sharepoint`` processes, one
per site of the same tenant, both mid-download when Graph answers 429 with ``Retry-After``. The pause is
shared through Redis, so no request from either worker reaches Graph before the time has passed (the
simulator's request log, stamped on arrival, says so); both then finish, every file stored once.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from sandbox.hub import RunningHub
from sandbox.tls import CertAuthority
from tests.reliability.beds import service_env, sharepoint_bed
from tests.reliability.checks import assert_delivered_once, assert_settled
from tests.reliability.conftest import FULL
from tests.reliability.recorder import Recorder, Seen
from tests.reliability.workers import RUN_TIMEOUT, Worker

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900 if FULL else 300)]

SITES = ("sites/operations", "sites/engineering")
#: Files per site: enough that both workers are still downloading when the 429 comes.
FILES_PER_SITE = 500 if FULL else 100
#: The Retry-After Graph answers, seconds (below the inline cap of 60: workers wait, then go on).
RETRY_AFTER = 3
#: A request already on the wire when the 429 was answered may still arrive this long after it.
IN_FLIGHT_SLACK = 0.25  # seconds


def gated(seen: Seen) -> bool:
    """Graph and download requests (the throttle gate covers them; Entra's token endpoint is msal's)."""
    return seen.path.startswith("/v1.0/") or seen.path.startswith("/_layouts/")


@pytest.mark.parametrize("told", [1, 2], ids=["one-worker-told", "both-workers-told"])
def test_retry_after_seen_by_two_workers_holds_both_until_the_time_has_passed(
        told: int, tmp_path: Path, state_url: str, rel_hub: RunningHub, ca: CertAuthority) -> None:
    """told=1: one worker gets the 429, the other must learn the pause from Redis alone;
    told=2: the next two requests get it, typically one from each worker."""
    recorders: list[Recorder] = []

    def serve(sim: object) -> Recorder:
        recorders.append(Recorder(sim))  # type: ignore[arg-type]
        return recorders[-1]

    with sharepoint_bed(ca, FILES_PER_SITE * len(SITES), sites=SITES, serve=serve) as bed:
        graph, log = bed.sims["graph"], recorders[0].seen
        site_of_guid = {item.guid: drive.site.path for drive in bed.sims["drives"] for item in drive.items.values()}

        def site_of(seen: Seen) -> str | None:
            guid = parse_qs(seen.query).get("UniqueId", [""])[0]
            return site_of_guid.get(guid)

        workers = [Worker({**service_env(tmp_path, state_url, rel_hub), **bed.env, "SHAREPOINT_SITES": site},
                          tmp_path / f"worker-{n}") for n, site in enumerate(SITES)]
        running = [worker.start("sync", "sharepoint") for worker in workers]
        deadline = time.monotonic() + RUN_TIMEOUT
        while {site_of(s) for s in list(log)} < set(f"/{site}" for site in SITES) | {None}:
            assert time.monotonic() < deadline and all(p.poll() is None for p, _, _ in running), \
                "both workers should be downloading by now"
            time.sleep(0.01)
        graph.inject("download", 429, count=told, retry_after=RETRY_AFTER)
        results = []
        for (process, out, err), worker in zip(running, workers, strict=True):
            process.wait(timeout=RUN_TIMEOUT)
            results.append(worker.result(process, out, err))

        assert all(r.all_ok for r in results), [r.describe() for r in results]
        throttled = [s for s in log if s.status == 429]
        assert throttled, "Graph never answered 429"
        # Every 429 pauses both workers: nothing of theirs (a 429 included) may arrive inside another
        # 429's window, except what was already on the wire when it was answered.
        violations = [s for s in log if gated(s) and any(
            t is not s and t.answered + IN_FLIGHT_SLACK < s.arrived < t.answered + RETRY_AFTER for t in throttled)]
        assert not violations, (f"{len(violations)} requests reached Graph during a Retry-After of {RETRY_AFTER} s "
                                f"(first at +{violations[0].arrived - throttled[0].answered:.3f} s)")
        # Both workers were mid-sync on both sides of the pause: each was held by it, not just finished.
        start, end = throttled[0].answered, throttled[-1].answered + RETRY_AFTER
        for site in SITES:
            mine = [s for s in log if site_of(s) == f"/{site}"]
            assert any(s.arrived < start for s in mine) and any(s.arrived >= end for s in mine), \
                f"the worker of {site} was not downloading before and after the pause"
        assert_delivered_once(rel_hub, bed.expected, max_repeats=0, context="two workers throttled")
        assert_settled(state_url, "sharepoint")
