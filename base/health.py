"""Health: what state each source is in, computed from its health check and its scopes' statuses.

A source's state is one of ``STATES``, worst first when several apply:

- ``auth_failed`` / ``config_error``: its check or its last run was refused for credentials or
  settings (an operator must act);
- ``degraded``: its check failed otherwise (unreachable, server errors);
- ``throttled``: a scope is paused by the service's ``Retry-After``;
- ``stale``: a scope has not succeeded for more than ``STALE_INTERVALS`` sync intervals;
- ``healthy``.

The report (``HealthReport``) is stored in Redis under ``kmrl:health`` for ``status`` and the
metrics endpoint; computing it does no I/O, so the rules are tested on their own.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from base.contract import HealthResult, HealthState, ScopeState
from base.state import StateStore

#: Every state a source can be in, worst first (HealthState's order; a check that found its
#: source unreachable makes the source ``degraded``).
STATES = tuple(reversed([s for s in HealthState if s is not HealthState.UNREACHABLE]))
#: A scope whose last success is older than this many sync intervals is stale.
STALE_INTERVALS = 3
#: Scope states written by a run that say the settings or credentials are wrong.
_REFUSED = (ScopeState.AUTH_FAILED, ScopeState.CONFIG_ERROR)


def worst(states: Iterable[str]) -> str:
    """The worst of ``states`` (``healthy`` when empty)."""
    return HealthState.worst(states)


def probe_state(result: HealthResult) -> str:
    """A health check's outcome as a source state (unreachable and unknown states are degraded)."""
    if result.ok:
        return result.state if result.state in (HealthState.HEALTHY, HealthState.DEGRADED, HealthState.THROTTLED) \
            else HealthState.HEALTHY
    return result.state if result.state in STATES and result.state != HealthState.HEALTHY else HealthState.DEGRADED


@dataclass
class ScopeHealth:
    """One scope: its state, last success (Unix time, 0: never) and lag (seconds since then)."""

    scope: str
    state: str
    last_success: float
    lag_seconds: float | None
    detail: str = ""
    #: The name a person reads (a SharePoint library as ``site / library``); the scope when it has none.
    scope_name: str = ""


@dataclass
class SourceHealth:
    """One source: its state, why, the per-instance check details and every scope's health."""

    source: str
    state: str
    detail: str
    checks: list[str] = field(default_factory=list)
    scopes: list[ScopeHealth] = field(default_factory=list)


@dataclass
class HealthReport:
    """Redis, the Hub and every configured source at ``checked_at`` (Unix time)."""

    checked_at: float
    redis: tuple[bool, str]
    hub: tuple[bool, str]
    sources: list[SourceHealth] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.redis[0] and self.hub[0] and all(s.state == HealthState.HEALTHY for s in self.sources)

    def as_dict(self) -> dict[str, Any]:
        return {"checked_at": self.checked_at, "ok": self.ok,
                "redis": {"ok": self.redis[0], "detail": self.redis[1]},
                "hub": {"ok": self.hub[0], "detail": self.hub[1]},
                "sources": [asdict(s) for s in self.sources]}


def _number(value: str | None) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0


def scope_health(scope: str, status: Mapping[str, str], *, interval_seconds: float | None, now: float) -> ScopeHealth:
    """The health of one scope from its status hash (see base/state.py).

    interval_seconds: the source's sync interval (None or 0: not scheduled, never stale).
    A scope that never succeeded is measured from its first recorded run start.
    """
    health = _scope_health(scope, status, interval_seconds=interval_seconds, now=now)
    health.scope_name = status.get("scope_name") or scope
    return health


def _scope_health(scope: str, status: Mapping[str, str], *, interval_seconds: float | None,
                  now: float) -> ScopeHealth:
    last_success = _number(status.get("last_success"))
    since = last_success or _number(status.get("last_run_start"))
    lag = now - last_success if last_success else None
    run_state = status.get("state", "")
    if run_state in _REFUSED:
        return ScopeHealth(scope, run_state, last_success, lag, status.get("last_error", ""))
    if _number(status.get("throttled_until")) > now:
        return ScopeHealth(scope, HealthState.THROTTLED, last_success, lag, "paused by the service until "
                           + time.strftime("%H:%M:%S UTC", time.gmtime(_number(status.get("throttled_until")))))
    if interval_seconds and since and now - since > STALE_INTERVALS * interval_seconds:
        what = f"last success {int(now - last_success)} s ago" if last_success else "no success yet"
        return ScopeHealth(scope, HealthState.STALE, last_success, lag,
                           f"{what}; expected every {int(interval_seconds)} s")
    return ScopeHealth(scope, HealthState.HEALTHY, last_success, lag)


def source_health(source: str, checks: list[tuple[str, HealthResult]], statuses: Mapping[str, Mapping[str, str]],
                  *, interval_seconds: float | None, now: float) -> SourceHealth:
    """A source's health from its instances' checks (``(instance, result)``) and scope statuses."""
    latest_success = max((_number(s.get("last_success")) for s in statuses.values()), default=0.0)
    scopes = [scope_health(scope, status, interval_seconds=interval_seconds, now=now)
              for scope, status in sorted(statuses.items())
              # "*" records a failure before any scope ran; a later success anywhere supersedes it.
              if scope != "*" or _number(status.get("last_run_end")) >= latest_success]
    check_states = [probe_state(result) for _, result in checks]
    state = worst([*check_states, *(s.state for s in scopes)])
    details = [f"{instance}: {result.detail}" for instance, result in checks]
    if state in check_states:
        failing = [f"{instance}: {result.detail}" for instance, result in checks if probe_state(result) == state]
        detail = "; ".join(failing)
    else:
        detail = "; ".join(f"{s.scope}: {s.detail}" for s in scopes if s.state == state and s.detail)
    return SourceHealth(source, state, detail or state, details, scopes)


def store_report(state: StateStore, report: HealthReport) -> None:
    """Saves the report under ``{prefix}health`` and the per-source gauges for /metrics."""
    for source in report.sources:
        state.set_gauge("kmrl_source_healthy", {"source": source.source},
                        1.0 if source.state == HealthState.HEALTHY else 0.0)
    state.set_gauge("kmrl_health_checked_timestamp_seconds", None, report.checked_at)
    state.store_health(report.as_dict())  # last: readers wait on it


def load_report(state: StateStore) -> dict[str, Any] | None:
    """The last stored report as a dict, or None when no health check ran yet."""
    return state.load_health()
