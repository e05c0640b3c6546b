"""Dead-letter replay: send a failed document again from the bytes kept for it.

When the pipeline dead-letters a document it already downloaded (the Hub refused it, say), it keeps
the bytes (and the text extracted from them, ``DeadLetter.text_path``) beside the entry together with
the document's Hub metadata. ``replay`` rebuilds that
Document and hands it to the connector's own delivery step, so content dedup, provenance links,
``previous_sha256``, the item record, metrics and the audit line are exactly the pipeline's. On
success the entry, its bytes and its text are removed and the audit log says ``replayed``.

An entry without kept bytes (the source could not be read) cannot be replayed from here: a full
sync of its scope reads the item from the source again (``kmrl-connectors sync SOURCE --full``).
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from base.base_connector import BaseConnector
from base.contract import Item
from base.document import Document
from base.state import DeadLetter
from utils.errors import ItemError
from utils.logging import bind_context, get_logger, mask_text

log = get_logger(__name__)

#: Outcomes of one replay.
REPLAYED, RESOLVED, NO_BYTES, FAILED = "replayed", "resolved", "no_bytes", "failed"


@dataclass
class ReplayOutcome:
    """What happened to one entry: ``result`` is replayed, resolved (a later sync already ingested
    this version; the entry was removed), no_bytes (nothing kept; see ``detail``) or failed."""

    entry: DeadLetter
    result: str
    detail: str
    hub_id: str = ""


def full_sync_hint(entry: DeadLetter) -> str:
    """The command that re-reads an entry's item from its source."""
    return f"kmrl-connectors sync {entry.connector} --scope {entry.scope} --full"


def sha256_of_file(path: str) -> tuple[str, int]:
    """(sha256, size) of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1024 * 1024), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def kept_text(path: str) -> str:
    """The extracted text kept at ``path`` beside a document's bytes; empty when none was kept."""
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return ""


def rebuild_document(connector: str, scope: str, source_id: str, version: str, meta: dict[str, Any], path: str, *,
                     text_path: str = "") -> Document:
    """The Document whose Hub metadata was ``meta``, its content the kept bytes at ``path`` (opened
    here, closed by the Document) and its text the one kept at ``text_path``: what a dead-letter
    replay and a held-document release deliver."""
    return Document(
        source=connector, scope=scope, source_id=source_id,
        version=str(meta.get("version") or version), filename=str(meta.get("filename") or "unnamed"),
        mime_type=str(meta.get("mime_type") or "application/octet-stream"), size=int(meta["size"]),
        sha256=str(meta["sha256"]), title=str(meta.get("title") or ""), language=str(meta.get("language") or "unknown"),
        department=str(meta.get("department") or ""),
        department_confidence=float(meta.get("department_confidence") or 0.0),
        department_terms=list(meta.get("department_terms") or []), author=str(meta.get("author") or ""),
        language_script=str(meta.get("language_script") or ""), content_text=kept_text(text_path),
        extraction=dict(meta["extraction"]) if isinstance(meta.get("extraction"), dict) else None,
        sensitive=dict(meta.get("sensitive") or {}),
        created_at=meta.get("created_at"), modified_at=meta.get("modified_at"), source_url=meta.get("source_url"),
        metadata=dict(meta.get("extra") or {}),
        _content=open(path, "rb"),  # owned and closed by the Document
    )


def deliver_kept(connector: BaseConnector, scope: str, item: Item, document: Document, *, run_id: str) -> str:
    """Delivers a document rebuilt from kept bytes through the pipeline's own delivery step (dedup, upload,
    item record, metrics, audit) and closes it; returns the Hub id now recorded for the item. Raises
    ``ItemError`` when the Hub refuses this document, ConfigError / TransientError when it refuses all."""
    try:
        connector.redeliver(scope, item, document, run_id=run_id)
    finally:
        document.close()
    record = connector.state.get_item(connector.name, scope, item.source_id)
    return record.hub_id if record else ""


def _forget(connector: BaseConnector, entry: DeadLetter) -> None:
    connector.state.remove_dead_letter(entry.connector, entry.id)
    for path in (entry.bytes_path, entry.text_path):
        if not path:
            continue
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
    connector.state.set_gauge("kmrl_dead_letters", {"source": entry.connector},
                              connector.state.dead_letter_count(entry.connector))


def replay(connector: BaseConnector, entry: DeadLetter) -> ReplayOutcome:
    """Replays one entry of ``connector``'s source through its pipeline (see the module docstring).

    Raises ConfigError / TransientError (the Hub refused our token, is down): every other entry
    would fail the same way, so the caller should stop. An item-level refusal keeps the entry.
    """
    if entry.connector != connector.name:
        raise ValueError(f"entry {entry.id} belongs to {entry.connector}, not {connector.name}")
    state = connector.state
    known = state.get_item(entry.connector, entry.scope, entry.source_id)
    if known and entry.version and known.version == entry.version:
        _forget(connector, entry)
        return ReplayOutcome(entry, RESOLVED, f"version {entry.version} was ingested since", known.hub_id)
    meta = entry.metadata.get("hub") if isinstance(entry.metadata.get("hub"), dict) else None
    if not meta or not entry.bytes_path or not os.path.isfile(entry.bytes_path):
        return ReplayOutcome(entry, NO_BYTES, f"no bytes were kept for it; `{full_sync_hint(entry)}` "
                                              "reads it from the source again")
    sha256, size = sha256_of_file(entry.bytes_path)
    if sha256 != meta.get("sha256") or size != meta.get("size"):
        return ReplayOutcome(entry, FAILED, f"the kept bytes at {entry.bytes_path} no longer match their sha256; "
                                            f"`{full_sync_hint(entry)}` reads it from the source again")
    run_id = "replay-" + uuid.uuid4().hex[:8]
    item = Item(source_id=entry.source_id, version=str(meta.get("version") or entry.version),
                filename=str(meta.get("filename") or ""), metadata=dict(entry.metadata.get("source") or {}))
    document = rebuild_document(entry.connector, entry.scope, entry.source_id, entry.version, meta, entry.bytes_path,
                                text_path=entry.text_path)
    with bind_context(connector=connector.name, scope=entry.scope, run_id=run_id,
                      source_id=entry.source_id):
        try:
            hub_id = deliver_kept(connector, entry.scope, item, document, run_id=run_id)
        except ItemError as exc:
            reason = mask_text(str(exc))
            log.warning("dead_letter_replay_refused", entry_id=entry.id, reason=reason)
            return ReplayOutcome(entry, FAILED, reason)
        _forget(connector, entry)
        connector.audit.record("replayed", source=entry.connector, scope=entry.scope, source_id=entry.source_id,
                               sha256=sha256, filename=document.filename, department=document.department,
                               reason=f"dead letter {entry.id} ({entry.reason})", run_id=run_id)
        log.info("dead_letter_replayed", entry_id=entry.id, hub_id=hub_id, sha256=sha256,
                 waited_seconds=round(time.time() - entry.first_failed_at, 1))
    return ReplayOutcome(entry, REPLAYED, f"delivered as Hub document {hub_id}", hub_id)
