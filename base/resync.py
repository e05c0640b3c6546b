"""What a full re-enumeration of a scope (a *resync*) has listed so far, kept in Redis, so that the
items it did not list can be reported as deleted once it has listed everything.

A source whose change feed can expire (Graph's delta answers 410) lists the whole scope again from
the start. An item deleted while the feed was expired never shows up in that listing as a deletion:
it is simply not in it. Comparing the scope's item records (``item:{connector}:{scope}``) with what
the listing held finds it, and the comparison is correct only once the listing is complete: a
listing cut short (its time limit, a crash, an error) lacks items that still exist.

Why the listed ids live in Redis and not in the process:

- a resync of a large library spans runs (each run stops at its deadline or dies, and the next one
  resumes from the page the cursor saved), and the comparison needs every page read since the
  resync began, so the ids must outlive the process that read them;
- in memory they would grow with the library; here the process holds one page's ids at a time.

The ids of a page are written (one HSET) *before* the page's changes are handed to the pipeline, so
this record is never behind the cursor; a page read again after a crash writes the same ids again.

Each resync has an id, kept in the hash (field ``""``) and in the connector's cursor. A cursor that
names a resync this hash does not hold (Redis lost it, or a later resync replaced it) cannot be
compared safely: the connector then starts the enumeration again under a new resync (the pipeline's
dedup keeps that from downloading anything twice). The hash is dropped when a new resync begins,
when the scope is forgotten, and by the first run that starts from a cursor naming no resync: that
cursor was saved, so the resync that wrote the hash is over. Dropping it when the listing ends would
be too early: the pipeline may still be delivering the last page, and a crash then resumes the
resync from its last page, which needs the ids again.

The comparison (``unlisted``) walks the item records with HSCAN, ``COMPARE_BATCH`` at a time, and
asks the hash about each batch with one HMGET: memory bounded by the batch whatever the scope's
size, and two round trips per batch.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from typing import Any

from base.state import StateStore

#: Item records compared per HSCAN step (and asked about in one HMGET).
COMPARE_BATCH = 1000
#: The hash field holding the resync's id (a source_id is never empty).
_RESYNC_ID = ""


class ResyncLedger:
    """The ids listed by the resync in progress of one (connector, scope); see the module docstring.

    Only the holder of the scope's lease writes it, as for every other per-scope key.
    """

    def __init__(self, state: StateStore, connector: str, scope: str) -> None:
        self._state = state
        self._connector = connector
        self._scope = scope
        self.key = state.keys.resync(connector, scope)

    def begin(self) -> str:
        """Starts a new resync (forgetting any earlier one's ids) and returns its id."""
        resync_id = secrets.token_hex(8)
        pipe = self._state.redis.pipeline(transaction=True)
        pipe.delete(self.key)
        pipe.hset(self.key, _RESYNC_ID, resync_id)
        pipe.execute()
        return resync_id

    def holds(self, resync_id: str) -> bool:
        """True when the ids kept here are those of resync ``resync_id`` (and so complete up to the
        cursor that names it)."""
        return bool(resync_id) and self._state.redis.hget(self.key, _RESYNC_ID) == resync_id

    def add(self, source_ids: Iterable[str]) -> None:
        """Records ``source_ids`` as listed by the resync (one round trip; none when empty)."""
        listed: dict[Any, Any] = {source_id: "" for source_id in source_ids if source_id}
        if listed:
            self._state.redis.hset(self.key, mapping=listed)

    def unlisted(self) -> Iterator[str]:
        """The source_ids recorded as ingested in the scope that the resync did not list, lazily.

        Call it only once the listing is complete. An id may (rarely, when Redis rehashes the item
        hash during the walk) come twice; the pipeline's deletion of an item no longer recorded is
        a no-op. Records removed while the walk goes on (the pipeline applying the deletions) are
        fine: HSCAN returns every field present from its start to its end."""
        redis = self._state.redis
        items = self._state.keys.items(self._connector, self._scope)
        batch: list[str] = []
        for source_id, _ in redis.hscan_iter(items, count=COMPARE_BATCH):
            batch.append(str(source_id))
            if len(batch) >= COMPARE_BATCH:
                yield from self._not_listed(batch)
                batch = []
        if batch:
            yield from self._not_listed(batch)

    def _not_listed(self, batch: list[str]) -> list[str]:
        listed = self._state.redis.hmget(self.key, batch)
        return [source_id for source_id, seen in zip(batch, listed, strict=True) if seen is None]

    def drop(self) -> None:
        """Forgets the ids (the resync is over or abandoned)."""
        self._state.redis.delete(self.key)
