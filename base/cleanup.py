"""Retention: what the daily cleanup removes, one small function per kind of leftover.

- dead-letter entries older than their retention, with the bytes kept for them;
- kept-bytes files no entry points to any more, and half-written ``.tmp`` files;
- the bytes of held documents held longer than HELD_RETENTION_DAYS (the entry stays, marked
  ``expired``), expired entries another HELD_RETENTION_DAYS later, and held-bytes files no entry
  points to (a crash between keeping the bytes and writing the entry);
- spool files older than their retention (a run never lasts that long, so nothing in use);
- run history older than its retention (``StateStore.trim_history``);
- everything kept for a scope no run has touched within its retention (a scope gone at the source
  or unconfigured: ``StateStore.forget_scope``);
- outbox documents, only when an outbox retention is set (the outbox *is* the Hub otherwise);
- task results that outlived their expiry (results written without a TTL never expire by themselves).

Each function returns how many things it removed and never raises for a file that vanished meanwhile.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from base.held import remove_kept_files
from base.state import EXPIRED, HELD, StateStore
from config.settings import Settings
from utils.logging import get_logger

log = get_logger(__name__)

DAY = 86400  # seconds

#: Retention defaults, in days (each overridable by the variable named beside it).
DEFAULT_DEADLETTER_DAYS = 30  # RETENTION_DEADLETTER_DAYS
DEFAULT_SPOOL_DAYS = 1  # RETENTION_SPOOL_DAYS
DEFAULT_HISTORY_DAYS = 90  # RETENTION_HISTORY_DAYS
DEFAULT_SCOPE_DAYS = 180  # RETENTION_SCOPE_DAYS


def _days(settings: Settings, name: str, default: float | None) -> float | None:
    """A retention in days (more than 0); ``default`` when the variable is unset or empty."""
    if settings.reader.raw(name) is None:
        return default
    return settings.reader.duration(name, 0.0, unit="days", above=0)


@dataclass(frozen=True)
class Retention:
    """How long each leftover is kept, in days; ``outbox_days`` None keeps the outbox forever."""

    deadletter_days: float
    spool_days: float
    history_days: float
    outbox_days: float | None
    scope_days: float = DEFAULT_SCOPE_DAYS

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention:
        """RETENTION_DEADLETTER_DAYS, RETENTION_SPOOL_DAYS, RETENTION_HISTORY_DAYS, OUTBOX_RETENTION_DAYS,
        RETENTION_SCOPE_DAYS."""
        return cls(
            deadletter_days=_days(settings, "RETENTION_DEADLETTER_DAYS", DEFAULT_DEADLETTER_DAYS) or 0.0,
            spool_days=_days(settings, "RETENTION_SPOOL_DAYS", DEFAULT_SPOOL_DAYS) or 0.0,
            history_days=_days(settings, "RETENTION_HISTORY_DAYS", DEFAULT_HISTORY_DAYS) or 0.0,
            outbox_days=_days(settings, "OUTBOX_RETENTION_DAYS", None),
            scope_days=_days(settings, "RETENTION_SCOPE_DAYS", DEFAULT_SCOPE_DAYS) or 0.0,
        )


def _remove_file(path: str) -> bool:
    try:
        os.remove(path)
    except FileNotFoundError:
        return False
    return True


def purge_dead_letters(state: StateStore, *, older_than: float) -> int:
    """Drops dead-letter entries whose last failure is before ``older_than`` (Unix time), with their bytes."""
    removed = 0
    for entry in state.list_dead_letters():
        if entry.last_failed_at >= older_than:
            continue
        if state.remove_dead_letter(entry.connector, entry.id):
            removed += 1
            if entry.bytes_path:
                _remove_file(entry.bytes_path)
            log.info("dead_letter_expired", connector=entry.connector, entry_id=entry.id, source_id=entry.source_id)
    return removed


def purge_abandoned_scopes(state: StateStore, *, older_than: float) -> int:
    """Forgets every scope whose last run ended before ``older_than`` (Unix time); returns how many.

    Every existing scope runs at least once per its source's interval, so one untouched for the
    retention (months) no longer exists or is no longer configured. Its content records stay, so
    a scope that comes back re-reads its items but uploads none the Hub already has."""
    removed = 0
    for connector, scope in state.abandoned_scopes(older_than):
        state.forget_scope(connector, scope)
        log.info("scope_forgotten", connector=connector, scope=scope)
        removed += 1
    return removed


def purge_orphaned_bytes(state: StateStore, deadletter_dir: str, *, older_than: float) -> int:
    """Removes files under ``deadletter_dir`` older than ``older_than`` that no entry keeps
    (an entry dropped by hand, a copy interrupted mid-way)."""
    kept = {os.path.abspath(path) for e in state.list_dead_letters() for path in (e.bytes_path, e.text_path) if path}
    return _purge_unkept(deadletter_dir, kept, older_than=older_than)


def expire_held(state: StateStore, *, older_than: float, now: float) -> int:
    """Deletes the bytes of documents held since before ``older_than`` (Unix time) and marks their
    entries ``expired`` at ``now``; returns how many. The entry stays, so ``held list`` still says
    what was held and that its bytes are gone."""
    expired = 0
    for entry in state.list_held():
        if entry.state != HELD or entry.held_at >= older_than:
            continue
        entry.state, entry.expired_at = EXPIRED, now
        remove_kept_files(entry)  # the bytes and the extracted text: both carry the personal data
        state.update_held(entry)
        expired += 1
        log.info("held_expired", connector=entry.connector, entry_id=entry.id, source_id=entry.source_id)
    return expired


def purge_expired_held(state: StateStore, *, older_than: float) -> int:
    """Removes the entries of held documents that expired before ``older_than`` (Unix time)."""
    removed = 0
    for entry in state.list_held():
        if entry.state == EXPIRED and entry.expired_at < older_than and state.remove_held(entry.connector, entry.id):
            removed += 1
    return removed


def purge_orphaned_held_bytes(state: StateStore, held_dir: str, *, older_than: float) -> int:
    """Removes files under ``held_dir`` older than ``older_than`` that no held entry keeps (a crash
    between keeping a document's bytes and recording its entry, a drop cut short)."""
    kept = {os.path.abspath(path) for e in state.list_held() if e.state == HELD
            for path in (e.bytes_path, e.text_path) if path}
    return _purge_unkept(held_dir, kept, older_than=older_than)


def _purge_unkept(directory: str, kept: set[str], *, older_than: float) -> int:
    """Removes files under ``directory`` last modified before ``older_than`` whose paths are not in ``kept``."""
    if not os.path.isdir(directory):
        return 0
    removed = 0
    for folder, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.abspath(os.path.join(folder, name))
            try:
                old = os.path.getmtime(path) < older_than
            except FileNotFoundError:
                continue
            if old and path not in kept and _remove_file(path):
                removed += 1
    return removed


def purge_files(directory: str, *, older_than: float) -> int:
    """Removes regular files anywhere under ``directory`` last modified before ``older_than``."""
    if not os.path.isdir(directory):
        return 0
    removed = 0
    for folder, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(folder, name)
            try:
                old = os.path.getmtime(path) < older_than
            except FileNotFoundError:
                continue
            if old and _remove_file(path):
                removed += 1
    return removed


def purge_outbox(outbox_dir: str, *, older_than: float) -> int:
    """Removes outbox document folders (named by sha256) stored before ``older_than``."""
    if not os.path.isdir(outbox_dir):
        return 0
    removed = 0
    for name in os.listdir(outbox_dir):
        path = os.path.join(outbox_dir, name)
        if len(name) != 64 or not os.path.isdir(path):
            continue  # tombstones (_deleted), in-flight .tmp- folders and anything else stay
        try:
            old = os.path.getmtime(path) < older_than
        except FileNotFoundError:
            continue
        if old:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def purge_abandoned_outbox_writes(outbox_dir: str, *, older_than: float) -> int:
    """Removes ``.tmp-`` folders of outbox writes cut short by a crash (never renamed into place)."""
    if not os.path.isdir(outbox_dir):
        return 0
    removed = 0
    for entry in os.scandir(outbox_dir):
        if not entry.name.startswith(".tmp-") or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            old = entry.stat(follow_symlinks=False).st_mtime < older_than
        except FileNotFoundError:
            continue
        if old:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed


def purge_stale_results(client: redis.Redis, *, older_than: float, pattern: str = "celery-task-meta-*") -> int:
    """Deletes task results without a TTL whose ``date_done`` is before ``older_than`` (Unix time).

    Results written with a TTL expire in Redis on their own; these are the ones that would not.
    """
    removed = 0
    for key in client.scan_iter(match=pattern, count=500):
        if client.ttl(key) != -1:
            continue
        raw = client.get(key)
        try:
            done = datetime.fromisoformat(json.loads(raw or "{}")["date_done"])
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
        # Celery writes UTC; a naive value (old enable_utc=False writers) is read as UTC too.
        done_at = (done if done.tzinfo else done.replace(tzinfo=UTC)).timestamp()
        if done_at < older_than:
            removed += int(client.delete(key))
    return removed
