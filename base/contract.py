"""The connector contract (DESIGN.md "The connector contract"): everything a connector author needs,
from one module.

A connector only knows its source. ``list_changes(scope, cursor)`` lazily yields ``Item``s for what
changed since ``cursor``, ``ItemFailure``s for items it could not read, and ``Checkpoint``s at safe
points (e.g. a page boundary). An ``Item`` carries metadata and text at once but its bytes only
through ``open()``, which the pipeline calls when (and only when) it needs them. ``health_check``
answers a ``HealthResult``. What goes wrong is raised as one of the classified errors below.

A connector does not reach into the state store: the wiring hands it ``SourceClients``, which gives
it HTTP clients for its source and the throttle gates every worker shares.

The states a scope run ends in (``ScopeState``) and a health check reports (``HealthState``) are
string enums: their values are what Redis, the metrics, the logs and the JSON output carry.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from utils.errors import (
    AuthError,
    ConfigError,
    ConnectorError,
    ItemError,
    ItemTooLarge,
    LeaseLostError,
    OriginNotAllowed,
    PagingLoopError,
    ResponseTooLarge,
    SpoolFullError,
    ThrottledError,
    TransientError,
)
from utils.http import HttpClient, ThrottleGate
from utils.logging import mask_text

__all__ = [
    "AuthError", "Change", "Checkpoint", "ChunkSource", "ConfigError", "ConnectorError", "GateFactory",
    "HealthResult", "HealthState", "Item", "ItemError", "ItemFailure", "ItemTooLarge", "LeaseLostError",
    "OriginNotAllowed", "PagingLoopError", "ResponseTooLarge", "ScopeState", "SourceClients", "SpoolFullError",
    "ThrottleGate", "ThrottledError", "TransientError",
]


class ScopeState(enum.StrEnum):
    """How a scope's run went (the ``state`` of its status, history, summary and ``kmrl_runs_total``).

    Members are listed from best to worst: that is the one order in which run states are ranked
    (``worst``). ``RUNNING`` is last: a run that has not finished has not succeeded.
    """

    OK = "ok"
    #: Stopped at its deadline (or the task's time limit) at a safe point; the next tick resumes.
    PARTIAL = "partial"
    #: Another worker holds the scope's lease; nothing was done.
    LOCKED = "locked"
    #: The spool folder is below its free-space guard.
    PAUSED = "paused"
    #: The service asked for a pause longer than the inline retry cap.
    THROTTLED = "throttled"
    #: Transient (source or Hub unreachable, or an unclassified failure); retried.
    ERROR = "error"
    #: Another worker took the lease over mid-run.
    LEASE_LOST = "lease_lost"
    CONFIG_ERROR = "config_error"
    AUTH_FAILED = "auth_failed"
    RUNNING = "running"

    @property
    def succeeded(self) -> bool:
        """True for a run that did its work (``ok``) or stopped at a safe point (``partial``)."""
        return self in (ScopeState.OK, ScopeState.PARTIAL)

    @property
    def failed(self) -> bool:
        """True for a run that ended in failure (error, lease_lost, config_error, auth_failed)."""
        return self in _FAILED

    @classmethod
    def worst(cls, states: Iterable[str]) -> str:
        """The worst of ``states`` in the member order (``ok`` when empty); a value that is no
        member ranks worst of all."""
        return max(states, key=_scope_rank, default=cls.OK)

    @classmethod
    def for_error(cls, exc: BaseException) -> ScopeState:
        """The state a classified error ends a run in (``error`` for anything not config or throttled)."""
        if isinstance(exc, ThrottledError):
            return cls.THROTTLED
        if isinstance(exc, ConfigError):
            return cls(exc.state)
        return cls.ERROR


def _scope_rank(state: str) -> int:
    order = list(ScopeState)
    try:
        return order.index(ScopeState(state))
    except ValueError:
        return len(order)


_FAILED = frozenset({ScopeState.ERROR, ScopeState.LEASE_LOST, ScopeState.CONFIG_ERROR, ScopeState.AUTH_FAILED})


class HealthState(enum.StrEnum):
    """What a health check found (a connector's ``HealthResult``, a source's health).

    Members are listed from best to worst, the one order in which health states are ranked.
    """

    HEALTHY = "healthy"
    #: The scope's last success is older than a few sync intervals (computed from its status).
    STALE = "stale"
    THROTTLED = "throttled"
    DEGRADED = "degraded"
    UNREACHABLE = "unreachable"
    CONFIG_ERROR = "config_error"
    AUTH_FAILED = "auth_failed"

    @classmethod
    def worst(cls, states: Iterable[str], *, default: str = "healthy") -> HealthState:
        """The worst of ``states`` (each a member's value) in the member order; ``default`` when empty."""
        order = list(cls)
        return max((cls(s) for s in states), key=order.index, default=cls(default))

    @classmethod
    def for_error(cls, exc: BaseException) -> HealthState:
        """The state a classified error means for a check: throttled, auth_failed, config_error or unreachable."""
        if isinstance(exc, ThrottledError):
            return cls.THROTTLED
        if isinstance(exc, ConfigError):
            return cls(exc.state)
        return cls.UNREACHABLE


#: What ``Item.open`` is: a callable returning the item's bytes as an iterable of chunks.
ChunkSource = Callable[[], Iterable[bytes]]


@dataclass
class Item:
    """One change in a source, as a connector reports it.

    ``source_id`` is the stable identity of the source item (the same across versions);
    ``version`` changes whenever the item changes (IMAP UID, eTag, doclink ``modified``, wamid).
    ``open()`` returns an iterable of byte chunks; it may raise ``ItemError`` (dead-letter) or a
    transient/config error. A connector may verify a checksum after the last chunk and raise
    ``ItemError`` on mismatch. ``cursor_after`` is the cursor that is safe once this item and all
    before it are done, or ``None`` when this item is not a safe point.
    ``hints`` are source facts the classifier weighs (e.g. ``{"worktype": "PM"}``).
    ``location`` says where the item is at its source and what it is called there (SharePoint: its
    path in the library, name included), for a connector whose items can be renamed or moved
    without a new ``version``: when it changes and the version does not, the pipeline sends the Hub a
    metadata update of the same document instead of skipping the item (base/relocation.py). Empty:
    the connector does not say, and a same-version item is skipped as before.
    """

    source_id: str
    version: str
    filename: str = ""
    open: ChunkSource | None = None
    mime_type: str = "application/octet-stream"
    size: int | None = None
    title: str = ""
    text: str = ""
    author: str = ""
    created_at: str | None = None
    modified_at: str | None = None
    source_url: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    hints: dict[str, str] = field(default_factory=dict)
    deleted: bool = False
    cursor_after: Any = None
    location: str = ""


@dataclass
class ItemFailure:
    """An item the connector found but could not read; the pipeline dead-letters it."""

    source_id: str
    reason: str
    version: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    cursor_after: Any = None


@dataclass
class Checkpoint:
    """A safe point in the feed: everything yielded before it may be forgotten once done."""

    cursor: Any


Change = Item | ItemFailure | Checkpoint


@dataclass
class HealthResult:
    """The outcome of ``health_check``: ``state`` is healthy, degraded, throttled, auth_failed,
    config_error or unreachable; ``detail`` says what was proven or what failed."""

    ok: bool
    state: str
    detail: str

    @classmethod
    def from_error(cls, exc: ConfigError | TransientError, *, prefix: str = "") -> HealthResult:
        """The failed result for a classified error: throttled, auth_failed, config_error or unreachable."""
        return cls(False, HealthState.for_error(exc), mask_text(prefix + str(exc)))


#: The shared throttle gate of one (service, tenant), e.g. ``("graph", tenant_id)``.
GateFactory = Callable[[str, str], ThrottleGate]


class SourceClients:
    """What a connector uses to reach its source, handed to it by the service's wiring.

    gates: the throttle gate of a (service, tenant), shared by every worker (the wiring gives the
        state store's Redis gates; a test may give in-memory ones).

    A connector builds its HTTP clients here instead of from the state store, so each client
    carries the gate of its service and tenant.
    """

    def __init__(self, gates: GateFactory) -> None:
        self._gates = gates

    def gate(self, service: str, tenant: str = "default") -> ThrottleGate:
        """The shared pause of ``service`` for ``tenant`` (a host, a tenant id, a phone number id)."""
        return self._gates(service, tenant or "default")

    def http(self, service: str, *, tenant: str = "default", **options: Any) -> HttpClient:
        """An ``HttpClient`` named ``service`` whose requests respect ``gate(service, tenant)``.

        ``options`` are ``HttpClient``'s own (timeout, policy, ca_bundle, origins, session, sleep...).
        """
        return HttpClient(service, gate=self.gate(service, tenant), **options)
