"""The status page on the internal listener: ``GET /`` (and ``/status``) and ``POST /deadletters/<id>/retry``.

Operator routes (web/operator.py guards them: 404 without OPERATOR_TOKEN, the login form for a
person who is not logged in, 401 for a wrong bearer token, CSRF token and same Origin for a POST
from a browser). The page shows what ``kmrl-connectors status``, ``recent`` and ``deadletter list``
show (connectors/status_report.py, base/recent.py), plus the push watchers and Graph subscriptions
Redis knows of (``watchers_and_subscriptions``). Its HTML is web/status_view.py's.

Query parameters of ``GET /`` filter the recent documents: ``source``, ``language``, ``department``,
``decision`` (one of base/recent.py's DECISIONS), ``limit`` (1 to RECENT_LENGTH, default 50).

The retry is the CLI's ``deadletter retry`` (base/replay.py's ``replay``): the entry's kept bytes go
through the connector's own delivery step; the outcome is shown on the page after a redirect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
from flask import Blueprint, Response, flash, get_flashed_messages, redirect, request, session

from base.recent import DECISIONS, RECENT_LENGTH, RecentFilter, read_recent
from base.replay import REPLAYED, RESOLVED, replay
from base.state import StateStore
from config.settings import Settings
from connectors import registry
from connectors.service import Service
from connectors.status_report import status_data
from utils.errors import ConfigError, TransientError
from utils.logging import get_logger, mask_text
from utils.tables import format_time
from web.metrics import state_for_metrics
from web.status_view import PageData, Subscription, Watcher, content_security_policy, render_page

log = get_logger(__name__)

#: Recent documents shown when the request does not say.
DEFAULT_LIMIT = 50
#: The endpoints that are pages a person opens: without a login they redirect to the login form.
PAGE_ENDPOINTS = frozenset({"status.status_page", "status.status_page_alias"})
#: Hashes other parts of the service write (push watchers, Graph subscriptions), read here only.
WATCHER_KIND, SUBSCRIPTION_KIND = "watcher", "subscription"


def _when(value: str) -> str:
    """A Unix time shown as IST; any other text as it is."""
    try:
        return format_time(float(value))
    except ValueError:
        return value


def _hashes(state: StateStore, kind: str) -> list[tuple[str, dict[str, str]]]:
    """(name, fields) of every ``{kind}:{name}`` hash under the prefix, sorted by name."""
    head = state.key(kind, "")
    found = []
    for key in sorted(state.redis.scan_iter(match=state.key(kind, "*"), count=200)):
        if str(state.redis.type(key)) != "hash":
            continue
        found.append((str(key)[len(head):], {str(k): str(v) for k, v in state.redis.hgetall(key).items()}))
    return found


def watchers_and_subscriptions(state: StateStore) -> tuple[list[Watcher], list[Subscription]]:
    """The push watchers (``watcher:{name}`` hashes: state, since, last_event) and the Graph
    change-notification subscriptions (``subscription:{drive}`` hashes: id, expires) that Redis holds;
    empty lists when there are none. Times stored as Unix seconds are shown in IST."""
    watchers = [Watcher(name, fields.get("state", ""), _when(fields.get("since", "")),
                        _when(fields.get("last_event", ""))) for name, fields in _hashes(state, WATCHER_KIND)]
    subscriptions = [Subscription(drive, fields.get("id", ""), _when(fields.get("expires", "")))
                     for drive, fields in _hashes(state, SUBSCRIPTION_KIND)]
    return watchers, subscriptions


def _notices() -> list[tuple[str, bool]]:
    """The messages flashed by the last action: (text, whether it went well)."""
    flashed: list[Any] = list(get_flashed_messages(with_categories=True))
    return [(str(text), category != "bad") for category, text in flashed]


def _filter(args: Mapping[str, str]) -> tuple[RecentFilter, int]:
    decision = args.get("decision", "")
    try:
        limit = min(RECENT_LENGTH, max(1, int(args.get("limit", DEFAULT_LIMIT))))
    except ValueError:
        limit = DEFAULT_LIMIT
    where = RecentFilter(source=args.get("source", "").strip(), language=args.get("language", "").strip(),
                         department=args.get("department", "").strip(),
                         decision=decision if decision in DECISIONS else "")
    return where, limit


def retry_dead_letter(service: Service, entry_id: str) -> tuple[str, bool]:
    """Replays the dead letter ``entry_id`` as ``deadletter retry --id`` does; (what happened, whether it worked)."""
    entry = next((e for e in service.state.list_dead_letters() if e.id == entry_id), None)
    if entry is None:
        return f"No dead letter {entry_id} (retried or dropped meanwhile).", False
    try:
        connector = service.connectors(entry.connector)[0]
        outcome = replay(connector, entry)
    except (ConfigError, TransientError) as exc:
        return f"Dead letter {entry.id} kept: {mask_text(str(exc))}", False
    name = entry.display_name or entry.source_id
    log.info("operator_dead_letter_retried", entry_id=entry.id, source=entry.connector, result=outcome.result)
    return f"Dead letter {entry.id} ({name}): {outcome.result}: {outcome.detail}", outcome.result in (REPLAYED,
                                                                                                       RESOLVED)


def status_blueprint(settings: Settings, *, sources: Mapping[str, registry.Source] = registry.SOURCES,
                     service: Service | None = None) -> Blueprint:
    """The status page's routes. ``service`` defaults to one on the state Redis of ``settings`` (text
    replies, the scrape's short timeouts) with ``sources``."""
    bp = Blueprint("status", __name__)
    page_service = service or Service(settings, sources=sources, redis_client=state_for_metrics(settings).redis)

    def show() -> Response:
        where, limit = _filter(request.args)
        state = page_service.state
        try:
            watchers, subscriptions = watchers_and_subscriptions(state)
            data = PageData(status=status_data(page_service), where=where, limit=limit,
                            recent=read_recent(state.redis, state.keys, where=where, limit=limit),
                            dead_letters=list(reversed(state.list_dead_letters())), watchers=watchers,
                            subscriptions=subscriptions, csrf=str(session.get("csrf", "")),
                            notices=_notices())
        except redis.RedisError as exc:
            log.warning("status_page_unavailable", dependency="redis", error=type(exc).__name__)
            return Response("The state Redis does not answer; try again shortly.\n", status=503,
                            mimetype="text/plain")
        response = Response(render_page(data), mimetype="text/html")
        response.headers["Content-Security-Policy"] = content_security_policy()
        return response

    @bp.get("/")
    def status_page() -> Response:
        return show()

    @bp.get("/status")
    def status_page_alias() -> Response:
        return show()

    @bp.post("/deadletters/<entry_id>/retry")
    def retry(entry_id: str) -> Any:
        text, ok = retry_dead_letter(page_service, entry_id)
        flash(text, "ok" if ok else "bad")
        return redirect("/#deadletters", code=303)

    return bp
