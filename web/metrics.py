"""``GET /metrics``: Prometheus text exposition (format 0.0.4) of the numbers every worker keeps in Redis.

Served on the internal listener only, behind OPERATOR_TOKEN (web/listeners.py, web/operator.py).

Workers add to counters and set gauges in the state store (``StateStore.incr_metric`` /
``set_gauge``), and add histogram observations to its histograms hash (base/metric_buffer.py), so
one scrape of any web process shows the whole fleet. A few series are computed at scrape time from
live state so they never go stale: lag since each scope's last success, each scope's state and
failed runs in a row, the dead-letter backlog per source, each scope's last run duration, each
source's sync interval (from the settings, as beat reads them) and the build.

Every family gets one ``# HELP`` and one ``# TYPE`` line followed by all its samples; label values
are escaped as the format requires.
"""

from __future__ import annotations

import importlib.metadata
import math
import platform
import re
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path

import redis
from flask import Blueprint, Response

from base.metric_buffer import BUCKETS, DOCUMENTS_CLASSIFIED, HUB_UPLOAD, RUN_DURATION, WEBHOOK_REQUEST, le_text
from base.state import FAILURES_IN_A_ROW, HELD, StateStore
from config.redis_tls import redis_tls_kwargs
from config.settings import Settings
from connectors import registry
from utils.errors import ConfigError
from utils.logging import get_logger
from web.metric_flush import flush_all

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
    DOCUMENTS_CLASSIFIED: ("counter", "New documents by source, detected language and classified department."),
    "kmrl_webhook_rejected_total": ("counter", "Webhook requests refused, by webhook and reason (signature_missing, "
                                               "signature_mismatch, body_too_large, malformed)."),
    "kmrl_whatsapp_webhook_messages_total": ("counter", "WhatsApp media messages by outcome (queued, duplicate, "
                                                        "expired, bad_timestamp)."),
    RUN_DURATION: ("histogram", "Duration of scope runs, by source, in seconds."),
    HUB_UPLOAD: ("histogram", "Latency of one upload to the Hub (or the outbox), by source, in seconds."),
    WEBHOOK_REQUEST: ("histogram", "Latency of one webhook request, from the view to its answer, in seconds."),
    "kmrl_scope_state": ("gauge", "1 for each scope's current state (ok, partial, throttled, error, auth_failed, "
                                  "...)."),
    "kmrl_scope_failures_in_a_row": ("gauge", "Failed runs of each scope since its last successful one."),
    "kmrl_sync_interval_seconds": ("gauge", "Seconds between two sync ticks of each source (its beat schedule)."),
    "kmrl_build_info": ("gauge", "Always 1; the labels say which version runs on which Python."),
    "kmrl_watcher_connected": ("gauge", "1 while a push watcher (IMAP IDLE, Graph subscription) is connected, "
                                        "else 0, by watcher."),
}
#: Families computed from live state at scrape time (stored samples of these names are ignored).
_LIVE = {"kmrl_lag_seconds", "kmrl_last_run_seconds", "kmrl_dead_letters", "kmrl_held_documents", "kmrl_scope_state",
         "kmrl_scope_failures_in_a_row", "kmrl_sync_interval_seconds", "kmrl_build_info"}
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
        #: histogram name -> labels (no ``le``) -> ({le text: count in that bucket alone}, sum).
        self._histograms: dict[str, dict[Labels, tuple[dict[str, float], float]]] = {}

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

    def add_histograms(self, fields: Mapping[str, float]) -> None:
        """Adds stored histogram fields (``name_bucket|le=..`` per-bucket counts and ``name_sum|..``);
        fields of names not in ``BUCKETS`` are skipped."""
        for field, value in fields.items():
            stored, labels = parse_field(field)
            base, _, part = stored.rpartition("_")
            if base not in BUCKETS or part not in ("bucket", "sum"):
                continue
            le = dict(labels).get("le", "")
            key = tuple(sorted((k, v) for k, v in labels if k != "le"))
            buckets, total = self._histograms.setdefault(base, {}).get(key, ({}, 0.0))
            if part == "bucket":
                buckets[le] = buckets.get(le, 0.0) + value
            else:
                total += value
            self._histograms[base][key] = (buckets, total)

    def _histogram_lines(self, name: str) -> list[str]:
        """Cumulative ``_bucket`` samples (every configured bound, then any other stored one, then
        ``+Inf``), ``_sum`` and ``_count``, per label set."""
        lines: list[str] = []
        for labels, (buckets, total) in sorted(self._histograms[name].items()):
            bounds = {le_text(b): b for b in BUCKETS[name]}
            for le in buckets:
                if le != "+Inf" and le not in bounds:
                    try:
                        bounds[le] = float(le)  # a bound since removed from BUCKETS: still counted
                    except ValueError:
                        continue
            running = 0.0
            for le in sorted(bounds, key=bounds.__getitem__):
                running += buckets.get(le, 0.0)
                lines.append(_sample(f"{name}_bucket", tuple(sorted((*labels, ("le", le)))), running))
            running += buckets.get("+Inf", 0.0)
            lines.append(_sample(f"{name}_bucket", tuple(sorted((*labels, ("le", "+Inf")))), running))
            lines.append(_sample(f"{name}_sum", labels, total))
            lines.append(_sample(f"{name}_count", labels, running))
        return lines
    def name_scopes(self, names: Mapping[tuple[str, str], str]) -> None:
        """Adds a ``scope_name`` label beside ``scope`` (the id machines join on) to every sample that has
        a scope: the name a person reads (e.g. ``sites/operations / Documents``) where the scope has one,
        else the scope itself (a folder, a site), so that a dashboard can always show ``scope_name``."""
        for family, samples in self._samples.items():
            renamed: dict[Labels, float] = {}
            for labels, value in samples.items():
                found = dict(labels)
                if "scope" in found and "scope_name" not in found:
                    name = names.get((found.get("source", ""), found["scope"])) or found["scope"]
                    labels = tuple(sorted((*labels, ("scope_name", name))))
                renamed[labels] = value
            self._samples[family] = renamed

    def render(self) -> str:
        lines: list[str] = []
        for name in sorted({*self._samples, *self._histograms}):
            kind, help_text = FAMILIES.get(name, (self._types.get(name, "untyped"), f"{name} (no description)"))
            lines.append(f"# HELP {name} {help_text.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
            lines.append(f"# TYPE {name} {kind}")
            if name in self._histograms:
                lines.extend(self._histogram_lines(name))
            else:
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
        if status.get("state"):
            exposition.add("kmrl_scope_state", (*labels, ("state", status["state"])), 1.0)
        exposition.add("kmrl_scope_failures_in_a_row", labels, float(status.get(FAILURES_IN_A_ROW) or 0))
    sources.update(state.dead_letter_sources())
    # Every source that ever ran gets a sample, 0 included, so an alert can tell "none" from "unknown".
    for source in sorted(sources):
        exposition.add("kmrl_dead_letters", (("source", source),), float(state.dead_letter_count(source)))
    waiting: dict[str, int] = {}
    for entry in state.list_held():
        waiting[entry.connector] = waiting.get(entry.connector, 0) + (entry.state == HELD)
    for source in sorted(waiting):
        exposition.add("kmrl_held_documents", (("source", source),), float(waiting[source]))


def _schedule_samples(settings: Settings, exposition: Exposition) -> None:
    for source in registry.SOURCES.values():
        try:
            minutes = source.interval_minutes(settings)
        except ConfigError as exc:  # beat refuses to start with it; the scrape goes on without the series
            log.warning("metrics_interval_unreadable", source=source.name, error=str(exc))
            continue
        if minutes:
            exposition.add("kmrl_sync_interval_seconds", (("source", source.name),), minutes * 60.0)


def build_version() -> str:
    """The installed distribution's version, else pyproject.toml's beside the code, else ``unknown``."""
    try:
        return importlib.metadata.version("kmrl-connectors")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as handle:
            return str(tomllib.load(handle)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


#: ``kmrl_build_info``'s labels, read once per process.
BUILD_LABELS: Labels = (("python", platform.python_version()), ("version", build_version()))


def render_metrics(state: StateStore, *, now: float | None = None, settings: Settings | None = None) -> str:
    """The whole exposition for the state in ``state`` (counters, gauges, histograms and live series);
    with ``settings``, each source's sync interval too."""
    now = time.time() if now is None else now
    counters, gauges = state.metrics()
    exposition = Exposition()
    exposition.add_stored(counters, "counter")
    exposition.add_stored(gauges, "gauge")
    exposition.add_histograms(state.histograms())
    _live_samples(state, exposition, now)
    if settings is not None:
        _schedule_samples(settings, exposition)
    exposition.add("kmrl_build_info", BUILD_LABELS, 1.0)
    exposition.name_scopes({(connector, scope): status["scope_name"]
                            for connector, scope, status in state.iter_statuses() if status.get("scope_name")})
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
            flush_all()  # this process's own webhook metrics, written now rather than in a few seconds
            body = render_metrics(store, settings=settings)
        except redis.RedisError as exc:
            log.warning("metrics_unavailable", dependency="redis", error=type(exc).__name__)
            return Response("# redis unreachable\n", status=503, content_type=CONTENT_TYPE)
        return Response(body, content_type=CONTENT_TYPE)

    return bp

