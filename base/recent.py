"""The recent-documents record and the per-day totals: what an operator reads to see what arrived.

Every document the pipeline settles leaves one line in ``recent`` (a Redis list, newest first,
capped at ``RECENT_LENGTH``) and is counted in its source's totals for the day (``daily:{source}:
{YYYY-MM-DD}``, the day in IST, a hash that expires ``DAILY_TTL`` after its last write). Both are
written by the state store inside the MULTI/EXEC that records the document (``record_many``,
``forget_item``, ``add_held``, ``add_dead_letter``), so they cost no round trip of their own.

What a caller may rely on:

- an entry is the JSON of ``RecentDocument``: when (Unix time), source, scope, source_id,
  filename, language, department with its confidence and the terms that decided it, the extraction
  outcome (method, pages, chars, error), the ``decision`` (one of ``DECISIONS``), the Hub id, and a
  reason for held and dead-lettered documents;
- the daily hash counts each decision's ``kind`` (one of ``KINDS``) under the field ``kind``, and
  again as ``kind|language=xx`` and ``kind|department=Name``;
- nothing here is needed for delivery: losing these keys loses the record, never a document.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from base.document import Document
from base.keys import KeySchema
from utils.tables import DISPLAY_ZONE

#: How many recent documents are kept (all sources together), newest first.
RECENT_LENGTH = 1000  # entries
#: A day's totals expire this long after their last write: today and a few days back stay readable.
DAILY_TTL = 4 * 86400  # seconds

#: What became of a document. uploaded: its bytes went to the Hub; linked: the Hub had these bytes
#: already (from another item), the item was linked to them; unchanged: a new version with the same
#: bytes as the last one; reprocessed: its enrichment was sent again; held: a content rule kept it
#: back; deleted: it was deleted at the source and the Hub told; dead-lettered: it failed; renamed:
#: renamed or moved at the source, its bytes unchanged: the Hub was sent its new name and place.
UPLOADED, LINKED, UNCHANGED, REPROCESSED = "uploaded", "linked", "unchanged", "reprocessed"
HELD, DELETED, DEAD_LETTERED, RENAMED = "held", "deleted", "dead-lettered", "renamed"
DECISIONS = (UPLOADED, LINKED, UNCHANGED, REPROCESSED, HELD, DELETED, DEAD_LETTERED, RENAMED)

#: The day's totals: new (an item seen for the first time, uploaded or linked), updated (a new
#: version with new bytes), unchanged, reprocessed, deleted, held, failed (dead-lettered), renamed.
KINDS = ("new", "updated", "unchanged", "reprocessed", "deleted", "held", "failed", "renamed")
_KIND_OF = {UNCHANGED: "unchanged", REPROCESSED: "reprocessed", HELD: "held", DELETED: "deleted",
            DEAD_LETTERED: "failed", RENAMED: "renamed"}
#: Extraction fields an entry keeps (the rest of ``Document.extraction`` is for the Hub).
_EXTRACTION_FIELDS = ("method", "pages", "chars", "error", "truncated")


@dataclass
class RecentDocument:
    """One line of the recent-documents record (see the module docstring)."""

    source: str
    scope: str
    source_id: str
    decision: str
    filename: str = ""
    language: str = ""
    department: str = ""
    department_confidence: float = 0.0
    department_terms: list[str] = field(default_factory=list)
    extraction: dict[str, Any] = field(default_factory=dict)
    hub_id: str = ""
    #: True when the item had been delivered before (a new version): counted as ``updated``.
    updated: bool = False
    reason: str = ""
    at: float = field(default_factory=time.time)

    @property
    def kind(self) -> str:
        """The day's total this document counts in (one of ``KINDS``)."""
        if self.decision in _KIND_OF:
            return _KIND_OF[self.decision]
        return "updated" if self.updated else "new"

    def as_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> RecentDocument:
        """An entry as stored; fields this release does not know are ignored."""
        data = json.loads(raw)
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


def from_metadata(meta: Mapping[str, Any], *, source: str, scope: str, source_id: str, decision: str,
                  filename: str = "", hub_id: str = "", updated: bool = False, reason: str = "") -> RecentDocument:
    """The entry of a document from its Hub metadata (``Document.hub_metadata()``, or the copy a
    dead-letter or held entry keeps); empty fields where ``meta`` has none."""
    extraction = meta.get("extraction")
    return RecentDocument(
        source=source, scope=scope, source_id=source_id, decision=decision,
        filename=str(meta.get("filename") or filename), language=str(meta.get("language") or ""),
        department=str(meta.get("department") or ""),
        department_confidence=float(meta.get("department_confidence") or 0.0),
        department_terms=[str(term) for term in meta.get("department_terms") or []],
        extraction={k: extraction[k] for k in _EXTRACTION_FIELDS if k in extraction}
        if isinstance(extraction, Mapping) else {},
        hub_id=hub_id, updated=updated, reason=reason)


def from_document(document: Document, decision: str, *, hub_id: str = "", reason: str = "") -> RecentDocument:
    """The entry of a document the pipeline settled; ``updated`` when it is a new version of an item
    the Hub had (``previous_sha256`` set)."""
    extraction = document.extraction or {}
    return RecentDocument(
        source=document.source, scope=document.scope, source_id=document.source_id, decision=decision,
        filename=document.filename, language=document.language, department=document.department,
        department_confidence=round(document.department_confidence, 3),
        department_terms=list(document.department_terms),
        extraction={k: extraction[k] for k in _EXTRACTION_FIELDS if k in extraction},
        hub_id=hub_id, updated=bool(document.previous_sha256), reason=reason)


def ist_day(unix: float | None = None) -> str:
    """``YYYY-MM-DD`` of ``unix`` (default now) in IST, the day the totals are kept by."""
    return datetime.fromtimestamp(time.time() if unix is None else unix, DISPLAY_ZONE).strftime("%Y-%m-%d")


def write(pipe: Any, keys: KeySchema, entries: Sequence[RecentDocument]) -> None:
    """Queues the writes of ``entries`` on ``pipe`` (a MULTI/EXEC pipeline the caller executes): one
    LPUSH and LTRIM for the record, HINCRBYs and one EXPIRE per (source, day) for the totals."""
    if not entries:
        return
    recent = keys.recent()
    pipe.lpush(recent, *[entry.as_json() for entry in entries])
    pipe.ltrim(recent, 0, RECENT_LENGTH - 1)
    days: set[str] = set()
    for entry in entries:
        daily = keys.daily(entry.source, ist_day(entry.at))
        days.add(daily)
        kind = entry.kind
        pipe.hincrby(daily, kind, 1)
        pipe.hincrby(daily, f"{kind}|language={entry.language or 'unknown'}", 1)
        pipe.hincrby(daily, f"{kind}|department={entry.department or 'unclassified'}", 1)
    for daily in sorted(days):
        pipe.expire(daily, DAILY_TTL)


@dataclass(frozen=True)
class RecentFilter:
    """Which recent documents to list: all of these that are set must match (case-insensitive for
    language and department; ``decision`` one of ``DECISIONS``)."""

    source: str = ""
    language: str = ""
    department: str = ""
    decision: str = ""

    def matches(self, entry: RecentDocument) -> bool:
        return ((not self.source or entry.source == self.source)
                and (not self.language or entry.language.lower() == self.language.lower())
                and (not self.department or entry.department.lower() == self.department.lower())
                and (not self.decision or entry.decision == self.decision))


def read_recent(client: Any, keys: KeySchema, *, where: RecentFilter | None = None,
                limit: int = 50) -> list[RecentDocument]:
    """Up to ``limit`` recent documents matching ``where``, newest first (one LRANGE of the whole
    record, at most ``RECENT_LENGTH`` entries; an entry that does not parse is passed over)."""
    where = where or RecentFilter()
    found: list[RecentDocument] = []
    for raw in client.lrange(keys.recent(), 0, RECENT_LENGTH - 1):
        try:
            entry = RecentDocument.from_json(raw)
        except (ValueError, TypeError):
            continue
        if where.matches(entry):
            found.append(entry)
            if len(found) >= limit:
                break
    return found


@dataclass
class DayTotals:
    """One source's totals for one day: ``counts`` by kind, and by kind then language / department."""

    source: str
    day: str
    counts: dict[str, int] = field(default_factory=dict)
    by_language: dict[str, dict[str, int]] = field(default_factory=dict)
    by_department: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_day_totals(client: Any, keys: KeySchema, sources: Iterable[str], day: str | None = None) -> list[DayTotals]:
    """Each of ``sources``' totals for ``day`` (default today, IST), in one pipelined round trip;
    every kind of ``KINDS`` is in ``counts`` (0 when none)."""
    day = day or ist_day()
    names = list(sources)
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(keys.daily(name, day))
    totals = []
    for name, raw in zip(names, pipe.execute() if names else [], strict=True):
        total = DayTotals(name, day, counts=dict.fromkeys(KINDS, 0))
        for key, value in raw.items():
            field_name = key.decode() if isinstance(key, bytes) else str(key)
            count = int(value)
            kind, _, label = field_name.partition("|")
            if not label:
                total.counts[kind] = count
                continue
            dimension, _, name_value = label.partition("=")
            target = total.by_language if dimension == "language" else total.by_department
            target.setdefault(kind, {})[name_value] = count
        totals.append(total)
    return totals


def extraction_text(extraction: Mapping[str, Any]) -> str:
    """``text-layer, 3 pages, 1204 chars``, ``ocr, 812 chars``, ``none: <error>``; ``-`` when unknown."""
    if not extraction:
        return "-"
    parts = [str(extraction.get("method") or "none")]
    if extraction.get("pages"):
        parts.append(f"{extraction['pages']} pages")
    if extraction.get("chars") is not None and extraction.get("method") not in (None, "none"):
        parts.append(f"{extraction['chars']} chars")
    if extraction.get("truncated"):
        parts.append("truncated")
    text = ", ".join(parts)
    return f"{text}: {extraction['error']}" if extraction.get("error") else text


def department_text(entry: RecentDocument) -> str:
    """``Safety (0.82: fire, drill)``; ``-`` when the document has no department."""
    if not entry.department:
        return "-"
    why = ", ".join(entry.department_terms)
    confidence = f"{entry.department_confidence:.2f}" if entry.department_confidence else ""
    detail = ": ".join(part for part in (confidence, why) if part)
    return f"{entry.department} ({detail})" if detail else entry.department
