"""What the service is doing, as one dict: what ``kmrl-connectors status`` prints and the status page shows.

``status_data(service)`` reads, for every configured source and every scope with a recorded status:
the scope's id and the name a person reads, the state, last success, lag, the last run's counts, the
items recorded as ingested, the last error (whole: callers shorten it for a table), the source's
health, dead-letter and held counts, and the day's totals (IST, base/recent.py), and for SharePoint
each library's Graph subscription and its expiry. Read-only; a handful of Redis round trips per scope.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from base.contract import ScopeState
from base.health import load_report
from base.recent import ist_day, read_day_totals
from connectors import registry
from connectors.service import Service
from connectors.sharepoint_subscriptions import SubscriptionStore
from utils.tables import ago, format_duration

#: The last run's counters a scope row shows.
RUN_COUNTS = ("fetched", "new", "duplicate", "skipped", "failed", "deleted")


def _number(value: str | None) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0


def status_data(service: Service, *, now: float | None = None) -> dict[str, Any]:
    """Every source's scopes (see the module docstring), with ``today``: the source's totals for the
    current day in IST (``DayTotals.as_dict()``); ``day`` says which day that is."""
    now = time.time() if now is None else now
    state = service.state
    report = load_report(state) or {}
    health = {s["source"]: s for s in report.get("sources", [])}
    sources: dict[str, dict[str, Any]] = {}
    for name in registry.configured_sources(service.settings, sources=service.sources):
        sources[name] = {"source": name, "scopes": []}
    for connector, scope, status in state.iter_statuses():
        entry = sources.setdefault(connector, {"source": connector, "scopes": []})
        last_success = _number(status.get("last_success"))
        entry["scopes"].append({
            # scope: the id machines use; scope_name: what a person reads (a SharePoint library as
            # "sites/operations / Documents"), stored with the status by the run, so no Graph call here.
            "scope": scope, "scope_name": status.get("scope_name") or scope, "state": status.get("state", ""),
            "last_success": last_success or None,
            "lag_seconds": round(now - last_success, 1) if last_success else None,
            "last_run_end": _number(status.get("last_run_end")) or None,
            "counts": {k: int(_number(status.get(k))) for k in RUN_COUNTS},
            "items": state.count_items(connector, scope),
            "last_error": status.get("last_error", ""),
        })
    if "sharepoint" in sources:
        # Each library's Graph change-notification subscription (connectors/sharepoint_subscriptions.py).
        names = {s["scope"]: s["scope_name"] for s in sources["sharepoint"]["scopes"]}
        sources["sharepoint"]["subscriptions"] = [
            {"drive": r.drive, "drive_name": names.get(r.drive, r.drive), "id": r.id, "expires": r.expires or None,
             "instance": r.instance}
            for r in SubscriptionStore(state).all()]
    day = ist_day(now)
    totals = {t.source: t for t in read_day_totals(state.redis, state.keys, sources, day)}
    for name, entry in sources.items():
        entry["dead_letters"] = state.dead_letter_count(name)
        entry["held"] = state.held_count(name)
        source_health = health.get(name)
        entry["health"] = ({"state": source_health["state"], "detail": source_health["detail"],
                            "checked_at": report.get("checked_at")} if source_health else None)
        entry["today"] = totals[name].as_dict()
    return {"generated_at": now, "day": day, "sources": list(sources.values())}


#: Run states a scope fails in (error, lease_lost, config_error, auth_failed).
FAILED_STATES = frozenset(state.value for state in ScopeState if state.failed)


def health_text(entry: Mapping[str, Any]) -> str:
    """A source's health as its header shows it (``entry``: one source of ``status_data``): the hourly
    check's verdict, unless a scope's last run ended in a failure since, e.g. ``health auth_failed (1 of
    1 scopes failing; the hourly check said healthy, checked 10m 0s ago)``: a header saying "healthy"
    above a scope in ``auth_failed`` would mislead."""
    health = entry.get("health")
    checked = f"checked {format_duration(ago(health['checked_at']))} ago" if health else "not checked yet"
    scopes = entry.get("scopes", [])
    failing = [s for s in scopes if s.get("state") in FAILED_STATES]
    if failing:
        worst = ScopeState.worst(s["state"] for s in failing)
        verdict = f"health {worst} ({len(failing)} of {len(scopes)} scopes failing"
        return verdict + (f"; the hourly check said {health['state']}, {checked})" if health else ")")
    return f"health {health['state']} ({checked})" if health else "health not checked yet"


def scope_names(data: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """(source, scope id) -> the name a person reads, for every scope of ``status_data``'s answer:
    for lists that carry only the id (recent documents, dead letters)."""
    return {(source["source"], scope["scope"]): scope.get("scope_name") or scope["scope"]
            for source in data.get("sources", []) for scope in source.get("scopes", [])}
