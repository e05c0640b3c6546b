"""Held documents: what an operator does with a document a ``[[hold]]`` content rule kept back.

A held document's bytes (and its extracted text) are kept under HELD_DIR and its entry (rule, kinds
of personal data found, the Hub metadata it would have been sent with) in the held store; its item
is recorded as done, held, so no run fetches that version again and the scope's cursor moves on
(base/runner.py).

- ``release`` sends it to the Hub through the pipeline's own delivery step, the one a dead-letter
  replay uses (content dedup, ``previous_sha256``, upload, item record, metrics, audit), then
  removes the entry and its bytes. Its item is then recorded as ingested. A second release finds
  no entry.
- ``drop`` deletes the bytes and the entry; the item stays recorded as done (held), so it is not
  fetched again (a ``sync --full`` reads every item again and holds it again).
- The daily cleanup deletes the bytes of entries held longer than HELD_RETENTION_DAYS and marks
  them ``expired`` (base/cleanup.py); an expired entry can only be dropped.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

from base.base_connector import BaseConnector
from base.contract import Item
from base.replay import deliver_kept, rebuild_document, sha256_of_file
from base.state import EXPIRED, HeldDocument, StateStore
from utils.audit import AuditLog
from utils.errors import ItemError
from utils.logging import bind_context, get_logger, mask_text

log = get_logger(__name__)

#: Outcomes of one release.
RELEASED, RESOLVED, REFUSED, FAILED = "released", "resolved", "refused", "failed"


@dataclass
class ReleaseOutcome:
    """What happened to one entry: ``result`` is released (delivered, entry removed), resolved (this
    version is in the Hub already; entry removed), refused (it cannot be released: see ``detail``;
    entry kept) or failed (the Hub refused it; entry kept)."""

    entry: HeldDocument
    result: str
    detail: str
    hub_id: str = ""


def remove_kept_files(entry: HeldDocument) -> None:
    """Deletes the bytes and the extracted text kept for ``entry`` (either may be gone already)."""
    for path in (entry.bytes_path, entry.text_path):
        if path:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass


def _forget(state: StateStore, entry: HeldDocument) -> None:
    """Removes the entry, then its files (a crash between leaves files the cleanup removes)."""
    state.remove_held(entry.connector, entry.id)
    remove_kept_files(entry)


def _refusal(state: StateStore, entry: HeldDocument) -> str | None:
    """Why ``entry`` cannot be released as it is, or None."""
    if entry.state == EXPIRED:
        return (f"its bytes were deleted after the retention period (HELD_RETENTION_DAYS); "
                f"`kmrl-connectors held drop {entry.id}` removes the entry")
    record = state.get_item(entry.connector, entry.scope, entry.source_id)
    if record is None:
        return "its item was deleted at the source since it was held"
    if record.held != entry.id or record.version != entry.version:
        return (f"version {record.version} of its item was delivered or held since; "
                f"`kmrl-connectors held drop {entry.id}` removes this older one")
    meta = entry.metadata.get("hub")
    if not isinstance(meta, dict) or not entry.bytes_path or not os.path.isfile(entry.bytes_path):
        return f"no bytes are kept for it at {entry.bytes_path or '(nowhere)'}"
    sha256, size = sha256_of_file(entry.bytes_path)
    if sha256 != entry.sha256 or size != entry.size:
        return f"the kept bytes at {entry.bytes_path} no longer match their sha256"
    return None


def release(connector: BaseConnector, entry: HeldDocument) -> ReleaseOutcome:
    """Delivers a held document to the Hub with its stored metadata (see the module docstring).

    Raises ConfigError / TransientError (the Hub refused our token, is down): the caller should stop.
    An item-level refusal by the Hub keeps the entry (``failed``)."""
    if entry.connector != connector.name:
        raise ValueError(f"held entry {entry.id} belongs to {entry.connector}, not {connector.name}")
    state = connector.state
    record = state.get_item(entry.connector, entry.scope, entry.source_id)
    if record is not None and not record.held and record.version == entry.version and record.sha256 == entry.sha256:
        # Delivered already: a release that crashed after the Hub took it, before the entry went.
        _forget(state, entry)
        return ReleaseOutcome(entry, RESOLVED, f"version {entry.version} is in the Hub already", record.hub_id)
    refusal = _refusal(state, entry)
    if refusal:
        return ReleaseOutcome(entry, REFUSED, refusal)
    run_id = "release-" + uuid.uuid4().hex[:8]
    meta = dict(entry.metadata["hub"])
    item = Item(source_id=entry.source_id, version=entry.version, filename=entry.filename,
                metadata=dict(entry.metadata.get("source") or {}))
    document = rebuild_document(entry.connector, entry.scope, entry.source_id, entry.version, meta, entry.bytes_path,
                                text_path=entry.text_path)
    with bind_context(connector=connector.name, scope=entry.scope, run_id=run_id, source_id=entry.source_id):
        try:
            # The pipeline's own delivery step, as a dead-letter replay: dedup, upload, record, audit.
            hub_id = deliver_kept(connector, entry.scope, item, document, run_id=run_id)
        except ItemError as exc:
            reason = mask_text(str(exc))
            log.warning("held_release_refused", entry_id=entry.id, reason=reason)
            return ReleaseOutcome(entry, FAILED, reason)
        _forget(state, entry)
        connector.audit.record("released", source=entry.connector, scope=entry.scope, source_id=entry.source_id,
                               sha256=entry.sha256, filename=entry.filename,
                               reason=f"held entry {entry.id} ({entry.rule})", run_id=run_id)
        log.info("held_released", entry_id=entry.id, hub_id=hub_id, sha256=entry.sha256)
    return ReleaseOutcome(entry, RELEASED, f"delivered as Hub document {hub_id}", hub_id)


def drop(state: StateStore, audit: AuditLog, entry: HeldDocument) -> None:
    """Deletes a held document's bytes, text and entry; its item stays recorded as done (not fetched again)."""
    _forget(state, entry)
    audit.record("held_dropped", source=entry.connector, scope=entry.scope, source_id=entry.source_id,
                 sha256=entry.sha256, filename=entry.filename, reason=f"held entry {entry.id} ({entry.rule})")
    log.info("held_dropped", connector=entry.connector, scope=entry.scope, source_id=entry.source_id,
             entry_id=entry.id)
