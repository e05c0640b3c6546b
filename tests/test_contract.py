"""The connector contract (base/contract.py): run and health states, and what a connector is handed."""

from __future__ import annotations

import json
import time

import pytest

from base.contract import HealthState, ScopeState, SourceClients, ThrottledError
from base.runner import ScopeSummary, SyncSummary
from base.state import StateStore
from config.settings import Settings
from connectors.sharepoint_connector import SharePointConnector
from connectors.whatsapp_connector import WhatsAppConnector
from connectors.whatsapp_inbox import Inbox


def test_run_states_are_the_strings_redis_metrics_and_json_carry():
    assert [str(s) for s in ScopeState] == ["ok", "partial", "locked", "paused", "throttled", "error", "lease_lost",
                                            "config_error", "auth_failed", "running"]
    assert json.dumps({"state": ScopeState.AUTH_FAILED}) == '{"state": "auth_failed"}'
    assert f"{ScopeState.PARTIAL}" == "partial" and ScopeState("ok") is ScopeState.OK


def test_a_sync_reports_its_worst_scope_state():
    summary = SyncSummary("fake", [ScopeSummary("fake", scope, "r", state=state) for scope, state in
                                   (("a", ScopeState.OK), ("b", ScopeState.THROTTLED), ("c", ScopeState.PARTIAL))])
    assert summary.state == "throttled"
    assert SyncSummary("fake").state == "ok"
    assert ScopeState.worst(["ok", "config_error", "auth_failed", "error"]) == "auth_failed"


def test_only_finished_failures_count_as_failed():
    assert {s for s in ScopeState if s.failed} == {"error", "lease_lost", "config_error", "auth_failed"}
    assert {s for s in ScopeState if s.succeeded} == {"ok", "partial"}


def test_health_states_rank_in_one_order():
    assert HealthState.worst(["healthy", "throttled", "unreachable"]) == "unreachable"
    assert HealthState.worst(["stale", "degraded", "config_error"]) == "config_error"
    assert HealthState.worst([], default="config_error") == "config_error"


class FarPause:
    """A gate another worker closed for an hour."""

    def __init__(self) -> None:
        self.until = time.time() + 3600

    def blocked_until(self) -> float:
        return self.until

    def block_until(self, until: float) -> None:
        self.until = max(self.until, until)


def test_a_connector_is_throttled_by_the_gate_it_is_handed(settings: Settings, state: StateStore):
    asked: list[tuple[str, str]] = []

    def gates(service: str, tenant: str) -> FarPause:
        asked.append((service, tenant))
        return FarPause()

    connector = SharePointConnector("https://kmrl.sharepoint.com/sites/ops", tenant_id="tenant-1", client_id="app",
                                    settings=settings, state=state, clients=SourceClients(gates))
    with pytest.raises(ThrottledError), connector.connect({"client_secret": "s3cret"}):
        pass  # pragma: no cover - connect refuses before anything is sent
    assert ("graph", "tenant-1") in asked
    assert state.redis.get(state.key("throttle", "graph", "tenant-1")) is None  # never reached into the store


def test_the_whatsapp_connector_reads_the_inbox_it_is_handed(settings: Settings, state: StateStore):
    inbox = Inbox.for_prefix(state.redis, "elsewhere:")
    connector = WhatsAppConnector(access_token="t", phone_number_id="1065", settings=settings, state=state,
                                  inbox=inbox)
    assert connector.inbox is inbox
    assert WhatsAppConnector(settings=settings, state=state).inbox.stream == state.key("whatsapp", "inbox")
