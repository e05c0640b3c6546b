"""All of the service's state in Redis (DESIGN.md "Redis state"); the keys are base/keys.py's.

The hot path is batched: the runner looks up a window of items' versions in one round trip
(``get_items``), the contents of the documents it read in another (``get_contents``), and records a
batch of results together with the scope's cursor in one MULTI/EXEC (``record_many``): well under
one round trip per document. ``get_item`` / ``get_content`` / ``record_ingested`` are the same
operations for one document.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from base import lua
from base import recent as recent_record
from base.keys import DEFAULT_PREFIX, KeySchema
from base.metric_buffer import Increments
from base.recent import DEAD_LETTERED, RecentDocument
from config.redis_tls import redis_tls_kwargs
from config.settings import Settings
from utils.errors import LeaseLostError

#: Run summaries kept per scope in ``history:*``.
HISTORY_LENGTH = 200
#: A scope's ``failing:*`` hash expires this long after its last write, so the entries of items that
#: stopped failing without ever succeeding (deleted at the source, say) do not stay for ever.
FAILING_TTL = 30 * 86400  # seconds


@dataclass(frozen=True)
class ItemRecord:
    """What was ingested for one source item.

    ``held``: the id of the held-document entry when this version was held back by a content rule
    instead of delivered; ``sha256`` and ``hub_id`` then still name what the Hub has of the item
    (an earlier version), empty when it has nothing.
    ``location``: a digest of where the item was at its source and what it was called there, when
    its connector says (``Item.location``; base/relocation.py); "" when unknown.
    """

    version: str
    sha256: str
    hub_id: str
    held: str = ""
    location: str = ""


@dataclass
class DeadLetter:
    """A failed item: where it came from, why it failed, and where its bytes are kept (if anywhere)."""

    connector: str
    scope: str
    source_id: str
    reason: str
    version: str = ""
    attempts: int = 1
    first_failed_at: float = field(default_factory=time.time)
    last_failed_at: float = field(default_factory=time.time)
    bytes_path: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    #: The item's filename when it was known (entries written before it existed: see ``display_name``).
    filename: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            self.id = dead_letter_id(self.scope, self.source_id)

    @property
    def display_name(self) -> str:
        """The filename: its own, else the one in the kept Hub metadata, else ""."""
        hub = self.metadata.get("hub")
        return self.filename or (str(hub.get("filename") or "") if isinstance(hub, dict) else "")

    @property
    def text_path(self) -> str:
        """Where the document's extracted text is kept beside its bytes (UTF-8; the file exists only
        when the document had text); "" when no bytes are kept."""
        return f"{self.bytes_path}.txt" if self.bytes_path else ""


#: States of a held-document entry: its bytes are kept, or the retention deleted them.
HELD, EXPIRED = "held", "expired"


@dataclass
class HeldDocument:
    """A document a ``[[hold]]`` content rule kept back from the Hub: where it came from, which rule
    and which kinds of personal data (counts, never values), where its bytes are kept, and the Hub
    metadata a release sends (``metadata["hub"]``, with the item's ``metadata["source"]``).

    ``state`` is ``held`` while the bytes are kept, ``expired`` once the retention deleted them
    (``expired_at``)."""

    connector: str
    scope: str
    source_id: str
    version: str
    rule: str
    kinds: dict[str, int] = field(default_factory=dict)
    filename: str = ""
    sha256: str = ""
    size: int = 0
    held_at: float = field(default_factory=time.time)
    bytes_path: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    state: str = HELD
    expired_at: float = 0.0
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            self.id = held_id(self.connector, self.scope, self.source_id)

    @property
    def text_path(self) -> str:
        """Where the document's extracted text is kept beside its bytes (UTF-8; the file exists only
        when the document had text); "" when no bytes are kept."""
        return f"{self.bytes_path}.txt" if self.bytes_path else ""


def held_id(connector: str, scope: str, source_id: str) -> str:
    """A short stable id for the held entry of (connector, scope, source_id), unique across
    connectors (the ``held`` commands take an id alone)."""
    return hashlib.sha1(f"{connector}\x00{scope}\x00{source_id}".encode(), usedforsecurity=False).hexdigest()[:16]


def dead_letter_id(scope: str, source_id: str) -> str:
    """A short stable id for the dead-letter entry of (scope, source_id)."""
    return hashlib.sha1(f"{scope}\x00{source_id}".encode(), usedforsecurity=False).hexdigest()[:16]


def _cursor_json(cursor: Any) -> str:
    """A cursor as it is stored (``get_cursor`` reads it back)."""
    return json.dumps(cursor, sort_keys=True)


def _item_record(raw: str | bytes | None) -> ItemRecord | None:
    """An item record from its stored JSON (None when there is none)."""
    if not raw:
        return None
    data = json.loads(raw)
    return ItemRecord(version=data.get("v", ""), sha256=data.get("sha256", ""), hub_id=data.get("hub_id", ""),
                      held=data.get("held", ""), location=data.get("loc", ""))


#: The status field counting a scope's failed runs since its last successful one.
FAILURES_IN_A_ROW = "failures_in_a_row"


def metric_field(name: str, labels: Mapping[str, str] | None = None) -> str:
    """The hash field a metric sample is stored under: ``name|k=v,k=v`` (labels sorted)."""
    if not labels:
        return name
    return name + "|" + ",".join(f"{k}={labels[k]}" for k in sorted(labels))




class Lease:
    """A lease lock on one (connector, scope): SET NX PX with a random token.

    While held, a heartbeat thread renews it every third of its TTL, so a single long step (a 1 GB
    download) never lets it lapse; only a dead or frozen holder loses it. ``keep_alive()``, called
    between items, raises ``LeaseLostError`` once the lease is known to belong to someone else:
    the run must stop at once.
    """

    def __init__(self, store: StateStore, key: str, ttl: float) -> None:
        self._store = store
        self.key = key
        self.ttl_ms = max(1000, int(ttl * 1000))
        self.token = secrets.token_hex(16)
        self._renewed_at = 0.0
        self.held = False
        self.lost = False
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def acquire(self, *, heartbeat: bool = True) -> bool:
        """Takes the lease if nobody holds it (and starts the heartbeat); False when it is held."""
        self.held = bool(self._store.redis.set(self.key, self.token, nx=True, px=self.ttl_ms))
        self._renewed_at = time.monotonic()
        if self.held and heartbeat:
            self._stop.clear()
            self._heartbeat = threading.Thread(target=self._beat, name=f"lease-{self.key}", daemon=True)
            self._heartbeat.start()
        return self.held

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                if not self._store._renew(keys=[self.key], args=[self.token, self.ttl_ms]):
                    self.lost = True
                    return
                self._renewed_at = time.monotonic()
            except redis.RedisError:
                continue  # Redis unreachable: the run's own calls fail too; try again next beat

    def renew(self) -> None:
        """Extends the lease to a full TTL; raises ``LeaseLostError`` when it is no longer ours."""
        if not self._store._renew(keys=[self.key], args=[self.token, self.ttl_ms]):
            self.held = False
            raise LeaseLostError(f"lease {self.key} was lost to another worker")
        self._renewed_at = time.monotonic()

    def keep_alive(self) -> None:
        """Raises ``LeaseLostError`` if the heartbeat found the lease taken; renews when overdue."""
        if self.lost:
            self.held = False
            raise LeaseLostError(f"lease {self.key} was lost to another worker")
        if time.monotonic() - self._renewed_at >= self.ttl_ms / 3000:
            self.renew()

    def release(self) -> None:
        """Stops the heartbeat and gives the lease back if it is still ours (never another holder's)."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
            self._heartbeat = None
        if self.held:
            self._store._release(keys=[self.key], args=[self.token])
            self.held = False


class RedisThrottleGate:
    """The shared pause for one (service, tenant): every worker reads it before each request."""

    def __init__(self, store: StateStore, service: str, tenant: str) -> None:
        self._store = store
        self.service = service
        self.key = store.keys.throttle(service, tenant)

    def blocked_until(self) -> float:
        value = self._store.redis.get(self.key)
        return float(value) if value else 0.0

    def block_until(self, until: float) -> None:
        ttl_ms = max(1000, int((until - time.time()) * 1000) + 1000)
        self._store._throttle(keys=[self.key], args=[f"{until:.3f}", ttl_ms])
        self._store.incr_metric("kmrl_throttled_seconds_total", {"service": self.service},
                                max(0.0, until - time.time()))


class StateStore:
    """Redis-backed state for every connector and scope (see the module docstring for keys)."""

    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.redis = client
        self.prefix = prefix
        self.keys = KeySchema(prefix)
        self._renew = client.register_script(lua.source("lease_renew"))
        self._release = client.register_script(lua.source("lease_release"))
        self._throttle = client.register_script(lua.source("throttle_raise"))

    @classmethod
    def from_url(cls, url: str, *, prefix: str = DEFAULT_PREFIX, ca_file: str = "") -> StateStore:
        """A store on ``url``; a ``rediss://`` URL is verified against ``ca_file`` or the system CAs."""
        client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=30, socket_connect_timeout=5,
                                      health_check_interval=25, **redis_tls_kwargs(url, ca_file))
        return cls(client, prefix=prefix)

    @classmethod
    def from_settings(cls, settings: Settings) -> StateStore:
        return cls.from_url(settings.state_redis_url, prefix=settings.key_prefix, ca_file=settings.redis_ca_file)

    def key(self, *parts: str) -> str:
        """A full key: the prefix, then the parts joined by ``:`` (the service's own kinds have a
        builder in ``self.keys``; this is for anything else under the prefix)."""
        return self.keys.join(*parts)

    # -- cursors --------------------------------------------------------------------------------
    def get_cursor(self, connector: str, scope: str) -> Any:
        raw = self.redis.get(self.keys.cursor(connector, scope))
        return json.loads(raw) if raw else None

    def set_cursor(self, connector: str, scope: str, cursor: Any) -> None:
        self.redis.set(self.keys.cursor(connector, scope), _cursor_json(cursor))

    def clear_cursor(self, connector: str, scope: str) -> None:
        self.redis.delete(self.keys.cursor(connector, scope))

    # -- items and content -----------------------------------------------------------------------
    def get_item(self, connector: str, scope: str, source_id: str) -> ItemRecord | None:
        return _item_record(self.redis.hget(self.keys.items(connector, scope), source_id))

    def get_items(self, connector: str, scope: str, source_ids: list[str]) -> dict[str, ItemRecord | None]:
        """``get_item`` for many items of one scope in one round trip (HMGET): every id asked for is a
        key of the answer, None for an item never recorded."""
        unique = list(dict.fromkeys(source_ids))
        if not unique:
            return {}
        raws = self.redis.hmget(self.keys.items(connector, scope), unique)
        return {source_id: _item_record(raw) for source_id, raw in zip(unique, raws, strict=True)}

    def get_content(self, sha256: str) -> str | None:
        value = self.redis.get(self.keys.content(sha256))
        return str(value) if value else None

    def get_contents(self, sha256s: list[str]) -> dict[str, str | None]:
        """``get_content`` for many hashes in one round trip (MGET); None where the Hub has no such bytes."""
        unique = list(dict.fromkeys(sha256s))
        if not unique:
            return {}
        values = self.redis.mget([self.keys.content(sha) for sha in unique])
        return {sha: (str(value) if value else None) for sha, value in zip(unique, values, strict=True)}

    def record_ingested(
        self, connector: str, scope: str, source_id: str, record: ItemRecord, *, outcome: str, size: int,
        recent: RecentDocument | None = None,
    ) -> None:
        """Records an acknowledged item, its content and its counters in one round trip; a dead-letter
        entry left by an earlier failure of the same item is resolved by it and removed."""
        self.record_many(connector, [(scope, source_id, record, outcome, size)], recent=[recent] if recent else ())

    def record_many(self, connector: str, records: list[tuple[str, str, ItemRecord, str, int]], *,
                    cursor: tuple[str, Any] | None = None, recent: Sequence[RecentDocument] = (),
                    buffered: Increments | None = None) -> None:
        """``record_ingested`` for a batch of (scope, source_id, record, outcome, size), in one round
        trip; with ``cursor`` = (scope, value), that scope's cursor is set in the same transaction, so
        the records and the cursor that passes them are written together or not at all. ``recent``:
        the batch's lines for the recent-documents record and the day's totals (base/recent.py), and
        ``buffered`` metric increments (base/metric_buffer.py), written in the same transaction."""
        if not records and cursor is None and not recent and not buffered:
            return
        pipe = self.redis.pipeline(transaction=True)
        counters = self.keys.counters()
        outcomes: dict[str, int] = {}
        new_bytes = 0
        for scope, source_id, record, outcome, size in records:
            pipe.hdel(self.keys.dead_letters(connector), dead_letter_id(scope, source_id))
            value = {"v": record.version, "sha256": record.sha256, "hub_id": record.hub_id}
            if record.location:
                value["loc"] = record.location
            pipe.hset(self.keys.items(connector, scope), source_id, json.dumps(value))
            pipe.set(self.keys.content(record.sha256), record.hub_id)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            new_bytes += size if outcome == "new" else 0
        for outcome, count in outcomes.items():
            pipe.hincrbyfloat(counters, metric_field("kmrl_documents_total", {"source": connector, "outcome": outcome}),
                              count)
        if new_bytes:
            pipe.hincrbyfloat(counters, metric_field("kmrl_bytes_total", {"source": connector}), new_bytes)
        if cursor is not None:
            pipe.set(self.keys.cursor(connector, cursor[0]), _cursor_json(cursor[1]))
        recent_record.write(pipe, self.keys, recent)
        if buffered:
            buffered.add_to(pipe, counters, self.keys.histograms())
        pipe.execute()

    def forget_item(self, connector: str, scope: str, source_id: str, *, recent: RecentDocument | None = None) -> None:
        """Drops a deleted source item's record and counts the deletion (one round trip, with
        ``recent``, its line in the recent-documents record)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(self.keys.items(connector, scope), source_id)
        pipe.hincrbyfloat(self.keys.counters(),
                          metric_field("kmrl_documents_total", {"source": connector, "outcome": "deleted"}), 1)
        recent_record.write(pipe, self.keys, [recent] if recent else [])
        pipe.execute()

    # -- groups of items (the doclinks of one work order) -------------------------------------------
    #: The field of a scope's ``group`` hash saying the index covers every item recorded before it.
    _GROUPS_BUILT = ""

    def ensure_item_groups(self, connector: str, scope: str, group_of: Callable[[str], str | None]) -> int:
        """Builds the scope's group index from its item records once (one HSCAN of the ``item`` hash,
        the first time only; afterwards one HEXISTS). Returns how many records were indexed (0 when
        the index existed). Items recorded later are listed first, so ``set_item_groups`` covers them."""
        key = self.keys.groups(connector, scope)
        if self.redis.hexists(key, self._GROUPS_BUILT):
            return 0
        groups: dict[str, list[str]] = {}
        count = 0
        for source_id, _ in self.redis.hscan_iter(self.keys.items(connector, scope), count=1000):
            group = group_of(str(source_id))
            if group:
                groups.setdefault(group, []).append(str(source_id))
                count += 1
        pipe = self.redis.pipeline(transaction=True)
        for group, ids in groups.items():
            pipe.hset(key, group, json.dumps(sorted(ids)))
        pipe.hset(key, self._GROUPS_BUILT, "1")
        pipe.execute()
        return count

    def get_item_groups(self, connector: str, scope: str, groups: list[str]) -> dict[str, list[str]]:
        """The source_ids last listed in each group (one HMGET); [] for a group never listed."""
        unique = [g for g in dict.fromkeys(groups) if g]
        if not unique:
            return {}
        raws = self.redis.hmget(self.keys.groups(connector, scope), unique)
        return {g: (list(json.loads(raw)) if raw else []) for g, raw in zip(unique, raws, strict=True)}

    def set_item_groups(self, connector: str, scope: str, groups: Mapping[str, list[str]], *,
                        resolved: Sequence[str] = ()) -> None:
        """Replaces the listed source_ids of each group (an empty list drops it) and removes the
        dead-letter entries of the ``resolved`` source_ids of the scope, in one round trip."""
        if not groups and not resolved:
            return
        key = self.keys.groups(connector, scope)
        pipe = self.redis.pipeline(transaction=True)
        for group, ids in groups.items():
            if ids:
                pipe.hset(key, group, json.dumps(sorted(set(ids))))
            else:
                pipe.hdel(key, group)
        if resolved:
            pipe.hdel(self.keys.dead_letters(connector), *[dead_letter_id(scope, sid) for sid in resolved])
        pipe.execute()

    def count_items(self, connector: str, scope: str) -> int:
        return int(self.redis.hlen(self.keys.items(connector, scope)))

    # -- status -------------------------------------------------------------------------------
    def update_status(self, connector: str, scope: str, fields: Mapping[str, Any]) -> None:
        clean: dict[Any, Any] = {
            k: ("" if v is None else (json.dumps(v) if isinstance(v, (dict, list)) else v)) for k, v in fields.items()
        }
        self.redis.hset(self.keys.status(connector, scope), mapping=clean)

    def clear_status(self, connector: str, scope: str) -> None:
        self.redis.delete(self.keys.status(connector, scope))

    def get_status(self, connector: str, scope: str) -> dict[str, str]:
        raw = self.redis.hgetall(self.keys.status(connector, scope))
        return {str(k): str(v) for k, v in raw.items()}

    def iter_statuses(self, connector: str | None = None) -> Iterator[tuple[str, str, dict[str, str]]]:
        """(connector, scope, status) for every scope with a status, sorted by key."""
        for key in sorted(self.redis.scan_iter(match=self.keys.scope_pattern("status", connector), count=500)):
            name, scope = self.keys.parse_scope_key("status", key)
            yield name, scope, self.get_status(name, scope)

    def append_history(self, connector: str, scope: str, summary: Mapping[str, Any]) -> None:
        key = self.keys.history(connector, scope)
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(key, json.dumps(summary, sort_keys=True, default=str))
        pipe.ltrim(key, 0, HISTORY_LENGTH - 1)
        pipe.execute()

    def iter_history(self) -> Iterator[dict[str, Any]]:
        """Every stored run summary, scope by scope (sorted by key), newest first within a scope."""
        for key in sorted(self.redis.scan_iter(match=self.keys.scope_pattern("history"), count=500)):
            for raw in self.redis.lrange(key, 0, -1):
                yield json.loads(raw)

    def trim_history(self, older_than: float) -> int:
        """Drops run summaries that ended before ``older_than`` (Unix time); returns how many."""
        removed = 0
        for key in self.redis.scan_iter(match=self.keys.scope_pattern("history"), count=500):
            entries = self.redis.lrange(key, 0, -1)
            keep = [e for e in entries if float(json.loads(e).get("ended_at", 0)) >= older_than]
            if len(keep) != len(entries):
                removed += len(entries) - len(keep)
                pipe = self.redis.pipeline(transaction=True)
                pipe.delete(key)
                if keep:
                    pipe.rpush(key, *keep)
                pipe.execute()
        return removed

    def abandoned_scopes(self, older_than: float) -> list[tuple[str, str]]:
        """(connector, scope) of every scope whose status says its last run ended before
        ``older_than`` (Unix time): scopes no run has touched since, gone at the source or
        unconfigured. A scope without a run end (a status written by hand) is never one."""
        found = []
        for connector, scope, status in self.iter_statuses():
            ended = float(status.get("last_run_end") or 0)
            if 0 < ended < older_than:
                found.append((connector, scope))
        return found

    def forget_scope(self, connector: str, scope: str) -> None:
        """Drops everything kept for (connector, scope): cursor, item records, status, history,
        failing items and its last-success gauge; a lease still held is left to expire. Its content
        records stay (other scopes' items share them), so a scope that comes back re-reads its
        items but uploads none the Hub already has."""
        pipe = self.redis.pipeline(transaction=True)
        for kind in ("cursor", "item", "status", "history", "failing", "group", "resync"):
            pipe.delete(self.keys.scope_key(kind, connector, scope))
        pipe.hdel(self.keys.gauges(), metric_field("kmrl_last_success_timestamp_seconds",
                                                   {"scope": scope, "source": connector}))
        pipe.execute()

    # -- locks and throttling ---------------------------------------------------------------------
    def lease(self, connector: str, scope: str, *, ttl: float) -> Lease:
        return Lease(self, self.keys.lock(connector, scope), ttl)

    def lock_holder(self, connector: str, scope: str) -> str | None:
        value = self.redis.get(self.keys.lock(connector, scope))
        return str(value) if value else None

    def throttle_gate(self, service: str, tenant: str = "default") -> RedisThrottleGate:
        return RedisThrottleGate(self, service, tenant)

    # -- dead letters -------------------------------------------------------------------------
    def add_dead_letter(self, entry: DeadLetter) -> DeadLetter:
        """Stores ``entry``; a repeat failure of the same item keeps its first time and counts attempts.
        The failure is a line of the recent-documents record too (same transaction)."""
        key = self.keys.dead_letters(entry.connector)
        previous = self.redis.hget(key, entry.id)
        if previous:
            old = json.loads(previous)
            entry.attempts = int(old.get("attempts", 1)) + 1
            entry.first_failed_at = float(old.get("first_failed_at", entry.first_failed_at))
            entry.bytes_path = entry.bytes_path or old.get("bytes_path", "")
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, entry.id, json.dumps(asdict(entry), sort_keys=True, default=str))
        pipe.hdel(self.keys.failing(entry.connector, entry.scope), entry.source_id)
        pipe.hincrbyfloat(self.keys.counters(),
                          metric_field("kmrl_documents_total", {"source": entry.connector, "outcome": "dead_lettered"}),
                          1)
        hub = entry.metadata.get("hub")
        recent_record.write(pipe, self.keys, [recent_record.from_metadata(
            hub if isinstance(hub, dict) else {}, source=entry.connector, scope=entry.scope,
            source_id=entry.source_id, decision=DEAD_LETTERED, filename=entry.display_name, reason=entry.reason)])
        pipe.execute()
        return entry

    # -- held documents ------------------------------------------------------------------------------
    def add_held(self, entry: HeldDocument, previous: ItemRecord | None) -> HeldDocument:
        """Stores ``entry`` and records its item as done (held) in one transaction, so the cursor may
        pass it and no run fetches this version again. The item record keeps what the Hub has of the
        item (``previous``: its last delivered version) beside the ``held`` mark. The same version
        held again (a full run, a crash before the cursor moved) keeps its first ``held_at``. A
        dead-letter entry or failed downloads of the item are resolved by it."""
        key = self.keys.held(entry.connector)
        old = self.redis.hget(key, entry.id)
        if old:
            data = json.loads(old)
            if data.get("version") == entry.version and data.get("state") == HELD:
                entry.held_at = float(data.get("held_at", entry.held_at))
        # A held ``previous`` names what the Hub has too (its own sha256 and hub_id were kept from before).
        record = {"v": entry.version, "sha256": previous.sha256 if previous else "",
                  "hub_id": previous.hub_id if previous else "", "held": entry.id}
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, entry.id, json.dumps(asdict(entry), sort_keys=True, default=str))
        pipe.hset(self.keys.items(entry.connector, entry.scope), entry.source_id, json.dumps(record))
        pipe.hdel(self.keys.dead_letters(entry.connector), dead_letter_id(entry.scope, entry.source_id))
        pipe.hdel(self.keys.failing(entry.connector, entry.scope), entry.source_id)
        pipe.hincrbyfloat(self.keys.counters(),
                          metric_field("kmrl_documents_total", {"source": entry.connector, "outcome": "held"}), 1)
        hub = entry.metadata.get("hub")
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(entry.kinds.items()))
        recent_record.write(pipe, self.keys, [recent_record.from_metadata(
            hub if isinstance(hub, dict) else {}, source=entry.connector, scope=entry.scope,
            source_id=entry.source_id, decision=recent_record.HELD, filename=entry.filename,
            reason=f"{entry.rule} (personal data: {kinds})" if kinds else entry.rule)])
        pipe.execute()
        return entry

    def update_held(self, entry: HeldDocument) -> None:
        """Writes ``entry`` back (its state changed), only if it is still stored."""
        key = self.keys.held(entry.connector)
        if self.redis.hexists(key, entry.id):
            self.redis.hset(key, entry.id, json.dumps(asdict(entry), sort_keys=True, default=str))

    def get_held(self, entry_id: str) -> HeldDocument | None:
        """The held entry with ``entry_id`` in any connector's store, or None."""
        for key in self.held_keys():
            raw = self.redis.hget(key, entry_id)
            if raw:
                return HeldDocument(**json.loads(raw))
        return None

    def list_held(self, connector: str | None = None) -> list[HeldDocument]:
        """Held entries (of ``connector``, or every one), oldest first."""
        keys = [self.keys.held(connector)] if connector else self.held_keys()
        entries = [HeldDocument(**json.loads(raw)) for key in keys for raw in self.redis.hvals(key)]
        return sorted(entries, key=lambda e: e.held_at)

    def held_keys(self) -> list[str]:
        """Every connector's held-document hash key, sorted."""
        return sorted(self.redis.scan_iter(match=self.keys.held_pattern(), count=100))

    def remove_held(self, connector: str, entry_id: str) -> bool:
        return bool(self.redis.hdel(self.keys.held(connector), entry_id))

    def held_count(self, connector: str) -> int:
        return int(self.redis.hlen(self.keys.held(connector)))

    # -- items whose downloads fail transiently ----------------------------------------------------
    def item_failures(self, connector: str, scope: str) -> dict[str, dict[str, Any]]:
        """source_id -> {"runs", "run", "reason", "first_failed_at", "last_failed_at"} for every item
        of the scope whose download failed transiently in a run and has neither succeeded nor been
        dead-lettered since."""
        raw = self.redis.hgetall(self.keys.failing(connector, scope))
        return {str(k): json.loads(v) for k, v in raw.items()}

    def count_item_failure(self, connector: str, scope: str, source_id: str, *, run_id: str, reason: str) -> int:
        """Counts run ``run_id`` as one in which ``source_id``'s download failed transiently; a second
        call for the same run counts nothing. Returns the number of runs counted so far.

        Read-modify-write is safe: only the holder of the scope's lease writes its items."""
        key = self.keys.failing(connector, scope)
        raw = self.redis.hget(key, source_id)
        entry: dict[str, Any] = json.loads(raw) if raw else {}
        if entry.get("run") == run_id:
            return int(entry.get("runs", 1))
        now = time.time()
        entry = {"runs": int(entry.get("runs", 0)) + 1, "run": run_id, "reason": reason,
                 "first_failed_at": float(entry.get("first_failed_at", now)), "last_failed_at": now}
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, source_id, json.dumps(entry, sort_keys=True))
        pipe.expire(key, FAILING_TTL)
        pipe.execute()
        return int(entry["runs"])

    def clear_item_failure(self, connector: str, scope: str, source_id: str) -> None:
        """Forgets the failed runs of ``source_id`` (its download worked)."""
        self.redis.hdel(self.keys.failing(connector, scope), source_id)

    def get_dead_letter(self, connector: str, scope: str, source_id: str) -> DeadLetter | None:
        """The dead-letter entry of (scope, source_id), or None."""
        raw = self.redis.hget(self.keys.dead_letters(connector), dead_letter_id(scope, source_id))
        return DeadLetter(**json.loads(raw)) if raw else None

    def list_dead_letters(self, connector: str | None = None) -> list[DeadLetter]:
        keys = [self.keys.dead_letters(connector)] if connector else self.dead_letter_keys()
        entries: list[DeadLetter] = []
        for key in keys:
            for raw in self.redis.hvals(key):
                entries.append(DeadLetter(**json.loads(raw)))
        return sorted(entries, key=lambda e: e.last_failed_at)

    def dead_letter_keys(self) -> list[str]:
        """Every connector's dead-letter hash key, sorted."""
        return sorted(self.redis.scan_iter(match=self.keys.dead_letters_pattern(), count=100))

    def dead_letter_sources(self) -> list[str]:
        """Connectors with a dead-letter hash (entries, or none left), sorted."""
        return [self.keys.connector_of_dead_letters(key) for key in self.dead_letter_keys()]

    def remove_dead_letter(self, connector: str, entry_id: str) -> bool:
        return bool(self.redis.hdel(self.keys.dead_letters(connector), entry_id))

    def dead_letter_count(self, connector: str) -> int:
        return int(self.redis.hlen(self.keys.dead_letters(connector)))

    # -- metrics --------------------------------------------------------------------------------
    def incr_metric(self, name: str, labels: Mapping[str, str] | None = None, value: float = 1.0) -> None:
        self.redis.hincrbyfloat(self.keys.counters(), metric_field(name, labels), value)

    def set_gauge(self, name: str, labels: Mapping[str, str] | None, value: float) -> None:
        self.redis.hset(self.keys.gauges(), metric_field(name, labels), value)

    def add_increments(self, increments: Increments) -> None:
        """Writes drained metric increments (base/metric_buffer.py) in one round trip."""
        if increments:
            pipe = self.redis.pipeline(transaction=False)
            increments.add_to(pipe, self.keys.counters(), self.keys.histograms())
            pipe.execute()

    def record_run_metrics(self, connector: str, scope: str, *, state: str, failed: bool | None,
                           increments: Increments) -> None:
        """A run's counters in one round trip: ``kmrl_runs_total`` for its ``state``, ``increments``
        (its duration and what its buffer still held), and the scope's ``failures_in_a_row`` status
        field: one more when ``failed``, 0 when it succeeded (False), unchanged when None (locked,
        throttled, paused: neither)."""
        pipe = self.redis.pipeline(transaction=False)
        runs = metric_field("kmrl_runs_total", {"source": connector, "state": state})
        pipe.hincrbyfloat(self.keys.counters(), runs, 1)
        increments.add_to(pipe, self.keys.counters(), self.keys.histograms())
        if failed is not None:
            status = self.keys.status(connector, scope)
            if failed:
                pipe.hincrby(status, FAILURES_IN_A_ROW, 1)
            else:
                pipe.hset(status, FAILURES_IN_A_ROW, 0)
        pipe.execute()

    def histograms(self) -> dict[str, float]:
        """The histograms hash as ``{field: value}`` (base/metric_buffer.py has the field format)."""
        return {str(k): float(v) for k, v in self.redis.hgetall(self.keys.histograms()).items()}

    def metrics(self) -> tuple[dict[str, float], dict[str, float]]:
        """(counters, gauges) as ``{field: value}``; see ``metric_field`` for the field format."""
        counters = {str(k): float(v) for k, v in self.redis.hgetall(self.keys.counters()).items()}
        gauges = {str(k): float(v) for k, v in self.redis.hgetall(self.keys.gauges()).items()}
        return counters, gauges

    # -- shared caches and reports ------------------------------------------------------------------
    def cached_scopes(self, source: str, instance: str) -> list[str] | None:
        """The scope list cached for (source, instance), or None when none is (or it expired)."""
        raw = self.redis.get(self.keys.scopes(source, instance))
        return list(json.loads(raw)) if raw else None

    def cache_scopes(self, source: str, instance: str, scopes: list[str], *, ttl: int) -> None:
        """Caches ``scopes`` for ``ttl`` seconds, shared by every worker."""
        self.redis.set(self.keys.scopes(source, instance), json.dumps(scopes), ex=ttl)

    def store_health(self, report: Mapping[str, Any]) -> None:
        """Saves the last health report (one key, replaced each time)."""
        self.redis.set(self.keys.health(), json.dumps(report, sort_keys=True))

    def load_health(self) -> dict[str, Any] | None:
        """The last health report saved, or None."""
        raw = self.redis.get(self.keys.health())
        return json.loads(raw) if raw else None

    def ping(self) -> bool:
        return bool(self.redis.ping())
