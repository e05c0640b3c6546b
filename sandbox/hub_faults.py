"""Faults on demand for the Knowledge Hub simulator: which request gets which wrong answer.

A ``Fault`` is one rule ("the next 2 uploads answer 503", "answer 429 with Retry-After: 3 for
10 seconds", "refuse report.pdf with 422"). A ``FaultBook`` holds the active rules, thread-safe,
and hands out the first one that applies to a request at each point of its handling.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

#: What a fault can do. error: answer ``status`` (default 503); throttle: 429 with ``Retry-After``;
#: forbidden: 403; drop: close the connection mid-request; slow: sleep ``delay`` s before answering;
#: reject: refuse the document whose filename or sha256 is ``match`` (default 422);
#: too_large: 413 for an uploaded file bigger than ``max_size`` bytes.
FAULT_KINDS = ("error", "throttle", "forbidden", "drop", "slow", "reject", "too_large")

#: The Hub endpoints a fault may be limited to (``endpoint=None``: all of them).
ENDPOINTS = ("upload", "sources", "enrichment", "metadata", "text", "delete", "health")

#: When in a request's handling each kind is decided: on arrival (before the body is read), once the
#: document is known (after the body is parsed), or just before the answer is sent.
PHASE_OF_KIND = {
    "error": "arrival", "throttle": "arrival", "forbidden": "arrival", "drop": "arrival",
    "reject": "document", "too_large": "document",
    "slow": "answer",
}

#: Endpoints that carry a document (the only ones "reject" and "too_large" can apply to).
_DOCUMENT_ENDPOINTS = {"reject": ("upload", "sources", "enrichment", "metadata"), "too_large": ("upload",)}


@dataclass
class Fault:
    """One fault rule.

    kind: one of FAULT_KINDS.
    status: the answer for ``error`` (default 503) and ``reject`` (default 422).
    count: how many requests it applies to; None = until cleared or expired.
    seconds: how long it lasts from when it is set; None = until its count is used or it is cleared.
    retry_after: the ``Retry-After`` header of ``throttle``, in whole seconds (default 1).
    delay: seconds ``slow`` sleeps before answering.
    match: filename or sha256 of the document ``reject`` refuses.
    max_size: bytes; ``too_large`` refuses a file bigger than this.
    endpoint: limit the fault to one of ENDPOINTS; None = every /api/v1 endpoint.
    """

    kind: str
    status: int | None = None
    count: int | None = None
    seconds: float | None = None
    retry_after: int = 1
    delay: float = 0.0
    match: str | None = None
    max_size: int | None = None
    endpoint: str | None = None
    fired: int = 0
    expires_at: float | None = field(default=None, repr=False)  # time.monotonic()

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if self.endpoint is not None and self.endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {self.endpoint!r}; expected one of {', '.join(ENDPOINTS)}")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1 (or None for no limit)")
        if self.seconds is not None and self.seconds <= 0:
            raise ValueError("seconds must be positive (or None for no limit)")
        if self.kind == "error":
            self.status = self.status or 503
            if not 400 <= self.status <= 599:
                raise ValueError("an error fault answers a 4xx or 5xx status")
        elif self.kind == "reject":
            self.status = self.status or 422
            if not self.match:
                raise ValueError("a reject fault needs match= (a filename or sha256)")
        elif self.kind == "throttle":
            self.status = 429
            if self.retry_after < 0:
                raise ValueError("retry_after is a number of seconds >= 0")
        elif self.kind == "forbidden":
            self.status = 403
        elif self.kind == "too_large":
            self.status = 413
            if self.max_size is None or self.max_size < 0:
                raise ValueError("a too_large fault needs max_size= (bytes)")
        elif self.kind == "slow" and self.delay <= 0:
            raise ValueError("a slow fault needs delay= (seconds > 0)")
        if self.seconds is not None and self.expires_at is None:
            self.expires_at = time.monotonic() + self.seconds

    @classmethod
    def from_json(cls, data: Any) -> Fault:
        """A Fault from its JSON form (as posted to ``/_sim/faults``).

        Raises TypeError when ``data`` is not a JSON object, ValueError when its fields are wrong.
        """
        if not isinstance(data, dict):
            raise TypeError("a fault is a JSON object")
        allowed = {"kind", "status", "count", "seconds", "retry_after", "delay", "match", "max_size", "endpoint"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        if "kind" not in data:
            raise ValueError("a fault needs a kind")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(str(exc)) from exc

    def to_json(self) -> dict[str, Any]:
        """The JSON form, with ``remaining`` seconds instead of the monotonic deadline."""
        out = asdict(self)
        deadline = out.pop("expires_at")
        out["remaining"] = None if deadline is None else max(0.0, round(deadline - time.monotonic(), 3))
        return out

    def spent(self, now: float) -> bool:
        """True once its count is used up or its time has passed."""
        if self.count is not None and self.fired >= self.count:
            return True
        return self.expires_at is not None and now >= self.expires_at

    def applies(self, phase: str, endpoint: str, *, filename: str | None, sha256: str | None,
                size: int | None) -> bool:
        """Whether this fault decides the answer of a request at ``phase`` of ``endpoint``."""
        if PHASE_OF_KIND[self.kind] != phase:
            return False
        if self.endpoint is not None and self.endpoint != endpoint:
            return False
        if self.kind in _DOCUMENT_ENDPOINTS and endpoint not in _DOCUMENT_ENDPOINTS[self.kind]:
            return False
        if self.kind == "reject":
            return self.match in (filename, sha256)
        if self.kind == "too_large":
            return size is not None and self.max_size is not None and size > self.max_size
        return True


class FaultBook:
    """The active faults of one simulator; safe to use from every request thread at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        # Set on clear() so a slow answer sleeping on it wakes up at once.
        self._wake = threading.Event()

    def add(self, fault: Fault) -> Fault:
        """Activates ``fault`` (after those already active, which take precedence)."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Removes every fault and wakes every request sleeping in a ``slow`` fault."""
        with self._lock:
            self._faults.clear()
            self._wake.set()
            self._wake = threading.Event()

    def active(self) -> list[Fault]:
        """The faults still in force, oldest first."""
        now = time.monotonic()
        with self._lock:
            self._faults = [f for f in self._faults if not f.spent(now)]
            return list(self._faults)

    def take(self, phase: str, endpoint: str, *, filename: str | None = None, sha256: str | None = None,
             size: int | None = None) -> Fault | None:
        """The first active fault that applies, counted as fired; None when the request goes through."""
        now = time.monotonic()
        with self._lock:
            self._faults = [f for f in self._faults if not f.spent(now)]
            for fault in self._faults:
                if fault.applies(phase, endpoint, filename=filename, sha256=sha256, size=size):
                    fault.fired += 1
                    return fault
        return None

    def sleep(self, seconds: float) -> None:
        """Sleeps ``seconds``, or less if the faults are cleared meanwhile."""
        with self._lock:
            wake = self._wake
        wake.wait(seconds)
