"""Retention of what a scope leaves in Redis once the scope is gone (base/cleanup.py)."""

from __future__ import annotations

import time

from base.cleanup import DAY, purge_abandoned_scopes
from base.state import ItemRecord, StateStore


def _scope_ran(state: StateStore, connector: str, scope: str, *, ended: float, sha256: str) -> None:
    state.set_cursor(connector, scope, {"delta": scope})
    state.record_ingested(connector, scope, f"{scope}/1", ItemRecord("v1", sha256, f"doc-{scope}"),
                          outcome="new", size=10)
    state.update_status(connector, scope, {"state": "ok", "last_run_end": ended, "last_success": ended})
    state.append_history(connector, scope, {"ended_at": ended, "scope": scope})
    state.count_item_failure(connector, scope, f"{scope}/2", run_id="r1", reason="timeout")
    state.set_gauge("kmrl_last_success_timestamp_seconds", {"scope": scope, "source": connector}, ended)


def test_a_scope_no_run_touched_within_the_retention_is_forgotten_but_its_content_records_stay(
        state: StateStore) -> None:
    now = time.time()
    _scope_ran(state, "sharepoint", "gone-drive", ended=now - 200 * DAY, sha256="a" * 64)
    _scope_ran(state, "sharepoint", "live-drive", ended=now - 60, sha256="b" * 64)

    assert purge_abandoned_scopes(state, older_than=now - 180 * DAY) == 1

    for kind in ("cursor", "item", "status", "history", "failing"):
        assert not state.redis.exists(state.keys.scope_key(kind, "sharepoint", "gone-drive")), kind
        assert state.redis.exists(state.keys.scope_key(kind, "sharepoint", "live-drive")), kind
    assert state.get_content("a" * 64) == "doc-gone-drive"  # dedup memory: a scope that comes back uploads none
    gauges = state.metrics()[1]
    assert "kmrl_last_success_timestamp_seconds|scope=gone-drive,source=sharepoint" not in gauges
    assert "kmrl_last_success_timestamp_seconds|scope=live-drive,source=sharepoint" in gauges
    assert purge_abandoned_scopes(state, older_than=now - 180 * DAY) == 0


def test_a_status_without_a_run_end_is_never_taken_for_an_abandoned_scope(state: StateStore) -> None:
    state.update_status("email", "inbox", {"state": "running"})
    assert purge_abandoned_scopes(state, older_than=time.time()) == 0
    assert state.get_status("email", "inbox")
