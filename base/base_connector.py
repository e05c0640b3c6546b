"""``BaseConnector``: the abstract base a connector subclasses (DESIGN.md "The connector contract").

A connector only knows its source: ``scopes()``, ``list_changes(scope, cursor)`` and optionally
``acknowledge(item)`` and ``connect(credentials)`` (what they yield and raise: base/contract.py).
``BaseConnector`` gives it state, dedup and upload: its public API (``fetch_documents``,
``sync_documents``, ``sync_scope``, ``health_check``) runs its changes through the one pipeline,
``base/runner.py``. What a connector uses to reach its source (HTTP clients, the shared throttle
gates) is handed to it as ``clients`` (``SourceClients``) by the service's wiring.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ClassVar

import redis

from base.contract import Change, HealthResult, Item, ScopeState, SourceClients
from base.document import Document
from base.enrichment.rules import ContentRules
from base.hub_client import Hub, hub_from_settings
from base.runner import COUNT_FIELDS, Decision, Reprocess, Runner, ScopeSummary, SyncSummary, TimeUp
from base.state import StateStore
from config.settings import Settings, get_settings
from utils.audit import AuditLog
from utils.errors import ConfigError, ItemError, TransientError
from utils.logging import get_logger
from utils.ttl_cache import TtlCache

__all__ = ["COUNT_FIELDS", "BaseConnector", "Decision", "HealthResult", "ScopeSummary", "SyncSummary"]

log = get_logger(__name__)


class BaseConnector(ABC):
    """What a connector subclasses: it talks to one source; this gives it state, dedup and upload.

    state: the Redis ``StateStore`` (default: from settings).
    hub: where documents go (default: ``HttpHub`` when HUB_API_URL is set, else the local outbox).
    settings: service settings (default: ``get_settings()``).
    rules: content rules (default: loaded from CONTENT_RULES_FILE or config/content_rules.toml).
    cache: what the connector may remember between runs in this process, such as a site's resolved
        libraries (default: its own, empty). The service's wiring hands one cache to every connector
        it builds, so the runs of one worker process share it.
    clients: how the connector reaches its source, HTTP clients and the throttle gates every worker
        shares (default: gates kept in ``state``); the service's wiring hands it in.
    """

    #: Short, stable name of the source ("email", "maximo", "sharepoint", "whatsapp").
    name: ClassVar[str] = ""
    #: Why a full run cannot list what was ingested before (a stream whose entries are gone once
    #: taken), or "" when it can: ``kmrl-connectors reprocess`` reads documents again only then.
    cannot_list_again: ClassVar[str] = ""

    def __init__(self, *, state: StateStore | None = None, hub: Hub | None = None,
                 settings: Settings | None = None, rules: ContentRules | None = None,
                 cache: TtlCache | None = None, clients: SourceClients | None = None) -> None:
        if not self.name:
            raise TypeError(f"{type(self).__name__} must set the class attribute 'name'")
        self.settings = settings or get_settings()
        self.state = state or StateStore.from_settings(self.settings)
        self.clients = clients or SourceClients(self.state.throttle_gate)
        self.hub = hub or hub_from_settings(self.settings, gate=self.clients.gate("hub"))
        self.rules = rules if rules is not None else ContentRules.load(self.settings.content_rules_file or None)
        self.audit = AuditLog(self.settings.audit_log)
        self.cache = cache if cache is not None else TtlCache()
        self.credentials: Mapping[str, Any] = {}
        #: Largest document accepted, in bytes (None: no limit); a connector may lower it.
        self.max_document_bytes: int | None = self.settings.max_document_bytes

    # -- the connector contract -------------------------------------------------------------------
    def connect(self, credentials: Mapping[str, Any]) -> AbstractContextManager[None]:
        """Opens what a run needs (log in, build clients). Default: keeps ``credentials``."""
        return self._keep_credentials(credentials)

    @contextmanager
    def _keep_credentials(self, credentials: Mapping[str, Any]) -> Iterator[None]:
        self.credentials = credentials
        yield

    @abstractmethod
    def scopes(self) -> list[str]:
        """The independent units this connector syncs (called inside ``connect``)."""

    @abstractmethod
    def list_changes(self, scope: str, cursor: Any) -> Iterator[Change]:
        """What changed in ``scope`` since ``cursor`` (None: from the start), lazily."""

    def scope_label(self, scope: str) -> str:
        """The name a person reads for ``scope`` (e.g. ``sites/operations / Documents`` for a SharePoint
        drive id); ``scope`` itself when it is readable already or the connector does not know it yet.
        Answers from what the connector holds, never with a call to its source."""
        return scope

    def acknowledge(self, item: Item) -> None:  # noqa: B027 - optional hook
        """Called once ``item`` is done: acknowledged by the Hub, skipped, or dead-lettered."""

    @abstractmethod
    def health_check(self, credentials: Mapping[str, Any] | None = None) -> HealthResult:
        """Proves the connection and credentials with the cheapest real call; never raises."""

    def default_credentials(self) -> Mapping[str, Any]:
        """Credentials from the environment, when the caller gives none."""
        raise ConfigError(f"no credentials given for {self.name}")

    # -- public API -------------------------------------------------------------------------------
    def fetch_documents(self, credentials: Mapping[str, Any] | None = None) -> Iterator[Document]:
        """Complete Documents for what is new since the stored cursors, lazily.

        Advances no cursor and uploads nothing; items already ingested (same version) and items the
        content rules skip are left out; an item that cannot be read is logged and left out.
        The caller owns each Document and should ``close()`` it.
        """
        creds = credentials if credentials is not None else self.default_credentials()
        runner = self.runner()
        with self.connect(creds):
            for scope in self.scopes():
                cursor = self.state.get_cursor(self.name, scope)
                for change in self.list_changes(scope, cursor):
                    if not isinstance(change, Item) or change.deleted:
                        continue
                    known = self.state.get_item(self.name, scope, change.source_id)
                    if known and known.version == change.version:
                        continue
                    try:
                        document = runner.build_document(scope, change)
                    except ItemError as exc:
                        log.warning("fetch_item_failed", connector=self.name, scope=scope,
                                    source_id=change.source_id, reason=str(exc))
                        continue
                    if document is not None:
                        yield document

    def sync_documents(self, credentials: Mapping[str, Any] | None = None, *, scopes: list[str] | None = None,
                       dry_run: bool = False, full: bool = False, deadline: float | None = None,
                       time_up: TimeUp = (), reprocess: Reprocess | None = None) -> SyncSummary:
        """Runs the pipeline over every scope (or ``scopes``); returns what happened.

        dry_run: list what would be ingested, skipped, deleted; download, upload and change nothing.
        full: ignore the stored cursors and re-read everything (dedup still prevents re-uploads).
        deadline: ``time.monotonic()`` value after which each scope stops at its next safe point.
        time_up: exception types that mean the caller's own time limit struck (the Celery task gives
            ``SoftTimeLimitExceeded``): inside a scope's run one ends it as ``partial``; outside, it is raised.
        reprocess: read already-ingested documents again and update their enrichment in the Hub
            (``kmrl-connectors reprocess``; see ``base.runner.Reprocess``).
        Classified failures end up in the summary's states; they are not raised.
        """
        creds = credentials if credentials is not None else self.default_credentials()
        runner = self.runner()
        summary = SyncSummary(self.name)
        try:
            with self.connect(creds):
                selected = scopes if scopes is not None else self.scopes()
                # Connected and listed: a scope-less failure recorded by an earlier run no longer holds.
                self.state.clear_status(self.name, "*")
                for scope in selected:
                    result = runner.run_scope(scope, dry_run=dry_run, full=full, deadline=deadline, time_up=time_up,
                                              reprocess=reprocess)
                    summary.scopes.append(result)
                    if result.state == ScopeState.AUTH_FAILED:
                        break  # the same credentials would fail on every other scope
        except (ConfigError, TransientError, redis.RedisError) as exc:
            # connect() or scopes() failed before any scope ran (or Redis was unreachable when a scope
            # started): report it as a scope-less run.
            summary.scopes.append(runner.scopeless_failure(exc))
        except time_up:
            raise  # the caller's own stop: the caller reports it
        except Exception as exc:
            # Not classified (a bug, a parser's RecursionError on hostile JSON): still one clear
            # scope-less error, never an exception out of the pipeline.
            log.exception("connector_unexpected_error", connector=self.name)
            summary.scopes.append(runner.scopeless_failure(exc))
        return summary

    def redeliver(self, scope: str, item: Item, document: Document, *, run_id: str) -> ScopeSummary:
        """Delivers an already-built Document through the pipeline's own delivery step (content dedup,
        upload, item record, metrics, audit), outside a sync run: what a dead-letter replay needs.
        Raises ItemError when the Hub refuses it again, ConfigError / TransientError as a run would."""
        return self.runner().redeliver(scope, item, document, run_id=run_id)

    def sync_scope(self, scope: str, credentials: Mapping[str, Any] | None = None, *, dry_run: bool = False,
                   full: bool = False, deadline: float | None = None, time_up: TimeUp = ()) -> ScopeSummary:
        """Runs the pipeline for one scope (what a Celery task does)."""
        result = self.sync_documents(credentials, scopes=[scope], dry_run=dry_run, full=full, deadline=deadline,
                                     time_up=time_up)
        return result.scopes[0]

    def runner(self) -> Runner:
        """The pipeline over this connector's changes, with its current state store, Hub and settings."""
        return Runner(self, state=self.state, hub=self.hub, settings=self.settings, audit=self.audit)

    def skip_reason(self, filename: str, mime_type: str, size: int | None, hints: Mapping[str, str]) -> str | None:
        """Why a document is not to be ingested (the size limit, then the content rules), or None.

        Called with the claimed size before download and again with the real size after it. A
        connector with filters of its own overrides it, calling ``super().skip_reason`` first, so its
        skips are counted, logged and audited like the rules'."""
        limit = self.max_document_bytes
        if limit is not None and size is not None and size > limit:
            return f"too-large:{size}>{limit}"
        return self.rules.decide(self.name, filename, mime_type, size, hints)

    def hold_reason(self, document: Document, hints: Mapping[str, str]) -> str | None:
        """Why an enriched document is to be held back from the Hub (a ``[[hold]]`` content rule
        matched the personal data found in it, ``Document.sensitive``), or None to deliver it."""
        return self.rules.hold_reason(self.name, document.filename, document.mime_type, document.size, hints,
                                      document.sensitive)

