"""Fault tests that run the connector in the test process, to change the world at a known point of a run.

``connector_for(source, env)`` builds the connector exactly as a worker would (``Settings.from_env`` over
the bed's environment, then ``registry.build_connectors``). ``AfterUploads`` wraps its Hub and calls an
action right after the n-th successful upload (expire a token, switch a fault on, restart a server).
``tick_until_delivered`` runs syncs the way the beat's ticks would until everything is in the Hub.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from base.base_connector import BaseConnector, SyncSummary
from base.document import Document
from base.hub_client import Hub
from config.settings import Settings
from connectors import registry
from sandbox.hub import RunningHub
from tests.reliability.checks import stored_sha256s
from utils.entra import reset_applications

#: Ticks (sync runs) allowed to get everything through.
MAX_TICKS = 12
#: Seconds between ticks (the beat's interval, shortened).
TICK_PAUSE = 0.5


def connector_for(source: str, env: Mapping[str, str]) -> BaseConnector:
    """The one connector of ``source`` configured by ``env``, built as a fresh worker process would."""
    reset_applications()  # msal's application and token cache live per process
    [connector] = registry.build_connectors(source, Settings.from_env(dict(env)))  # with a site cache of its own
    return connector


class AfterUploads:
    """A Hub that calls ``action`` after each upload listed in ``at`` (1-based counts of successful
    uploads): something happening in the middle of a run, at a known point."""

    def __init__(self, hub: Hub, at: int | tuple[int, ...], action: Callable[[], object]) -> None:
        self.hub, self.action = hub, action
        self.at = (at,) if isinstance(at, int) else at
        self.uploads = 0
        self.fired = 0

    def upload(self, document: Document) -> str:
        hub_id = self.hub.upload(document)
        self.uploads += 1
        if self.uploads in self.at:
            self.fired += 1
            self.action()
        return hub_id

    def link(self, hub_id: str, metadata: Mapping[str, Any]) -> None:
        self.hub.link(hub_id, metadata)

    def delete(self, source: str, source_id: str) -> None:
        self.hub.delete(source, source_id)

    def health(self) -> tuple[bool, str]:
        return self.hub.health()


def tick_until_delivered(connector: BaseConnector, expected: set[str], hub: RunningHub, *,
                         allowed: tuple[str, ...] = ("ok", "error")) -> list[SyncSummary]:
    """Sync runs, ``TICK_PAUSE`` apart, until every expected document is in the Hub; each run's state
    must be one of ``allowed`` (a fault that is transient must never look like a config error)."""
    runs: list[SyncSummary] = []
    for _ in range(MAX_TICKS):
        summary = connector.sync_documents()
        runs.append(summary)
        assert summary.state in allowed, f"run state {summary.state} not in {allowed}: {summary.as_dict()}"
        if summary.state == "ok" and expected <= stored_sha256s(hub):
            return runs
        time.sleep(TICK_PAUSE)
    raise AssertionError(f"not delivered after {MAX_TICKS} ticks: {[r.state for r in runs]}")
