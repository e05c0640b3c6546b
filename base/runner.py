"""The runner: the one pipeline every connector's items go through (DESIGN.md "The one pipeline").

For each scope:

1. take the scope's lease (skip the scope when another worker holds it); renew it as the run goes;
2. read the cursor; for each change: skip early when (source_id, version) was already ingested;
   apply the content rules and size limits; stream the bytes into a spool file while hashing;
   read its text on the process pool (base/extraction); enrich (language, department, personal
   data); a ``[[hold]]`` content rule may hold the document back here instead (its bytes kept, an
   entry in the held store, the item done);
3. content dedup: bytes already in the Hub are linked as provenance instead of uploaded again;
4. upload (``Idempotency-Key: sha256``); on acknowledgement record the item and its hash, then
   ``acknowledge(item)``;
5. move the cursor to the last safe point every item before which is acknowledged, skipped or
   dead-lettered, saving it as the run goes;
6. write the scope's status, history and metrics; release the lease.

One bad item is dead-lettered and the run goes on; a config error stops the run and marks the
scope; a transient error ends the run (the next attempt resumes from the saved cursor).

The runner knows no task queue. Whoever runs it gives it a ``deadline`` (a ``time.monotonic()``
value: the run stops at its next safe point after it, as ``partial``) and ``time_up``, the exception
types that mean the caller's own time limit struck (the Celery task passes its
``SoftTimeLimitExceeded``): one of those ends the run at once as ``partial``, keeping what is done.
"""

from __future__ import annotations

import contextvars
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

import redis
import requests

from base.contract import Change, Checkpoint, Item, ItemFailure, ScopeState
from base.document import Document, flat_hints, sanitize_filename, spool_chunks
from base.enrichment.steps import enrich
from base.extraction.step import extract_document, reads_on_pool
from base.hub_client import Hub, HubDocumentMissing, HubRefused
from base.metric_buffer import DOCUMENTS_CLASSIFIED, HUB_UPLOAD, RUN_DURATION, MetricBuffer
from base.pool import pool_for
from base.recent import DELETED, LINKED, RENAMED, REPROCESSED, UNCHANGED, UPLOADED, RecentDocument, from_document
from base.refusals import RefusalStreak
from base.relocation import location_digest, metadata_update, relocated
from base.state import DeadLetter, HeldDocument, ItemRecord, StateStore
from config.settings import Settings
from utils.audit import AuditLog
from utils.errors import (
    ConfigError,
    ItemError,
    ItemTooLarge,
    LeaseLostError,
    SpoolFullError,
    ThrottledError,
    TransientError,
)
from utils.logging import bind_context, get_logger, mask_text

log = get_logger(__name__)

#: Exception types that mean the caller's time limit struck (e.g. Celery's ``SoftTimeLimitExceeded``).
TimeUp = tuple[type[BaseException], ...]


@dataclass(frozen=True)
class Reprocess:
    """A run that reads already-ingested documents again and sends the Hub their new enrichment
    (``Hub.update_enrichment``) instead of skipping them: ``kmrl-connectors reprocess``.

    since / until: only items whose source date (modified, else created) falls in [since, until)
    are read again; an item without a date always is. New items met on the way are ingested as in
    any sync."""

    since: datetime | None = None
    until: datetime | None = None

    def covers(self, item: Item) -> bool:
        """Whether ``item`` falls in the dates (always, when none are set or it has no date)."""
        if self.since is None and self.until is None:
            return True
        stamp = item.modified_at or item.created_at
        if not stamp:
            return True
        try:
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            return True
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return (self.since is None or when >= self.since) and (self.until is None or when < self.until)

#: The counters every run reports, per scope and in total.
COUNT_FIELDS = ("fetched", "new", "duplicate", "skipped", "failed", "dead_lettered", "deleted", "reprocessed",
                "held", "renamed")
#: Free space in the spool folder is looked at again after every this many bytes of one download.
SPOOL_RECHECK_BYTES = 64 * 1024 * 1024  # bytes
#: Changes read ahead from the source are cut into windows of at most ``ACK_BATCH_SIZE`` changes and
#: this many bytes (by the sizes the source announces): one window's versions are looked up in one
#: round trip, and the documents read for it wait, spooled, to be delivered together.
WINDOW_BYTES = 16 * 1024 * 1024  # bytes
#: The run's deadline is looked at after every this many bytes of one download. Connectors read in
#: chunks of about this size, so the pipeline could not look more often anyway.
DEADLINE_CHECK_BYTES = 1024 * 1024  # bytes


class _DeadlineReached(Exception):
    """The run's deadline passed while an item was streaming: the run stops as ``partial`` at once,
    the item neither recorded nor dead-lettered, the cursor not past it."""


#: Failures of one item that end the whole run: the next item would fail the same way, or the run
#: must stop now.
_RUN_LEVEL: TimeUp = (ConfigError, TransientError, LeaseLostError, requests.RequestException, redis.RedisError,
                      ImportError, _DeadlineReached)


@dataclass
class Decision:
    """What a dry run would do with one change."""

    action: str  # ingest, duplicate, skip, delete, fail
    source_id: str
    filename: str = ""
    reason: str = ""


@dataclass
class ScopeSummary:
    """What one run of one scope did. ``state``: ok, partial (time budget), locked (another worker
    holds the scope), throttled, paused (spool disk full), auth_failed, config_error, error
    (transient), lease_lost."""

    connector: str
    scope: str
    run_id: str
    state: ScopeState = ScopeState.RUNNING
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_FIELDS, 0))
    bytes: int = 0
    seconds: float = 0.0
    error: str = ""
    started_at: float = field(default_factory=time.time)
    ended_at: float = 0.0
    decisions: list[Decision] = field(default_factory=list)
    #: The name a person reads for the scope (``BaseConnector.scope_label``); ``scope`` when it has none.
    scope_name: str = ""

    @property
    def label(self) -> str:
        """``scope_name`` when the scope has one other than its id, else the scope."""
        return self.scope_name or self.scope

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.decisions:
            data.pop("decisions")
        return data


@dataclass
class SyncSummary:
    """Every scope's summary for one ``sync_documents`` call, with totals."""

    connector: str
    scopes: list[ScopeSummary] = field(default_factory=list)

    @property
    def totals(self) -> dict[str, int]:
        return {k: sum(s.counts[k] for s in self.scopes) for k in COUNT_FIELDS}

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.scopes)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.scopes)

    @property
    def state(self) -> str:
        """The worst scope state (ok when every scope is ok or had nothing to do)."""
        return ScopeState.worst(s.state for s in self.scopes)

    def as_dict(self) -> dict[str, Any]:
        return {"connector": self.connector, "state": self.state, "totals": self.totals, "bytes": self.bytes,
                "seconds": round(self.seconds, 3), "scopes": [s.as_dict() for s in self.scopes]}


@dataclass
class _Pending:
    """A document the Hub has taken but whose acknowledgement waits for the batch's flush."""

    scope: str
    item: Item
    record: ItemRecord
    outcome: str
    size: int
    #: Its line in the recent-documents record, written with the batch.
    recent: RecentDocument | None = None


@dataclass
class _Queued:
    """A document read and spooled, waiting in ``_Run.queue`` to be delivered with its group."""

    item: Item
    document: Document
    known: ItemRecord | None
    hints: Mapping[str, str] = field(default_factory=dict)
    #: The document's text being read on the pool, then its enrichment (None: done before it was queued).
    prepared: Future[None] | None = None
    #: Its upload, sent on the run's upload threads (its value None: a content rule holds it instead).
    upload: Future[str | None] | None = None
    #: The document was handed on (a refusal waiting in ``run.refusals``): not closed with the queue.
    taken: bool = False


@dataclass
class _QueuedCursor:
    """A cursor move that waits in ``_Run.queue`` behind documents not yet delivered."""

    cursor: Any
    checkpoint: bool


@dataclass
class _Flight:
    """A group sent to the Hub: its entries in source order (uploads running on the run's threads)
    and the Hub ids of its contents as they were looked up."""

    entries: list[_Queued | _QueuedCursor]
    contents: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.documents = [entry for entry in self.entries if isinstance(entry, _Queued)]
        self.source_ids = {queued.item.source_id for queued in self.documents}
        self.sha256s = {queued.document.sha256 for queued in self.documents}

    def sent(self) -> bool:
        """Whether every upload of the group has its answer (and every text its reading): settling it
        now waits for nothing."""
        return all((q.upload is None or q.upload.done()) and (q.prepared is None or q.prepared.done())
                   for q in self.documents)


class _Run:
    """Mutable state of one scope run (kept off the connector so runs never share it).

    With ``batch_size`` > 1, documents the Hub has taken wait in ``pending`` until the batch is
    flushed (one Hub flush, one Redis round trip); every cursor advance waits with them, in order,
    so the cursor never passes a document that is not yet acknowledged.
    """

    def __init__(self, summary: ScopeSummary, *, dry_run: bool, full: bool, batch_size: int = 1,
                 tracker: _CursorTracker | None = None, deadline: float | None = None, time_up: TimeUp = (),
                 failing: Mapping[str, Any] | None = None, refusals_to_stop: int = 0,
                 reprocess: Reprocess | None = None) -> None:
        self.summary = summary
        #: Set for a reprocess run: known documents are read again and their enrichment updated.
        self.reprocess = reprocess
        self.dry_run = dry_run
        self.full = full
        self.batch_size = batch_size
        self.tracker = tracker
        self.deadline = deadline
        self.time_up = time_up
        self.pending: list[_Pending] = []
        self.deferred_cursors: list[tuple[Any, bool]] = []
        #: source_id -> entry of the items whose downloads failed transiently in earlier runs.
        self.failing: dict[str, Any] = dict(failing or {})
        #: Items read from the source in this run (proof that it serves files).
        self.reads_ok = 0
        #: Items due to be dead-lettered once the source proves it serves other items: (item, reason).
        self.held: list[tuple[Item, str]] = []
        #: Cursor moves that wait behind ``held`` items.
        self.held_cursors: list[tuple[Any, bool]] = []
        #: Documents the Hub refused in a row with one answer (base/refusals.py).
        self.refusals = RefusalStreak(refusals_to_stop)
        #: The current window's item records, looked up together (None: never recorded), kept up to
        #: date as the run settles items; an id not in it is looked up on its own.
        self.known: dict[str, ItemRecord | None] = {}
        #: Documents read and waiting to be delivered together, with the cursor moves behind them, in
        #: source order (``_Queued`` and ``_QueuedCursor``).
        self.queue: list[_Queued | _QueuedCursor] = []
        self.queued_ids: set[str] = set()
        self.queued_shas: set[str] = set()
        self.queued_bytes = 0
        #: The group sent to the Hub and not yet settled (at most one: ``Runner._launch``).
        self.flight: _Flight | None = None
        #: Set while a flight is settled: cursor moves then are its own, made at once.
        self.landing = False
        #: Settling a flight failed (a run-level answer of the Hub, or of Redis while recording it).
        self.hub_failed = False
        #: What ended the reading of the source, when something did.
        self.failure: BaseException | None = None
        #: Hub ids by sha256 for the documents being settled (one lookup for the group).
        self.contents: dict[str, str | None] = {}
        #: Free space in the spool folder was checked for the current window.
        self.space_checked = False
        #: Threads that send uploads while the run reads on (None: uploads are sent one at a time).
        self.uploads: ThreadPoolExecutor | None = None
        #: Threads that wait for the pool's reading of documents' text (one per pool child), so the run
        #: reads on behind a slow one (OCR); created when the first such document comes.
        self.preparing: ThreadPoolExecutor | None = None

    def count(self, name: str, n: int = 1) -> None:
        self.summary.counts[name] += n


class Source(Protocol):
    """What the runner needs of a connector (``BaseConnector`` is one)."""

    name: ClassVar[str]
    #: Largest document accepted, in bytes (None: no limit).
    max_document_bytes: int | None

    def list_changes(self, scope: str, cursor: Any) -> Iterator[Change]: ...

    def acknowledge(self, item: Item) -> None: ...

    def skip_reason(self, filename: str, mime_type: str, size: int | None,
                    hints: Mapping[str, str]) -> str | None: ...

    def hold_reason(self, document: Document, hints: Mapping[str, str]) -> str | None: ...


class Runner:
    """Runs ``source``'s changes through the pipeline, one scope at a time.

    source: the connector whose ``list_changes`` feeds the runs.
    state: the Redis state store (leases, cursors, item records, status, metrics, dead letters).
    hub: where documents go.
    settings: lease TTL, batch sizes, spool folder and guard, dead-letter folder, transient-run limit.
    audit: the per-document audit log.
    """

    def __init__(self, source: Source, *, state: StateStore, hub: Hub, settings: Settings, audit: AuditLog) -> None:
        self.source = source
        self.state = state
        self.hub = hub
        self.settings = settings
        self.audit = audit
        #: Upload latencies and classified-document counts, written with the next batch record or at run end.
        self.metrics = MetricBuffer()

    def redeliver(self, scope: str, item: Item, document: Document, *, run_id: str) -> ScopeSummary:
        """Delivers an already-built Document through the pipeline's own delivery step (content dedup,
        upload, item record, metrics, audit), outside a sync run: what a dead-letter replay needs.
        Raises ItemError when the Hub refuses it again, ConfigError / TransientError as a run would."""
        run = _Run(ScopeSummary(self.source.name, scope, run_id), dry_run=False, full=False)
        self.deliver(run, scope, item, document, self.state.get_item(self.source.name, scope, item.source_id))
        _best_effort(lambda: self.state.add_increments(self.metrics.drain()), "metrics")
        return run.summary

    def scopeless_failure(self, exc: BaseException) -> ScopeSummary:
        """The summary of a run that failed before any scope ran (connect() or scopes() failed, or
        Redis was unreachable when a scope started), recorded in the ``*`` status; never raises.

        Classified errors end it in their state; anything else (a Redis error, a bug) as ``error``."""
        if isinstance(exc, (ConfigError, TransientError)):
            state, error = ScopeState.for_error(exc), mask_text(str(exc))
        else:
            state, error = ScopeState.ERROR, mask_text(f"{type(exc).__name__}: {exc}")
        failed = ScopeSummary(self.source.name, "*", uuid.uuid4().hex[:12], state=state, error=error,
                              ended_at=time.time())
        self.record_connector_error(failed)
        return failed

    def run_scope(self, scope: str, *, dry_run: bool = False, full: bool = False, deadline: float | None = None,
                  time_up: TimeUp = (), reprocess: Reprocess | None = None) -> ScopeSummary:
        """Runs the pipeline for one scope under its lease; returns what happened (never raises for a
        classified failure, which ends up in the summary's state; ``time_up`` ends it as ``partial``).

        dry_run: decide only (download, upload and change nothing). full: ignore the stored cursor.
        deadline: ``time.monotonic()`` value after which the run stops at its next safe point.
        reprocess: read already-ingested documents again (from the start, as ``full``) and update their
        enrichment in the Hub (see ``Reprocess``).
        """
        full = full or reprocess is not None
        summary = ScopeSummary(self.source.name, scope, uuid.uuid4().hex[:12])
        lease = self.state.lease(self.source.name, scope, ttl=self.settings.lock_ttl)
        if not lease.acquire():
            summary.state = ScopeState.LOCKED
            summary.ended_at = time.time()
            self.state.incr_metric("kmrl_lock_skips_total", {"source": self.source.name})
            log.info("scope_locked", connector=self.source.name, scope=scope)
            return summary
        started = time.monotonic()
        with bind_context(connector=self.source.name, scope=scope, run_id=summary.run_id):
            log.info("run_started", dry_run=dry_run, full=full)
            if not dry_run:
                self.state.update_status(self.source.name, scope, {"state": ScopeState.RUNNING,
                                                                   "run_id": summary.run_id,
                                                                   "last_run_start": summary.started_at})
            start_cursor = None if full else self.state.get_cursor(self.source.name, scope)
            tracker = _CursorTracker(self.state, self.source.name, scope, start_cursor,
                                     save_every=self.settings.cursor_save_every, enabled=not dry_run)
            run = _Run(summary, dry_run=dry_run, full=full, tracker=tracker, deadline=deadline, time_up=time_up,
                       batch_size=1 if dry_run else self.settings.ack_batch_size,
                       refusals_to_stop=self.settings.hub_refusals_to_stop, reprocess=reprocess)
            run.uploads = self._upload_threads(dry_run)
            self.audit.begin_batch()
            try:
                if not dry_run:
                    run.failing = self.state.item_failures(self.source.name, scope)
                try:
                    self._consume(run, scope, start_cursor, lease, deadline)
                except BaseException as exc:
                    run.failure = exc  # what is read already may still be delivered (_deliver_after_failure)
                    raise
                self._commit(run)
                if summary.state == ScopeState.RUNNING:
                    summary.state = ScopeState.OK
            except time_up:
                # The caller's time limit (Celery's soft limit): stop at once, keep what is done (the
                # documents read already are delivered below: at most two batches, bounded in bytes,
                # well inside the hard limit's margin); the next tick resumes.
                summary.state, summary.error = ScopeState.PARTIAL, "stopped by the task's soft time limit"
            except _DeadlineReached as exc:
                summary.state = ScopeState.PARTIAL
                log.info("run_time_budget_reached", during="download", detail=str(exc))
            except LeaseLostError as exc:
                summary.state, summary.error = ScopeState.LEASE_LOST, str(exc)
                tracker.enabled = False  # the new holder owns the cursor now
            except ThrottledError as exc:
                summary.state, summary.error = ScopeState.THROTTLED, mask_text(str(exc))
                self.state.update_status(self.source.name, scope, {"throttled_until": exc.retry_at})
            except SpoolFullError as exc:
                summary.state, summary.error = ScopeState.PAUSED, str(exc)
            except (ConfigError, TransientError) as exc:
                summary.state, summary.error = ScopeState.for_error(exc), mask_text(str(exc))
            except (requests.RequestException, redis.RedisError) as exc:
                summary.state, summary.error = ScopeState.ERROR, mask_text(f"{type(exc).__name__}: {exc}")
            except Exception as exc:
                # Anything not classified above (a bug, a parser's RecursionError on hostile JSON)
                # still ends the run: state error with its message, status written, lease released;
                # the scheduler retries an error like a transient one.
                log.exception("run_unexpected_error")
                summary.state, summary.error = ScopeState.ERROR, mask_text(f"{type(exc).__name__}: {exc}")
            finally:
                summary.seconds = time.monotonic() - started
                summary.ended_at = time.time()
                summary.scope_name = _readable_name(self.source, scope)
                # Each write is attempted even when Redis is down for the others; what fails is
                # redone by the next run (the cursor only ever lags, never runs ahead).
                self._deliver_after_failure(run, scope)
                self._abandon_queue(run)
                for threads in (run.uploads, run.preparing):
                    if threads is not None:
                        threads.shutdown(wait=True)
                _best_effort(lambda: self._commit(run), "batch")
                _best_effort(tracker.save, "cursor")
                _best_effort(self.audit.end_batch, "audit")
                if not dry_run:
                    _best_effort(lambda: self._finish_status(summary), "status")
                _best_effort(lease.release, "lease")
            log_method = log.info if ScopeState(summary.state).succeeded else log.warning
            log_method("run_finished", state=summary.state, error=summary.error or None,
                       seconds=round(summary.seconds, 3), bytes=summary.bytes, **summary.counts)
        return summary

    def _consume(self, run: _Run, scope: str, cursor: Any, lease: Any, deadline: float | None) -> None:
        changes = self.source.list_changes(scope, cursor)
        try:
            for window in _windows(changes, max(1, self.settings.ack_batch_size), WINDOW_BYTES, run.time_up):
                self._look_up_window(run, scope, window)
                for change in window:
                    lease.keep_alive()
                    if isinstance(change, Checkpoint):
                        self._advance(run, change.cursor, checkpoint=True)
                    elif isinstance(change, ItemFailure):
                        run.count("fetched")
                        self._dead_letter(run, scope, change.source_id, change.reason, version=change.version,
                                          metadata=change.metadata)
                        self._advance(run, change.cursor_after)
                    else:
                        with bind_context(source_id=change.source_id):
                            self._handle_item(run, scope, change)
                        self._advance(run, change.cursor_after)
                    if run.flight is not None and run.flight.sent():
                        self._land(run, scope)  # recorded as soon as the Hub has it all, not a group later
                    # After every change, Checkpoints included: a feed of empty pages (or a page link that
                    # loops) must not outlive the run's budget.
                    if deadline is not None and time.monotonic() >= deadline:
                        self._deliver_queue(run, scope)  # read already: delivered, not read again next run
                        run.summary.state = ScopeState.PARTIAL
                        log.info("run_time_budget_reached", held=len(run.held) or None)
                        return
            self._deliver_queue(run, scope)
            self._refusals_end(run, scope)  # too few in a row to tell: refusals of their own
            if run.held:
                self._unconfirmed(run)
        finally:
            run.refusals.abandon()  # the run ended before they were decided: the cursor stays before them
            close = getattr(changes, "close", None)
            if callable(close):
                close()

    def _look_up_window(self, run: _Run, scope: str, window: list[Change]) -> None:
        """Looks up the records of the window's items in one round trip, and lets the next download
        check the spool folder's free space again."""
        run.space_checked = False
        ids = [change.source_id for change in window if isinstance(change, Item)]
        run.known = self.state.get_items(self.source.name, scope, ids) if ids else {}

    def _known(self, run: _Run, scope: str, source_id: str) -> ItemRecord | None:
        """The item's record: from the window's lookup, else from Redis."""
        if source_id in run.known:
            return run.known[source_id]
        return self.state.get_item(self.source.name, scope, source_id)

    def _upload_threads(self, dry_run: bool) -> ThreadPoolExecutor | None:
        """Threads for the Hub's uploads in flight, when the Hub takes more than one at a time."""
        in_flight = int(getattr(self.hub, "uploads_in_flight", 1) or 1)
        if dry_run or in_flight <= 1:
            return None
        return ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix=f"hub-upload-{self.source.name}")

    def _enqueue(self, run: _Run, scope: str, queued: _Queued) -> None:
        """Puts a read document in the queue. A queue that already holds these bytes is delivered
        first (the second copy is then linked to the first); a queue that reaches its bounds
        (ACK_BATCH_SIZE documents, WINDOW_BYTES) is sent to the Hub and the run reads on."""
        item, document = queued.item, queued.document
        if document.sha256 in run.queued_shas or (run.flight is not None and document.sha256 in run.flight.sha256s):
            try:
                self._deliver_queue(run, scope)
            except BaseException:
                _close_queued([queued])
                raise
        run.queue.append(queued)
        run.queued_ids.add(item.source_id)
        run.queued_shas.add(document.sha256)
        run.queued_bytes += document.size
        if run.queued_bytes >= WINDOW_BYTES or len(run.queued_ids) >= max(1, run.batch_size):
            self._launch(run)

    def _deliver_queue(self, run: _Run, scope: str) -> None:
        """Delivers everything read so far, in source order: the group in flight, then the queue."""
        self._launch(run)
        self._land(run, scope)

    def _launch(self, run: _Run) -> None:
        """Sends the queue to the Hub as the run's one group in flight, once the group before it is
        settled and recorded (so what the Hub has and the state does not know is never more than
        one group, at most ACK_BATCH_SIZE documents: the bound on repeats after a crash). Its
        contents are looked up in one round trip; with upload threads its uploads start now and
        run while the run reads the next group."""
        if not run.queue:
            return
        self._land(run, run.summary.scope)
        entries = run.queue
        run.queue, run.queued_ids, run.queued_shas, run.queued_bytes = [], set(), set(), 0
        flight = _Flight(entries)
        run.flight = flight
        waiting = flight.documents
        # Bytes already recorded under the item need no look-up. A group holds each sha256 once
        # (``_enqueue``), and the group before it is recorded, so nothing in the batch shares them.
        looked_up = [q.document.sha256 for q in waiting if not (q.known and q.known.sha256 == q.document.sha256)]
        flight.contents = self.state.get_contents(looked_up)
        if run.uploads is None:
            self._land(run, run.summary.scope)  # nothing runs meanwhile: settled (and sent) now
            return
        for queued in waiting:
            sha256 = queued.document.sha256
            if sha256 in flight.contents and not flight.contents[sha256]:
                if queued.known:
                    queued.document.previous_sha256 = queued.known.sha256  # sent with the upload
                queued.upload = run.uploads.submit(contextvars.copy_context().run, self._send_when_ready, queued)

    def _land(self, run: _Run, scope: str) -> None:
        """Settles the group in flight in source order (each document's outcome taken as ``deliver``
        decides it, the cursor moves between them made), then records it with the cursor."""
        flight = run.flight
        if flight is None:
            return
        run.flight = None
        run.landing, run.contents = True, flight.contents
        at = 0
        try:
            for at, entry in enumerate(flight.entries):  # noqa: B007 - the except clause reads where it stopped
                if isinstance(entry, _QueuedCursor):
                    self._advance(run, entry.cursor, checkpoint=entry.checkpoint)
                    continue
                with bind_context(source_id=entry.item.source_id):
                    self._deliver_queued(run, scope, entry)
            self._commit(run)
        except BaseException:
            run.hub_failed = True
            try:
                rest = [e for e in flight.entries[at + 1:] if isinstance(e, _Queued)]
                self._keep_acknowledged(run, scope, rest)
            except Exception as exc:  # noqa: BLE001 - the failure being raised matters more; they are sent again
                log.warning("acknowledged_uploads_not_recorded", error=mask_text(f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            run.landing, run.contents = False, {}
            _close_queued(flight.documents)

    def _send_when_ready(self, queued: _Queued) -> str | None:
        """An upload thread's task: waits for the document's text and enrichment, then uploads it;
        None, sending nothing, when a content rule holds it (decided again, alike, by ``_land``)."""
        if queued.prepared is not None:
            queued.prepared.result()
            if self.source.hold_reason(queued.document, queued.hints):
                return None
        return self._upload(queued.document)

    def _upload(self, document: Document) -> str:
        """``hub.upload``, its latency observed (answers that raise are not: they are counted as failures)."""
        started = time.perf_counter()
        hub_id = self.hub.upload(document)
        self.metrics.observe(HUB_UPLOAD, {"source": self.source.name}, time.perf_counter() - started)
        return hub_id

    def _deliver_queued(self, run: _Run, scope: str, queued: _Queued) -> None:
        """Delivers one queued document, once its text is read and it is enriched, or holds it when a
        content rule says so; its failures are handled as ``_handle_item`` handles them."""
        document = queued.document
        try:
            if queued.prepared is not None:
                queued.prepared.result()
                rule = self.source.hold_reason(document, queued.hints)
                if rule:
                    if queued.upload is not None:
                        queued.upload.result()  # decided alike there: nothing sent; its thread is done with it
                    self._hold(run, scope, queued.item, document, rule, queued.known)
                    return
            self.deliver(run, scope, queued.item, document, queued.known, upload=queued.upload)
        except Exception as exc:  # noqa: BLE001 - classified, and run-level ones raised again, by _item_failed
            queued.taken = self._item_failed(run, scope, queued.item, document, exc)

    def _keep_acknowledged(self, run: _Run, scope: str, rest: list[_Queued]) -> None:
        """The group's delivery failed at a document that ends the run: the uploads behind it not yet
        started are cancelled, and those the Hub acknowledged are recorded with the batch (so the
        next run does not send them again); the cursor moves behind them are not made."""
        for queued in rest:
            if queued.upload is not None:
                queued.upload.cancel()
        for queued in rest:
            if queued.upload is None or queued.upload.cancelled():
                continue
            try:
                hub_id = queued.upload.result()
            except Exception:  # noqa: BLE001, S112 - not acknowledged: the next run sends it
                continue
            if hub_id is None:
                continue  # held by a content rule, not sent: the next run decides it again
            document = queued.document
            self._audit(run, "ingested", document)
            self._settle(run, scope, queued.item, ItemRecord(queued.item.version, document.sha256, hub_id),
                         outcome="new", size=document.size, recent=from_document(document, UPLOADED, hub_id=hub_id))
            run.count("new")
            run.summary.bytes += document.size

    def _deliver_after_failure(self, run: _Run, scope: str) -> None:
        """The run failed while reading on. What it read before the failure is delivered as it would
        have been, one by one: the group in flight is settled (its documents recorded, the cursor
        moved over them), and the documents queued behind it are sent too when the failure was the
        source's (a dropped connection, a throttle, a full spool disk) or the caller's time limit.
        Not when the Hub failed (it would only fail again), nor when the lease was lost (the scope is
        another worker's now) or Redis failed. A failure of this delivery is logged; what it left is
        read again next run."""
        failure = run.failure
        if run.dry_run or run.hub_failed or (run.flight is None and not run.queue):
            return
        source_side = isinstance(failure, Exception) and not isinstance(failure, (LeaseLostError, redis.RedisError))
        try:
            if source_side:
                self._deliver_queue(run, scope)
            else:
                self._land(run, scope)
        except Exception as exc:  # noqa: BLE001 - the run's own failure is the one reported
            log.warning("read_documents_not_delivered", error=mask_text(f"{type(exc).__name__}: {exc}"))

    def _abandon_queue(self, run: _Run) -> None:
        """The run ended with documents read but not delivered: their uploads still in flight are
        waited for, and their spool files closed; the cursor never passed them."""
        entries, run.queue = run.queue, []
        run.queued_ids, run.queued_shas, run.queued_bytes = set(), set(), 0
        documents = [entry for entry in entries if isinstance(entry, _Queued)]
        if run.flight is not None:
            documents += run.flight.documents
            run.flight = None
        _close_queued(documents)

    def _advance(self, run: _Run, cursor: Any, *, checkpoint: bool = False) -> None:
        """Moves the cursor, or queues the move behind the documents still waiting for their flush."""
        assert run.tracker is not None
        if (run.queue or run.flight is not None) and not run.landing:
            # Behind documents read, or sent, but not yet settled.
            run.queue.append(_QueuedCursor(cursor, checkpoint))
            return
        if run.held:
            # Behind an item that waits for the source to prove it serves other items.
            run.held_cursors.append((cursor, checkpoint))
            return
        if run.refusals.waiting:
            # Behind a refused document whose fate waits on the Hub's next answer.
            run.refusals.cursors.append((cursor, checkpoint))
            return
        if run.pending:
            run.deferred_cursors.append((cursor, checkpoint))
            if checkpoint:
                self._commit(run)
        else:
            run.tracker.advance(cursor, checkpoint=checkpoint)

    def _commit(self, run: _Run) -> None:
        """Writes the audit lines, flushes the Hub, then records the waiting documents and moves the
        cursor over them and past the changes that waited behind them, in one MULTI/EXEC; then
        acknowledges them."""
        self.audit.flush()
        deferred, run.deferred_cursors = run.deferred_cursors, []
        tracker = run.tracker
        if not run.pending:
            if tracker is not None:
                for cursor, checkpoint in deferred:
                    tracker.advance(cursor, checkpoint=checkpoint)
            return
        try:
            flush = getattr(self.hub, "flush", None)
            if callable(flush):
                flush()
            cursor = None
            if tracker is not None:
                for moved, _checkpoint in deferred:
                    tracker.advance(moved, save=False)
                cursor = tracker.due()
            self.state.record_many(self.source.name, [(p.scope, p.item.source_id, p.record, p.outcome, p.size)
                                                      for p in run.pending],
                                   cursor=(run.summary.scope, cursor) if cursor is not None else None,
                                   recent=[p.recent for p in run.pending if p.recent is not None],
                                   buffered=self.metrics.drain())
        except BaseException:
            run.deferred_cursors[:0] = deferred  # not recorded: the moves still wait for their documents
            raise
        if tracker is not None:
            tracker.saved(cursor)
        for pending in run.pending:
            self._done(run, pending.item)
        run.pending.clear()

    def _settle(self, run: _Run, scope: str, item: Item, record: ItemRecord, *, outcome: str, size: int,
                recent: RecentDocument | None = None) -> None:
        """Records and acknowledges a document the Hub took (with ``recent``, its line in the
        recent-documents record): now, or with its batch."""
        if item.location:
            record = replace(record, location=location_digest(item.location))
        run.known[item.source_id] = record
        if run.batch_size <= 1:
            self.state.record_ingested(self.source.name, scope, item.source_id, record, outcome=outcome, size=size,
                                       recent=recent)
            self._done(run, item)
            return
        run.pending.append(_Pending(scope, item, record, outcome, size, recent))
        if len(run.pending) >= run.batch_size:
            self._commit(run)

    def _handle_item(self, run: _Run, scope: str, item: Item) -> None:
        run.count("fetched")
        hints = flat_hints(item.hints)
        if item.deleted or item.source_id in run.queued_ids or (run.flight is not None
                                                                and item.source_id in run.flight.source_ids):
            # The same item again (a second version), or a deletion: what is queued goes first, so
            # this change is decided after, and on top of, the earlier ones.
            self._deliver_queue(run, scope)
        if item.deleted:
            self._handle_deletion(run, scope, item)
            return
        known = self._known(run, scope, item.source_id)
        if known and known.version == item.version and not run.full and relocated(known, item):
            # Renamed or moved, the same content: the Hub's document gets its new name, nothing is read.
            if run.dry_run:
                run.count("renamed")
                self._decide(run, "rename", item)
                return
            try:
                if self._renamed(run, scope, item, known):
                    self._settle(run, scope, item, known, outcome="renamed", size=0,
                                 recent=RecentDocument(self.source.name, scope, item.source_id, RENAMED,
                                                       filename=item.filename, hub_id=known.hub_id,
                                                       reason="renamed or moved at the source"))
                    return
            except Exception as exc:  # noqa: BLE001 - classified, and run-level ones raised again, by _item_failed
                self._item_failed(run, scope, item, None, exc)
                return
            known = None  # the Hub no longer has it: read and deliver it again below
        if known and known.version == item.version and not run.full:
            run.count("duplicate")
            self._decide(run, "duplicate", item, reason="already held" if known.held else "already ingested")
            self._done(run, item)
            return
        if known and run.reprocess is not None and not run.reprocess.covers(item):
            run.count("duplicate")
            self._decide(run, "duplicate", item, reason="outside the dates to reprocess")
            self._done(run, item)
            return
        if known and known.held and known.version == item.version and run.reprocess is not None:
            # Held back from the Hub (or dropped): the Hub has no enrichment of it to update.
            run.count("duplicate")
            self._decide(run, "duplicate", item, reason="held, not in the Hub")
            self._done(run, item)
            return
        filename = sanitize_filename(item.filename)
        reason = self.source.skip_reason(filename, item.mime_type, item.size, hints)
        if reason:
            self._skip(run, scope, item, filename, reason)
            return
        if run.dry_run:
            self._decide(run, "ingest", item, filename=filename)
            return
        document: Document | None = None
        ready: _Queued | None = None
        try:
            document = self._read(run, scope, item, filename=filename, hints=hints)
            if document is None:
                return  # held or dead-lettered after too many runs of failed downloads
            reason = self.source.skip_reason(filename, item.mime_type, document.size, hints)
            if reason:
                self._skip(run, scope, item, filename, reason)
                return
            if reads_on_pool(document, self.settings):
                # Its text is read on the pool while the run reads on; the rest of its way waits for it.
                ready = _Queued(item, document, known, hints)
                ready.prepared = self._preparing(run).submit(contextvars.copy_context().run, self._prepare,
                                                            document, hints, run.deadline)
                document = None
            else:
                self._prepare(document, hints, run.deadline)
                rule = self.source.hold_reason(document, hints)
                if rule:
                    self._hold(run, scope, item, document, rule, known)
                    return
                ready, document = _Queued(item, document, known, hints), None
        except Exception as exc:  # noqa: BLE001 - classified, and run-level ones raised again, by _item_failed
            if self._item_failed(run, scope, item, document, exc):
                document = None  # waits, open, in run.refusals
        finally:
            if document is not None:
                document.close()
        if ready is not None:
            self._enqueue(run, scope, ready)  # the queue owns it now

    def _preparing(self, run: _Run) -> ThreadPoolExecutor:
        """The run's threads that wait for the pool: as many as it has children."""
        if run.preparing is None:
            run.preparing = ThreadPoolExecutor(max_workers=max(1, self.settings.pool_size),
                                               thread_name_prefix=f"extract-{self.source.name}")
        return run.preparing

    def _prepare(self, document: Document, hints: Mapping[str, str], deadline: float | None) -> None:
        """Reads the document's text (on the pool, or here when its head decides it) and enriches it."""
        self._extract(document, deadline)
        enrich(document, hints)

    def _item_failed(self, run: _Run, scope: str, item: Item, document: Document | None,
                     exc: BaseException) -> bool:
        """Handles what reading or delivering ``item`` raised: a skip (too large), a dead letter (the
        item's own failure, or an unexpected one), a refusal kept waiting (True: ``run.refusals`` now
        holds ``document``, open); a run-level failure is raised again."""
        if isinstance(exc, ItemTooLarge):
            self._skip(run, scope, item, sanitize_filename(item.filename), f"too-large:{exc}")
            return False
        if isinstance(exc, ItemError):
            if isinstance(exc, HubRefused) and document is not None and self._refused(run, scope, item, document, exc):
                return True
            self._dead_letter(run, scope, item.source_id, str(exc), version=item.version, document=document,
                              metadata=item.metadata, item=item)
            return False
        if isinstance(exc, _RUN_LEVEL + run.time_up) or not isinstance(exc, Exception):
            raise exc  # run-level: the next item would fail the same way, or the run must stop now
        log.exception("item_unexpected_error")
        self._dead_letter(run, scope, item.source_id, f"{type(exc).__name__}: {exc}", version=item.version,
                          document=document, metadata=item.metadata, item=item)
        return False

    def _read(self, run: _Run, scope: str, item: Item, *, filename: str,
              hints: Mapping[str, str]) -> Document | None:
        """The item's Document, or None when a transient failure to read it made it due for the
        dead-letter (see ``_read_failed``); any other failure to read it is raised as it is."""
        try:
            document = self.build_document(scope, item, filename=filename, hints=hints, deadline=run.deadline,
                                           check_space=not run.space_checked, prepare=False)
            run.space_checked = True
        except (ThrottledError, SpoolFullError):
            raise  # the whole service or our own disk, never this one item
        except (TransientError, requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            reason = mask_text(str(exc) if isinstance(exc, TransientError)
                               else f"{type(exc).__name__} while reading {item.source_id}")
            self._read_failed(run, scope, item, reason, exc)
            return None
        self._read_succeeded(run, scope, item)
        return document

    def _read_failed(self, run: _Run, scope: str, item: Item, reason: str, exc: BaseException) -> None:
        """Counts a transient failure to read ``item``'s bytes against the item; raises
        ``TransientError`` (the run ends as ``error``, the cursor stays before the item) until the
        item's download has failed in ``ITEM_TRANSIENT_RUNS`` runs. Then the item is due: it is
        dead-lettered with its reason, and the run goes on past it.

        How an item that fails by itself is told from a source that is down as a whole:

        - Only failures to read the item's bytes count (``open()`` and the stream into the spool),
          after the listing of this same run produced the item: a source that is down lists nothing,
          so its items are never reached and never counted. Failures of the Hub (upload, link) are
          raised from the delivery step and never reach this method; throttling and a full spool
          disk are not the item's doing and are not counted either.
        - A run counts at most once per item (Celery retries and repeated listings included).
        - A due item is dead-lettered only once this run has read another item's bytes from the
          source, before or after it: proof that the source serves files and the failure is this
          item's own. Until then it is *held*: the run goes on, every cursor move after it waits,
          and if no other item downloads (the files' host is down while the listing still works,
          or it is the last item) the run ends as ``error`` with the cursor still before it, and
          nothing is dead-lettered.
        - A version dead-lettered before and met again (a crash kept the cursor before it, or a
          full run re-reads it) was proven then: it is dead-lettered again at once.
        """
        limit = self.settings.item_transient_runs
        if limit <= 0 or run.dry_run:
            raise TransientError(reason) from exc
        runs = self.state.count_item_failure(self.source.name, scope, item.source_id, run_id=run.summary.run_id,
                                             reason=reason)
        run.failing[item.source_id] = {"runs": runs}
        # This version dead-lettered already (a crash before the cursor moved past it, or a full
        # run, brought it back): due at once instead of counting its runs again.
        again = runs < limit and self._dead_lettered_before(scope, item)
        if runs < limit and not again:
            log.warning("item_read_failed", reason=reason, runs=runs, dead_letter_after=limit)
            raise TransientError(f"{reason} (this item's download has failed in {runs} of the {limit} runs "
                                 "after which it is dead-lettered)") from exc
        due = (f"its download failed transiently again after it was dead-lettered: {reason}" if again
               else f"its download failed transiently in {runs} runs: {reason}")
        if run.reads_ok or again:  # proof now, or when it was first dead-lettered
            self._dead_letter(run, scope, item.source_id, due, version=item.version, metadata=item.metadata,
                              item=item)
            return
        log.warning("item_held", reason=reason, runs=runs)
        run.held.append((item, due))

    def _dead_lettered_before(self, scope: str, item: Item) -> bool:
        """True when this very version of the item is in the dead-letter already."""
        entry = self.state.get_dead_letter(self.source.name, scope, item.source_id)
        return entry is not None and entry.version == item.version

    def _read_succeeded(self, run: _Run, scope: str, item: Item) -> None:
        """A read from the source worked: forgets the item's earlier failures and dead-letters the
        items held for want of such proof, releasing the cursor moves that waited behind them."""
        run.reads_ok += 1
        if run.failing.pop(item.source_id, None) is not None:
            self.state.clear_item_failure(self.source.name, scope, item.source_id)
        if not run.held:
            return
        held, run.held = run.held, []
        for waiting, reason in held:
            with bind_context(source_id=waiting.source_id):
                self._dead_letter(run, scope, waiting.source_id, reason, version=waiting.version,
                                  metadata=waiting.metadata, item=waiting)
        cursors, run.held_cursors = run.held_cursors, []
        for cursor, checkpoint in cursors:
            self._advance(run, cursor, checkpoint=checkpoint)

    def _unconfirmed(self, run: _Run) -> None:
        """The feed ended with items held and no other item read: the run ends as ``error`` (the
        cursor stays before the first held item, which the next run meets again)."""
        first, _ = run.held[0]
        run.summary.state = ScopeState.ERROR
        run.summary.error = mask_text(
            f"{len(run.held)} item(s) failed to download in {self.settings.item_transient_runs} runs or more, "
            f"first {first.source_id}; they are dead-lettered once another item of this scope downloads, "
            "proving the source serves files")
        log.warning("items_held_unconfirmed", held=len(run.held), first=first.source_id)

    def build_document(self, scope: str, item: Item, *, filename: str | None = None,
                        hints: Mapping[str, str] | None = None, deadline: float | None = None,
                        check_space: bool = True, prepare: bool = True) -> Document | None:
        """Streams the item's bytes into a spool file, hashes them, reads their text and enriches them
        (``prepare=False``: spooled and hashed only, for the caller to prepare).

        Free space in the spool folder is checked before the download (unless ``check_space`` is
        False: the run checked it for this window already) and again every ``SPOOL_RECHECK_BYTES``
        (``SpoolFullError``), the run's ``deadline`` every ``DEADLINE_CHECK_BYTES``
        (``_DeadlineReached``); either removes the spool file."""
        if item.open is None:
            raise ItemError("the connector gave no way to read this item's content")
        if check_space:
            self._guard_free_space()
        spooled = spool_chunks(item.open(), spool_dir=self.settings.spool_dir, max_bytes=self.source.max_document_bytes,
                               on_progress=self._stream_guard(deadline), progress_every=DEADLINE_CHECK_BYTES)
        try:
            document = Document(
                source=self.source.name, scope=scope, source_id=item.source_id, version=item.version,
                filename=filename or sanitize_filename(item.filename), mime_type=item.mime_type or
                "application/octet-stream", size=spooled.size, sha256=spooled.sha256, title=item.title,
                text=item.text, author=item.author, created_at=item.created_at, modified_at=item.modified_at,
                source_url=item.source_url, metadata=dict(item.metadata), _content=spooled.file,
            )
            if prepare:
                self._prepare(document, hints if hints is not None else flat_hints(item.hints), deadline)
            return document
        except BaseException:
            spooled.file.close()
            raise

    def _extract(self, document: Document, deadline: float | None) -> None:
        """The document's text, read on the process pool (base/extraction/step.py); whatever the file
        does is reported in its ``extraction``, never raised."""
        extract_document(document, self.settings, pool_for(self.settings), deadline=deadline)

    def _stream_guard(self, deadline: float | None) -> Callable[[int], None]:
        """What ``spool_chunks`` calls every ``DEADLINE_CHECK_BYTES`` of one download."""
        next_space_check = SPOOL_RECHECK_BYTES

        def guard(size: int) -> None:
            nonlocal next_space_check
            if deadline is not None and time.monotonic() >= deadline:
                raise _DeadlineReached(f"the run's deadline passed {size} bytes into a download")
            if size >= next_space_check:
                next_space_check = size + SPOOL_RECHECK_BYTES
                self._guard_free_space()

        return guard

    def deliver(self, run: _Run, scope: str, item: Item, document: Document, known: ItemRecord | None, *,
                upload: Future[str | None] | None = None) -> None:
        """Delivers a read document: its enrichment updated (reprocess), its new version remembered
        (same bytes), linked to the same bytes already in the Hub, or uploaded (``upload``: that upload
        already sent, on the run's upload threads); then records it with its batch."""
        if known and known.sha256 == document.sha256 and relocated(known, item) and not self._renamed(
                run, scope, item, known):
            known = None  # the Hub no longer has it: upload it again below
        if known and known.sha256 == document.sha256 and run.reprocess is not None and known.hub_id:
            if self._reprocessed(run, scope, item, document, known):
                return
            known = None  # the Hub lost it: upload it again below
        if known and known.sha256 == document.sha256:
            # Same bytes under a new version (a metadata edit, a rescan): remember the version only.
            # (Audit lines before the record: a batch written by _settle has them all.)
            self._audit(run, "duplicate", document, reason="same content as the previous version")
            self._settle(run, scope, item, ItemRecord(item.version, document.sha256, known.hub_id),
                         outcome="duplicate", size=document.size,
                         recent=from_document(document, UNCHANGED, hub_id=known.hub_id))
            run.count("duplicate")
            return
        if known:
            document.previous_sha256 = known.sha256
        hub_id = self._content(run, document.sha256)
        outcome = "new"
        if hub_id:
            try:
                self.hub.link(hub_id, document.hub_metadata())
                outcome = "duplicate"
            except HubDocumentMissing:
                hub_id = None
        if not hub_id:
            hub_id = (upload.result() if upload is not None else None) or self._upload(document)
        self._refusals_end(run, scope)  # the Hub takes documents: the refusals before were their own
        # One line per document is the audit log's job; the service log keeps it at DEBUG.
        log.debug("document_ingested" if outcome == "new" else "document_linked", filename=document.filename,
                  sha256=document.sha256, size=document.size, language=document.language,
                  department=document.department, hub_id=hub_id)
        self._audit(run, "ingested" if outcome == "new" else "duplicate", document,
                    reason="" if outcome == "new" else f"content already in the Hub as {hub_id}")
        self._settle(run, scope, item, ItemRecord(item.version, document.sha256, hub_id), outcome=outcome,
                     size=document.size, recent=from_document(document, UPLOADED if outcome == "new" else LINKED,
                                                              hub_id=hub_id or ""))
        run.count(outcome)
        if outcome == "new":
            run.summary.bytes += document.size
            self.metrics.count(DOCUMENTS_CLASSIFIED, {"source": self.source.name, "language": document.language,
                                                      "department": document.department or "unknown"})

    def _content(self, run: _Run, sha256: str) -> str | None:
        """The Hub id of these bytes: from the group's lookup, else from Redis."""
        if sha256 in run.contents:
            return run.contents[sha256]
        return self.state.get_content(sha256)

    def _refused(self, run: _Run, scope: str, item: Item, document: Document, exc: HubRefused) -> bool:
        """Keeps a Hub refusal waiting (True) instead of dead-lettering it, per base/refusals.py;
        raises ``HubRefusesEveryDocument`` when it is the ``HUB_REFUSALS_TO_STOP``-th in a row."""
        streak = run.refusals
        if streak.limit <= 0 or run.dry_run:
            return False
        if not streak.continues(exc):
            self._refusals_end(run, scope)
        if streak.hold(item, document, exc):
            raise streak.stop()
        log.warning("hub_refusal_waiting", status=exc.status, reason=mask_text(exc.reason),
                    in_a_row=len(streak.waiting), stop_after=streak.limit)
        return True

    def _refusals_end(self, run: _Run, scope: str) -> None:
        """Dead-letters the refusals waiting in ``run.refusals``, in order, then makes the cursor
        moves that waited behind them."""
        if not run.refusals.waiting:
            return
        waiting, cursors = run.refusals.release()
        try:
            for entry in waiting:
                with bind_context(source_id=entry.item.source_id):
                    self._dead_letter(run, scope, entry.item.source_id, str(entry.error), version=entry.item.version,
                                      document=entry.document, metadata=entry.item.metadata, item=entry.item)
        finally:
            for entry in waiting:
                entry.document.close()
        for cursor, checkpoint in cursors:
            self._advance(run, cursor, checkpoint=checkpoint)

    def _reprocessed(self, run: _Run, scope: str, item: Item, document: Document, known: ItemRecord) -> bool:
        """Sends the Hub the new enrichment of a document it holds; False when the Hub no longer has it."""
        try:
            self.hub.update_enrichment(known.hub_id, document.enrichment(), document.content_text or None)
        except HubDocumentMissing:
            return False
        self._refusals_end(run, scope)
        self._audit(run, "reprocessed", document, reason=f"enrichment of {known.hub_id} updated")
        self._settle(run, scope, item, ItemRecord(item.version, document.sha256, known.hub_id),
                     outcome="reprocessed", size=document.size,
                     recent=from_document(document, REPROCESSED, hub_id=known.hub_id))
        run.count("reprocessed")
        return True

    def _renamed(self, run: _Run, scope: str, item: Item, known: ItemRecord) -> bool:
        """Sends the Hub the new name and place of a document it holds (renamed or moved at the source,
        base/relocation.py); False when the Hub no longer has it."""
        try:
            self.hub.update_metadata(known.hub_id, metadata_update(self.source.name, scope, item, known))
        except HubDocumentMissing:
            return False
        run.count("renamed")
        log.info("document_renamed", filename=sanitize_filename(item.filename), hub_id=known.hub_id)
        self.audit.record("renamed", source=self.source.name, scope=scope, source_id=item.source_id,
                          sha256=known.sha256, filename=sanitize_filename(item.filename),
                          reason=f"metadata of {known.hub_id} updated", run_id=run.summary.run_id)
        return True

    def _handle_deletion(self, run: _Run, scope: str, item: Item) -> None:
        if self._known(run, scope, item.source_id) is None:
            # Never ingested (a folder, an item the rules skipped, one deleted before we saw it):
            # the Hub has nothing to forget.
            run.count("skipped")
            self._decide(run, "skip", item, reason="deleted before it was ingested")
            self._done(run, item)
            return
        if run.dry_run:
            self._decide(run, "delete", item)
            return
        self.hub.delete(self.source.name, item.source_id)
        self.state.forget_item(self.source.name, scope, item.source_id, recent=RecentDocument(
            self.source.name, scope, item.source_id, DELETED, filename=sanitize_filename(item.filename)
            if item.filename else ""))
        run.known[item.source_id] = None
        run.count("deleted")
        log.info("document_deleted")
        self.audit.record("deleted", source=self.source.name, scope=scope, source_id=item.source_id,
                          run_id=run.summary.run_id)
        self._done(run, item)

    def _skip(self, run: _Run, scope: str, item: Item, filename: str, reason: str) -> None:
        run.count("skipped")
        if run.dry_run:
            self._decide(run, "skip", item, filename=filename, reason=reason)
            return
        self.state.incr_metric("kmrl_documents_total", {"source": self.source.name, "outcome": "skipped"})
        log.info("document_skipped", filename=filename, reason=reason)
        self.audit.record("skipped", source=self.source.name, scope=scope, source_id=item.source_id, filename=filename,
                          reason=reason, run_id=run.summary.run_id)
        self._done(run, item)

    def _dead_letter(self, run: _Run, scope: str, source_id: str, reason: str, *, version: str = "",
                     document: Document | None = None, metadata: Mapping[str, Any] | None = None,
                     item: Item | None = None) -> None:
        run.count("failed")
        reason = mask_text(reason)
        if run.dry_run:
            run.summary.decisions.append(Decision("fail", source_id, reason=reason))
            return
        entry = DeadLetter(connector=self.source.name, scope=scope, source_id=source_id, reason=reason, version=version,
                           metadata=dict(metadata or {}),
                           filename=document.filename if document else item.filename if item else "")
        if document is not None:
            entry.metadata = {"hub": document.hub_metadata(), "source": dict(metadata or {})}
            entry.bytes_path = self._keep_bytes(entry.id, document)
        self.state.add_dead_letter(entry)
        run.count("dead_lettered")
        log.warning("document_dead_lettered", reason=reason, attempts=entry.attempts, bytes_kept=bool(entry.bytes_path))
        self.audit.record("dead_lettered", source=self.source.name, scope=scope, source_id=source_id,
                          sha256=document.sha256 if document else None,
                          filename=document.filename if document else None, reason=reason,
                          run_id=run.summary.run_id)
        if item is not None:
            self._done(run, item)

    def _hold(self, run: _Run, scope: str, item: Item, document: Document, rule: str,
              known: ItemRecord | None) -> None:
        """Holds ``document`` back from the Hub: its bytes are kept under HELD_DIR, then the entry and
        the item's record (done, held) are written in one transaction, so the cursor moves past it.
        A crash between the two leaves a bytes file no entry names: the next run meets the item
        again and writes the same file, or the daily cleanup removes it."""
        entry = HeldDocument(connector=self.source.name, scope=scope, source_id=item.source_id, version=item.version,
                             rule=rule, kinds=dict(document.sensitive), filename=document.filename,
                             sha256=document.sha256, size=document.size,
                             metadata={"hub": document.hub_metadata(), "source": dict(item.metadata)})
        entry.bytes_path = self._keep_bytes(entry.id, document, root=self.settings.held_dir)
        self.state.add_held(entry, known)
        run.known.pop(item.source_id, None)  # its record now says held: looked up again if met again
        run.count("held")
        kinds = ",".join(f"{kind}={count}" for kind, count in sorted(entry.kinds.items()))
        log.info("document_held", rule=rule, kinds=kinds, filename=document.filename, sha256=document.sha256,
                 entry_id=entry.id)
        self._audit(run, "held", document, reason=f"{rule} (personal data: {kinds})")
        self._done(run, item)

    def _keep_bytes(self, entry_id: str, document: Document, *, root: str | None = None) -> str:
        """Copies a document's bytes (and its extracted text, ``DeadLetter.text_path`` /
        ``HeldDocument.text_path``) to ``root`` (default: DEADLETTER_DIR, beside the dead-letter entry)
        so a replay or a release needs neither the source nor extraction again."""
        folder = os.path.join(root or self.settings.deadletter_dir, self.source.name)
        os.makedirs(folder, exist_ok=True)
        path = os.path.abspath(os.path.join(folder, f"{entry_id}.bin"))
        tmp = path + ".tmp"
        with open(tmp, "wb") as out:
            shutil.copyfileobj(document.open_content(), out, 1024 * 1024)
        os.replace(tmp, path)
        text_path = f"{path}.txt"  # DeadLetter.text_path
        if document.content_text:
            with open(tmp, "w", encoding="utf-8", errors="replace") as out:
                out.write(document.content_text)
            os.replace(tmp, text_path)
        elif os.path.exists(text_path):
            os.remove(text_path)  # an earlier failure of this item had text; this version has none
        return path

    def _done(self, run: _Run, item: Item) -> None:
        if not run.dry_run:
            self.source.acknowledge(item)

    def _decide(self, run: _Run, action: str, item: Item, *, filename: str = "", reason: str = "") -> None:
        if run.dry_run:
            run.summary.decisions.append(Decision(action, item.source_id, filename or item.filename, reason))

    def _audit(self, run: _Run, decision: str, document: Document, *, reason: str = "") -> None:
        self.audit.record(decision, source=self.source.name, scope=document.scope, source_id=document.source_id,
                          sha256=document.sha256, filename=document.filename, department=document.department,
                          language=document.language, sensitive=document.sensitive or None, reason=reason,
                          run_id=run.summary.run_id)

    def _guard_free_space(self) -> None:
        folder = self.settings.spool_dir
        try:
            free = shutil.disk_usage(folder).free
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
            free = shutil.disk_usage(folder).free
        needed = self.settings.spool_min_free_mb * 1024 * 1024
        if free < needed:
            raise SpoolFullError(f"spool folder {folder} has {free // (1024 * 1024)} MiB free, "
                                 f"below the guard of {self.settings.spool_min_free_mb} MiB")

    def _finish_status(self, summary: ScopeSummary) -> None:
        fields: dict[str, Any] = {"state": summary.state, "last_run_end": summary.ended_at,
                                  # status and /metrics show it with no call to the source
                                  "scope_name": summary.scope_name,
                                  "last_error": summary.error, "last_run_seconds": round(summary.seconds, 3),
                                  "bytes": summary.bytes, **summary.counts}
        if ScopeState(summary.state).succeeded:
            fields["last_success"] = summary.ended_at
            fields["last_error"] = ""
            self.state.set_gauge("kmrl_last_success_timestamp_seconds",
                                 {"source": self.source.name, "scope": summary.scope}, summary.ended_at)
        self.state.update_status(self.source.name, summary.scope, fields)
        self.state.append_history(self.source.name, summary.scope, {k: v for k, v in summary.as_dict().items()
                                                             if k != "decisions"})
        labels = {"source": self.source.name}
        self.metrics.count("kmrl_run_seconds_total", labels, summary.seconds)
        self.metrics.observe(RUN_DURATION, labels, summary.seconds)
        state = ScopeState(summary.state)
        # Locked, throttled or paused is neither: the failures in a row are left as they are.
        failed = True if state.failed else False if state.succeeded else None
        self.state.record_run_metrics(self.source.name, summary.scope, state=summary.state, failed=failed,
                                      increments=self.metrics.drain())
        self.state.set_gauge("kmrl_dead_letters", {"source": self.source.name},
                             self.state.dead_letter_count(self.source.name))

    def record_connector_error(self, failed: ScopeSummary) -> None:
        log.warning("connector_failed", connector=self.source.name, state=failed.state, error=failed.error)

        def record() -> None:
            self.state.update_status(self.source.name, "*", {"state": failed.state, "last_error": failed.error,
                                                      "last_run_end": failed.ended_at})
            self.state.record_run_metrics(self.source.name, "*", state=failed.state,
                                          failed=True if ScopeState(failed.state).failed else None,
                                          increments=self.metrics.drain())

        _best_effort(record, "status")


def _readable_name(source: Any, scope: str) -> str:
    """The connector's name for ``scope`` when it differs from the scope ("" otherwise); never fails a run."""
    try:
        name = str(source.scope_label(scope))
    except Exception:  # noqa: BLE001 - a name is a courtesy: a fault here must not change the run's outcome
        return ""
    return "" if name == scope else name


class _CursorTracker:
    """Holds the last safe cursor of a run and saves it every ``cursor_save_every`` items and at
    every checkpoint, so a run cut short resumes close to where it stopped."""

    def __init__(self, state: StateStore, connector: str, scope: str, start: Any, *, save_every: int,
                 enabled: bool) -> None:
        self._state = state
        self._connector = connector
        self._scope = scope
        self._save_every = save_every
        self.safe = start
        self._saved = start
        self._since_save = 0
        self.enabled = enabled

    def advance(self, cursor: Any, *, checkpoint: bool = False, save: bool = True) -> None:
        """Moves the safe cursor; saves it at a checkpoint or every ``save_every`` moves, unless
        ``save`` is False (the caller writes it with its batch: ``due`` / ``saved``)."""
        if cursor is not None:
            self.safe = cursor
        self._since_save += 1
        if save and (checkpoint or self._since_save >= self._save_every):
            self.save()

    def due(self) -> Any:
        """The cursor to write with a batch (None when it is saved already or saving is off)."""
        if self.enabled and self.safe is not None and self.safe != self._saved:
            return self.safe
        return None

    def saved(self, cursor: Any) -> None:
        """Says that the batch holding ``cursor`` (``due()``'s value; None: no cursor) was written."""
        if cursor is not None:
            self._saved = cursor
        self._since_save = 0

    def save(self) -> None:
        if self.enabled and self.safe is not None and self.safe != self._saved:
            self._state.set_cursor(self._connector, self._scope, self.safe)
            self._saved = self.safe
        self._since_save = 0


def _windows(changes: Iterable[Change], max_changes: int, max_bytes: int,
             stop_now: TimeUp = ()) -> Iterator[list[Change]]:
    """``changes`` in consecutive windows of at most ``max_changes`` changes and, by the sizes items
    announce, about ``max_bytes``; a window also ends at a Checkpoint (a page's end), so an empty
    page is handled before the next is fetched. Only what a window holds is read ahead: items are
    lazy, their bytes are read when the runner opens them.

    When the source fails while a window is being read, the changes read before the failure are
    yielded first and the failure is raised after them (unless it is one of ``stop_now``: at once),
    as if they had been handled one by one."""
    window: list[Change] = []
    size = 0
    source = iter(changes)
    while True:
        try:
            change = next(source)
        except StopIteration:
            break
        except stop_now:
            raise
        except Exception:
            if window:
                yield window
            raise
        window.append(change)
        if isinstance(change, Item) and change.size:
            size += change.size
        if len(window) >= max_changes or size >= max_bytes or isinstance(change, Checkpoint):
            yield window
            window, size = [], 0
    if window:
        yield window


def _close_queued(queued: list[_Queued]) -> None:
    """Cancels the uploads of ``queued`` not started, waits for those in flight (their threads read
    the spool files), then closes every document not handed on."""
    running: list[Future[Any]] = [q.upload for q in queued if q.upload is not None and not q.upload.cancel()]
    running += [q.prepared for q in queued if q.prepared is not None and not q.prepared.cancel()]
    if running:
        wait_all(running)
    for entry in queued:
        if not entry.taken:
            entry.document.close()


def _best_effort(write: Any, what: str) -> None:
    """Runs a closing state write; a Redis outage is logged, not raised (the run already ended)."""
    try:
        write()
    except (redis.RedisError, TransientError, OSError) as exc:
        log.warning("state_write_failed", what=what, error=f"{type(exc).__name__}: {exc}")


