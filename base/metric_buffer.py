"""Metric increments held in process until a Redis write that is made anyway carries them.

Counters and histograms of things that happen often (an upload, a webhook request) would cost a
Redis round trip each if written as they happen. A ``MetricBuffer`` collects them in process (a
lock, a dict increment and, for a histogram, a bisect); whoever writes to Redis next drains the
buffer into that write's pipeline: the run's batch record (MULTI/EXEC), the run's end, or the web
process's periodic flush (web/metric_flush.py). Increments drained into a pipeline that then
fails are lost; a metric is not worth failing or repeating a write for.

Histograms are stored in the ``metrics:histograms`` hash as one field per bucket holding the count
of observations that fell in that bucket alone (``name_bucket|le=0.5,source=email``, not
cumulative, so one observation is one HINCRBYFLOAT) and one ``name_sum|...`` field; web/metrics.py
renders them as Prometheus histograms (cumulative ``_bucket`` series with ``le``, ``_sum``,
``_count``). Several processes add to the same fields, so the scrape shows the whole fleet.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Run duration of a scope, by source; seconds (a tick is minutes apart; a first sync may take an hour).
RUN_DURATION = "kmrl_run_duration_seconds"
#: One upload to the Hub (or the outbox), from the request to its answer, by source; seconds.
HUB_UPLOAD = "kmrl_hub_upload_seconds"
#: One webhook request, from the view being called to its answer, by webhook; seconds.
WEBHOOK_REQUEST = "kmrl_webhook_request_seconds"
#: New documents by source, detected language and classified department (a counter).
DOCUMENTS_CLASSIFIED = "kmrl_documents_classified_total"

#: Upper bounds of each histogram's buckets (``+Inf`` is implied); seconds.
BUCKETS: Mapping[str, tuple[float, ...]] = {
    RUN_DURATION: (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0),
    HUB_UPLOAD: (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
    WEBHOOK_REQUEST: (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
}

Labels = tuple[tuple[str, str], ...]


def label_text(labels: Labels) -> str:
    """Sorted labels as stored after a field's ``|`` (see base.state.metric_field)."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels))


def bucket_field(name: str, le: float, labels: Labels) -> str:
    """The stored field of one histogram bucket (its own count, not cumulative)."""
    return f"{name}_bucket|" + label_text((("le", le_text(le)), *labels))


def sum_field(name: str, labels: Labels) -> str:
    """The stored field of a histogram's sum of observations."""
    text = label_text(labels)
    return f"{name}_sum|{text}" if text else f"{name}_sum"


def le_text(le: float) -> str:
    """A bucket bound as Prometheus writes it (``0.5``, ``1.0``, ``+Inf``)."""
    return "+Inf" if le == float("inf") else repr(float(le))


@dataclass
class Increments:
    """What a drain returns: field -> amount to add, for the counters hash and the histograms hash."""

    counters: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.counters or self.histograms)

    def add_to(self, pipe: Any, counters_key: str, histograms_key: str) -> None:
        """Queues one HINCRBYFLOAT per field on ``pipe`` (a redis-py pipeline)."""
        for name, value in self.counters.items():
            pipe.hincrbyfloat(counters_key, name, value)
        for name, value in self.histograms.items():
            pipe.hincrbyfloat(histograms_key, name, value)


class MetricBuffer:
    """Counter increments and histogram observations waiting for a write; safe from any thread.

    ``observe`` takes a name from ``BUCKETS``; ``count`` any counter name. Label values are kept as
    given (strings).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, float] = {}
        #: (name, labels) -> [count per bucket (the last one is +Inf), sum].
        self._histograms: dict[tuple[str, Labels], tuple[list[int], list[float]]] = {}

    def count(self, name: str, labels: Mapping[str, str], value: float = 1.0) -> None:
        """Adds ``value`` to a counter; 0 makes the series appear at the next write."""
        key = name + "|" + label_text(tuple(labels.items())) if labels else name
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + value

    def observe(self, name: str, labels: Mapping[str, str], value: float) -> None:
        """Records one observation of histogram ``name`` (a key of ``BUCKETS``)."""
        bounds = BUCKETS[name]
        at = bisect.bisect_left(bounds, value)  # le is inclusive: a value equal to a bound is in its bucket
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            entry = self._histograms.get(key)
            if entry is None:
                entry = self._histograms[key] = ([0] * (len(bounds) + 1), [0.0])
            entry[0][at] += 1
            entry[1][0] += value

    def drain(self) -> Increments:
        """Everything recorded since the last drain, as increments; the buffer is empty afterwards."""
        with self._lock:
            counters, self._counters = self._counters, {}
            histograms, self._histograms = self._histograms, {}
        out = Increments(counters=counters)
        for (name, labels), (counts, total) in histograms.items():
            bounds = (*BUCKETS[name], float("inf"))
            for le, n in zip(bounds, counts, strict=True):
                if n:
                    out.histograms[bucket_field(name, le, labels)] = float(n)
            out.histograms[sum_field(name, labels)] = total[0]
        return out
