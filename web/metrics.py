"""``GET /metrics``: Prometheus text exposition (format 0.0.4) of the numbers every worker keeps in Redis.

Served on the internal listener only, behind OPERATOR_TOKEN (web/listeners.py, web/operator.py).

Workers add to counters and set gauges in the state store (``StateStore.incr_metric`` /
``set_gauge``), so one scrape of any web process shows the whole fleet. A few series are computed
at scrape time from live state so they never go stale: lag since each scope's last success, the
dead-letter backlog per source, and each scope's last run duration.

Every family gets one ``# HELP`` and one ``# TYPE`` line followed by all its samples; label values
are escaped as the format requires.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping

import redis
from flask import Blueprint, Response

from base.state import HELD, StateStore
from config.redis_tls import redis_tls_kwargs
from config.settings import Settings
from utils.logging import get_logger

log = get_logger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Redis timeouts for a scrape: a stalled Redis fails the scrape quickly; seconds.
REDIS_CONNECT_TIMEOUT = 2.0
REDIS_SOCKET_TIMEOUT = 5.0

#: name -> (type, help) of the families the service writes or computes.
FAMILIES: dict[str, tuple[str, str]] = {
    "kmrl_documents_total": ("counter", "Documents by source and outcome (new, duplicate, skipped, dead_lettered, "
                                        "deleted, held, renamed)."),
    "kmrl_bytes_total": ("counter", "Bytes of new documents delivered to the Hub, by source."),
    "kmrl_runs_total": ("counter", "Scope runs by source and final state."),
    "kmrl_run_seconds_total": ("counter", "Seconds spent in scope runs, by source."),
    "kmrl_lock_skips_total": ("counter", "Scope runs skipped because another worker held the scope's lease."),
    "kmrl_throttled_seconds_total": ("counter", "Seconds of pause imposed by a service's Retry-After, by service."),
    "kmrl_last_success_timestamp_seconds": ("gauge", "Unix time of each scope's last successful run."),
    "kmrl_lag_seconds": ("gauge", "Seconds since each scope's last successful run."),
    "kmrl_last_run_seconds": ("gauge", "Duration of each scope's last run, in seconds."),
    "kmrl_dead_letters": ("gauge", "Dead-letter entries waiting, by source."),
    "kmrl_held_documents": ("gauge", "Documents held back by a hold rule whose bytes are kept (awaiting release "
                                     "or drop), by source."),
    "kmrl_source_healthy": ("gauge", "1 when the last health check found the source healthy, else 0."),
    "kmrl_health_checked_timestamp_seconds": ("gauge", "Unix time of the last health check."),
}
#: Families computed from live state at scrape time (stored samples of these names are ignored).
_LIVE = {"kmrl_lag_seconds", "kmrl_last_run_seconds", "kmrl_dead_letters", "kmrl_held_documents"}
_LABEL_SPLIT = re.compile(r",(?=[a-zA-Z_][a-zA-Z0-9_]*=)")
_NAME_OK = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")

Labels = tuple[tuple[str, str], ...]


def parse_field(field: str) -> tuple[str, Labels]:
    """The metric name and labels of a stored field ``name|k=v,k=v`` (see base.state.metric_field)."""
    name, _, rest = field.partition("|")
    labels: list[tuple[str, str]] = []
    if rest:
        for pair in _LABEL_SPLIT.split(rest):
            key, _, value = pair.partition("=")
            labels.append((key, value))
    return name, tuple(labels)


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _sample(name: str, labels: Labels, value: float) -> str:
    if not labels:
        return f"{name} {format_value(value)}"
    inner = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels)
    return f"{name}{{{inner}}} {format_value(value)}"


class Exposition:
    """Samples grouped by family, rendered with one HELP and TYPE line per family."""

    def __init__(self) -> None:
        self._samples: dict[str, dict[Labels, float]] = {}
        self._types: dict[str, str] = {}

    def add(self, name: str, labels: Labels, value: float) -> None:
        if not _NAME_OK.match(name):
            return  # a field no Prometheus name can carry; skipping beats a scrape that fails to parse
        self._samples.setdefault(name, {})[tuple(sorted(labels))] = value

    def add_stored(self, fields: Mapping[str, float], kind: str) -> None:
        """Adds stored samples; families not in ``FAMILIES`` are typed ``kind``."""
        for field, value in fields.items():
            name, labels = parse_field(field)
            if name not in _LIVE:
                self.add(name, labels, value)
                self._types.setdefault(name, kind)

    def render(self) -> str:
        lines: list[str] = []
        for name in sorted(self._samples):
            kind, help_text = FAMILIES.get(name, (self._types.get(name, "untyped"), f"{name} (no description)"))
            lines.append(f"# HELP {name} {help_text.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(_sample(name, labels, value) for labels, value in sorted(self._samples[name].items()))
        return "\n".join(lines) + "\n"


def _live_samples(state: StateStore, exposition: Exposition, now: float) -> None:
    sources: set[str] = set()
    for connector, scope, status in state.iter_statuses():
        sources.add(connector)
        labels: Labels = (("scope", scope), ("source", connector))
        last_success = float(status.get("last_success") or 0)
        if last_success:
            exposition.add("kmrl_lag_seconds", labels, max(0.0, now - last_success))
        if status.get("last_run_seconds"):
            exposition.add("kmrl_last_run_seconds", labels, float(status["last_run_seconds"]))
    sources.update(state.dead_letter_sources())
    # Every source that ever ran gets a sample, 0 included, so an alert can tell "none" from "unknown".
    for source in sorted(sources):
        exposition.add("kmrl_dead_letters", (("source", source),), float(state.dead_letter_count(source)))
    waiting: dict[str, int] = {}
    for entry in state.list_held():
        waiting[entry.connector] = waiting.get(entry.connector, 0) + (entry.state == HELD)
    for source in sorted(waiting):
        exposition.add("kmrl_held_documents", (("source", source),), float(waiting[source]))


def render_metrics(state: StateStore, *, now: float | None = None) -> str:
    """The whole exposition for the state in ``state`` (counters, gauges and live series)."""
    now = time.time() if now is None else now
    counters, gauges = state.metrics()
    exposition = Exposition()
    exposition.add_stored(counters, "counter")
    exposition.add_stored(gauges, "gauge")
    _live_samples(state, exposition, now)
    return exposition.render()


def state_for_metrics(settings: Settings) -> StateStore:
    """The state store with the short timeouts a scrape wants."""
    client = redis.Redis.from_url(settings.state_redis_url, decode_responses=True,
                                  socket_connect_timeout=REDIS_CONNECT_TIMEOUT, socket_timeout=REDIS_SOCKET_TIMEOUT,
                                  **redis_tls_kwargs(settings.state_redis_url, settings.redis_ca_file))
    return StateStore(client, prefix=settings.key_prefix)


def metrics_blueprint(settings: Settings, state: StateStore | None = None) -> Blueprint:
    """The ``/metrics`` route; ``state`` defaults to the state Redis of ``settings``."""
    bp = Blueprint("metrics", __name__)
    store = state if state is not None else state_for_metrics(settings)

    @bp.get("/metrics")
    def metrics() -> Response:
        try:
            body = render_metrics(store)
        except redis.RedisError as exc:
            log.warning("metrics_unavailable", dependency="redis", error=type(exc).__name__)
            return Response("# redis unreachable\n", status=503, content_type=CONTENT_TYPE)
        return Response(body, content_type=CONTENT_TYPE)

    return bp

