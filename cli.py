"""``kmrl-connectors``: run, inspect and repair the service from a shell.

    kmrl-connectors sync SOURCE|all [--scope S] [--dry-run] [--full]
    kmrl-connectors reprocess SOURCE|all [--scope S] [--since DAY] [--until DAY]
    kmrl-connectors status [--json] [--long]
    kmrl-connectors recent [--source S] [--language L] [--department D] [--decision X] [--limit N] [--json]
    kmrl-connectors check [SOURCE]
    kmrl-connectors deadletter list|retry|drop [SOURCE] [--id ID] | deadletter show ID
    kmrl-connectors held list [SOURCE] | held release ID | held drop ID
    kmrl-connectors web [--host H] [--port P]
    kmrl-connectors run [--concurrency N]
    kmrl-connectors watch
    kmrl-connectors probe [worker|beat|web|watcher]

Exit codes: 0 when everything asked for worked, 1 when something failed (a check, a run, a
replay, a Redis that does not answer), 2 for a usage or settings error. Output is for people on
stdout; logs go to stderr and the log file (``-v`` shows INFO logs on the console too).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from base.base_connector import BaseConnector
from base.contract import ScopeState
from base.recent import DECISIONS
from base.runner import Reprocess, ScopeSummary
from base.schema import migrate
from base.state import DeadLetter
from config.redis_tls import redis_tls_kwargs
from config.settings import Settings
from connectors import operator_views, registry
from connectors.service import Service
from connectors.status_report import health_text, status_data
from utils.errors import ConfigError, TransientError, root_cause_first
from utils.logging import configure_logging, mask_text
from utils.progress import SyncProgress
from utils.supervisor import Child, Supervisor
from utils.tables import DISPLAY_ZONE as IST
from utils.tables import ago, format_duration, format_time, render_table, safe_url
from watchers.board import WatcherBoard
from watchers.imap_watcher import WatchConfig, watch_enabled

#: A worker's liveness file older than this fails ``probe worker``.
LIVENESS_MAX_AGE = 60.0  # seconds


def out(line: str = "") -> None:
    print(line, flush=True)


# -- a Redis that does not answer -----------------------------------------------------------------

#: A Redis server that does not answer: refused, timed out, unknown host, TLS or password refused,
#: still loading its data (redis-py's AuthenticationError and BusyLoadingError are ConnectionErrors).
REDIS_DOWN: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError)
#: The variable that sets each Redis role's URL when it is set; REDIS_URL (one database each) otherwise.
REDIS_ROLE_VARIABLES = {"state": "STATE_REDIS_URL", "broker": "CELERY_BROKER_URL",
                        "results": "CELERY_RESULT_BACKEND", "redbeat": "REDBEAT_REDIS_URL"}


def redis_role_urls(settings: Settings) -> dict[str, str]:
    return {"state": settings.state_redis_url, "broker": settings.broker_url, "results": settings.result_backend,
            "redbeat": settings.redbeat_redis_url}


def redis_variable(settings: Settings, role: str) -> str:
    """The variable an operator changes to point ``role`` at another Redis."""
    own = REDIS_ROLE_VARIABLES[role]
    return own if settings.env(own) else "REDIS_URL"


def _why_unanswered(exc: BaseException) -> str:
    """A few words on why a connection failed, from the socket error under redis-py's."""
    if isinstance(exc, redis.TimeoutError):
        return "timed out"
    cause = exc.__cause__ or exc.__context__
    for _ in range(10):  # a chain, not a cycle; bounded all the same
        if cause is None:
            break
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "host name not found"
        if isinstance(cause, TimeoutError):
            return "timed out"
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed: {getattr(cause, 'verify_message', None) or cause.reason or cause}"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        cause = cause.__cause__ or cause.__context__
    return mask_text(str(exc)) or type(exc).__name__


def redis_problem(url: str, variable: str, exc: BaseException) -> str:
    """One line on a Redis at ``url`` that did not answer: where (without its password), why, and
    what to do (``variable`` is the setting to change)."""
    where = f"Redis at {safe_url(url)}"
    if isinstance(exc, redis.exceptions.AuthenticationError | redis.exceptions.AuthorizationError):
        return f"{where} refused the login ({mask_text(str(exc)).rstrip('.')}): set the right password in {variable}"
    if isinstance(exc, redis.exceptions.BusyLoadingError):
        return f"{where} is still loading its data: try again in a moment"
    return f"{where} does not answer ({_why_unanswered(exc)}): start it or set {variable}"


def _server(url: str) -> tuple[str, str]:
    """What tells two Redis URLs' servers apart (scheme and address; the database does not)."""
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.rpartition("@")[2] or parts.path


def _without_database(url: str) -> str:
    parts = urlsplit(safe_url(url))
    return url if parts.scheme == "unix" else urlunsplit((parts.scheme, parts.netloc, "", "", ""))


# -- sync -----------------------------------------------------------------------------------------

def _scope_line(result: ScopeSummary) -> str:
    # dead_lettered is within failed; reprocessed shows only in the runs that do it.
    counts = " ".join(f"{k}={v}" for k, v in result.counts.items()
                      if k != "dead_lettered" and (v or k != "reprocessed"))
    line = f"{result.connector} {result.label}: {result.state}  {counts}  {result.seconds:.1f} s"
    return line + (f"  error: {result.error}" if result.error else "")


def _print_decisions(result: ScopeSummary) -> None:
    if not result.decisions:
        out(f"{result.connector} {result.label}: nothing to do")
        return
    rows = [(d.action, d.filename or "-", d.source_id, d.reason or "") for d in result.decisions]
    out(f"{result.connector} {result.label} (dry run: nothing was downloaded, uploaded or changed)")
    out(render_table(("WOULD", "FILENAME", "SOURCE ID", "WHY"), rows))


def _owned_scope(connector: BaseConnector, wanted: str) -> tuple[str | None, list[str]]:
    """The scope of ``connector`` that ``wanted`` names (its id, or its readable name in any case), or
    None; with the names of every scope the connector has, for the message when none matched."""
    with connector.connect(connector.default_credentials()):
        scopes = connector.scopes()
        names = {scope: connector.scope_label(scope) for scope in scopes}
    if wanted in scopes:
        return wanted, list(names.values())
    for scope, name in names.items():
        if name.casefold() == wanted.casefold():
            return scope, list(names.values())
    return None, list(names.values())


def cmd_sync(args: argparse.Namespace, service: Service) -> int:
    return _sync_sources(args, service)


def _day(value: str) -> datetime:
    """A day (YYYY-MM-DD: its midnight in IST, the zone status shows) or an ISO 8601 timestamp (UTC
    when it names no zone)."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD) or an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=IST if len(value) == 10 else UTC)
    return when


def cmd_reprocess(args: argparse.Namespace, service: Service) -> int:
    if args.since and args.until and args.since >= args.until:
        out(f"--since ({args.since.isoformat()}) must be before --until ({args.until.isoformat()})")
        return 2
    args.dry_run, args.full = False, False
    return _sync_sources(args, service, reprocess=Reprocess(since=args.since, until=args.until))


def _sync_sources(args: argparse.Namespace, service: Service, *, reprocess: Reprocess | None = None) -> int:
    names = list(service.sources) if args.source == "all" else [args.source]
    sources = registry.configured_sources(service.settings, names=names, sources=service.sources)
    for name in names:
        if name not in sources:
            markers = registry.get_source(name, service.sources).markers
            out(f"{name}: not configured (set one of {', '.join(markers)}); skipped")
    if args.source != "all" and not sources:
        return 1
    if sources:
        # Every scope starts from the state store: a Redis outage is the one line main() prints, not an
        # error line per scope.
        service.state.ping()
        migrate(service.state)
    progress = SyncProgress(sys.stderr, tty=sys.stderr.isatty())
    failed = False
    unowned: dict[str, list[str]] = {}  # source -> its scopes, for a --scope it does not have
    found_anywhere = False
    for source in sources:
        try:
            connectors = service.connectors(source)
        except ConfigError as exc:
            out(f"{source}: {exc.state}: {mask_text(str(exc))}")
            failed = True
            continue
        known: list[str] = []
        owned = refused = False
        for connector in connectors:
            if reprocess is not None and connector.cannot_list_again:
                out(f"{source}: not reprocessed: {connector.cannot_list_again}")
                refused = True
                break
            scopes = None
            if args.scope:
                # A scope no connector has is refused before any run: a run would record a status row
                # for it (and report ok) although nothing exists there.
                try:
                    scope, names = _owned_scope(connector, args.scope)
                except (ConfigError, TransientError) as exc:
                    out(f"{source}: {ScopeState.for_error(exc)}: {root_cause_first(mask_text(str(exc)))}")
                    failed = refused = True
                    break
                known += names
                if scope is None:
                    continue
                owned, scopes = True, [scope]
            progress.watch(connector)
            summary = connector.sync_documents(scopes=scopes, dry_run=args.dry_run, full=args.full,
                                               reprocess=reprocess)
            for result in summary.scopes:
                if args.dry_run:
                    _print_decisions(result)
                out(_scope_line(result))
                failed = failed or result.state.failed  # exit code 1
        found_anywhere = found_anywhere or owned
        if args.scope and not owned and not refused:
            unowned[source] = known
    # `sync all --scope X` runs X where it exists; it fails only when no source has it.
    if unowned and not found_anywhere:
        for source, known in unowned.items():
            out(f"{source}: no scope {args.scope!r} (its scopes: {', '.join(known) or 'none'})")
        failed = True
    return 1 if failed else 0


# -- status ---------------------------------------------------------------------------------------

def cmd_status(args: argparse.Namespace, service: Service) -> int:
    data = {**status_data(service), "watchers": WatcherBoard(service.state).records()}
    if args.json:
        out(json.dumps(data, indent=2, sort_keys=True))
        return 0
    if data["watchers"]:
        rows = [(w["name"], w.get("state"), w.get("mode"), w.get("host"), format_time(w.get("since")),
                 format_time(w.get("last_event")), w.get("error")) for w in data["watchers"]]
        out(render_table(("WATCHER", "STATE", "MODE", "HOST", "SINCE", "LAST EVENT", "ERROR"), rows, max_width=48))
        out()
    if not data["sources"]:
        out("No source is configured and no run has been recorded yet.")
        return 0
    # Counts are the last run's; ITEMS is every source item recorded as ingested in the scope.
    # SCOPE is the name a person reads (a SharePoint library as "site / library"); --json has the id too.
    headers = ("SCOPE", "STATE", "LAST SUCCESS", "LAG", "ITEMS", "NEW", "DUP", "SKIP", "FAIL", "DEL", "LAST ERROR")
    for entry in data["sources"]:
        out(f"{entry['source']}  ·  {health_text(entry)}  ·  dead letters: {entry['dead_letters']}  ·  "
            f"held: {entry['held']}")
        rows = [(s["scope_name"], s["state"], format_time(s["last_success"]), format_duration(s["lag_seconds"]),
                 s["items"], *(s["counts"][k] for k in ("new", "duplicate", "skipped", "failed", "deleted")),
                 root_cause_first(s["last_error"] or "")) for s in entry["scopes"]]
        out(render_table(headers, rows, max_width=48) if rows else "  (no run recorded yet)")
        out(operator_views.today_line(entry["today"]))
        for sub in entry.get("subscriptions", []):
            out(f"change notifications for {sub.get('drive_name') or sub['drive']}: "
                f"subscription {sub['id'] or '(being created)'}, expires {format_time(sub['expires'])}")
        if args.long:
            for s in entry["scopes"]:
                if s["last_error"]:
                    out(f"error of {s['scope_name']}: {s['last_error']}")
        out()
    out("Times in IST (Asia/Kolkata); log files stamp UTC. `kmrl-connectors status --json` has every error whole.")
    return 0


def cmd_recent(args: argparse.Namespace, service: Service) -> int:
    from base.recent import RecentFilter, read_recent

    where = RecentFilter(source=args.source or "", language=args.language or "", department=args.department or "",
                         decision=args.decision or "")
    entries = read_recent(service.state.redis, service.state.keys, where=where, limit=max(1, args.limit))
    out(operator_views.recent_json(entries) if args.json else operator_views.recent_table(entries))
    return 0
# -- check ----------------------------------------------------------------------------------------

class CheckLines:
    """Prints one line per check and remembers whether any failed."""

    def __init__(self) -> None:
        self.failed = False

    def __call__(self, outcome: str, name: str, detail: str) -> None:
        self.failed = self.failed or outcome == "FAIL"
        out(f"{outcome:<4}  {name:<30} {mask_text(detail)}")

    def run(self, name: str, check: Callable[[], str]) -> bool:
        try:
            detail = check()
        except ConfigError as exc:  # auth_failed, config_error: what to fix, not a Python class name
            self("FAIL", name, f"{exc.state}: {root_cause_first(str(exc))}")
            return False
        except TransientError as exc:
            self("FAIL", name, f"unreachable: {root_cause_first(str(exc))}")
            return False
        except Exception as exc:  # noqa: BLE001 - every failure of a check is that check's answer
            self("FAIL", name, f"{type(exc).__name__}: {exc}")
            return False
        self("PASS", name, detail)
        return True


def _check_settings(settings: Settings, sources: Mapping[str, registry.Source]) -> str:
    import scheduler
    from base.cleanup import Retention
    from base.enrichment.rules import ContentRules
    from config.celery_config import celery_settings

    conf = celery_settings(settings, longest_hard_limit=scheduler.longest_hard_limit())
    table = scheduler.beat_schedule(settings, sources)
    Retention.from_settings(settings)
    if watch_enabled(settings):
        WatchConfig.from_settings(settings)
    rules = ContentRules.load(settings.content_rules_file or None)
    vt = conf["visibility_timeout"]
    if vt <= scheduler.longest_hard_limit():
        raise ConfigError(f"CELERY_VISIBILITY_TIMEOUT {vt} s is not above the longest hard limit "
                          f"{scheduler.longest_hard_limit()} s")
    return (f"{len(table)} beat entries, visibility timeout {vt} s, "
            f"{len(rules.exclude)} exclude / {len(rules.include)} include / {len(rules.hold)} hold content rules")


def _check_redis(url: str, ca_file: str = "") -> str:
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5, **redis_tls_kwargs(url, ca_file))
    try:
        client.ping()
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "?")
    except redis.ResponseError:
        policy = "?"  # CONFIG may be disabled on managed Redis
    finally:
        client.close()
    note = "" if policy in ("noeviction", "?") else f" (maxmemory-policy {policy}: use noeviction)"
    return f"{safe_url(url)} answered PING{note}"


def _check_hub(service: Service) -> str:
    return service.hub.check()


def _check_redis_roles(lines: CheckLines, settings: Settings) -> set[str]:
    """A PASS line per Redis role that answered, one FAIL line per server that did not (naming the
    roles it serves, once, however many databases of it are used); the roles that failed."""
    down: dict[tuple[str, str], list[tuple[str, str, BaseException]]] = {}
    failed: set[str] = set()
    for role, url in redis_role_urls(settings).items():
        if not url.startswith(("redis://", "rediss://", "unix://")):
            continue
        try:
            detail = _check_redis(url, settings.redis_ca_file)
        except REDIS_DOWN as exc:
            down.setdefault(_server(url), []).append((role, url, exc))
        except Exception as exc:  # noqa: BLE001 - every failure of a check is that check's answer
            lines("FAIL", f"redis {role}", f"{type(exc).__name__}: {exc}")
            failed.add(role)
        else:
            lines("PASS", f"redis {role}", detail)
    for group in down.values():
        roles = [role for role, _, _ in group]
        _, first_url, error = group[0]
        variables = " or ".join(dict.fromkeys(redis_variable(settings, role) for role in roles))
        if len(roles) == 1:
            lines("FAIL", f"redis {roles[0]}", redis_problem(first_url, variables, error))
        else:
            lines("FAIL", "redis", f"{redis_problem(_without_database(first_url), variables, error)} "
                                   f"(used for {', '.join(roles)})")
        failed.update(roles)
    return failed


def cmd_check(args: argparse.Namespace, service: Service) -> int:
    lines = CheckLines()
    settings = service.settings
    lines.run("settings", lambda: _check_settings(settings, service.sources))
    # The Hub client and the sources' checks use the state store (throttle pauses): without it they
    # are not checked, rather than failed for a fault that is Redis'.
    state_down = "state" in _check_redis_roles(lines, settings)
    not_checked = "not checked: it needs the state Redis, which does not answer"
    if state_down:
        lines("SKIP", "hub", not_checked)
    else:
        lines.run("hub", lambda: _check_hub(service))
    names = [args.source] if args.source else list(service.sources)
    configured = registry.configured_sources(settings, names=names, sources=service.sources)
    for name in names:
        if name not in configured:
            markers = ", ".join(registry.get_source(name, service.sources).markers)
            lines("FAIL" if args.source else "SKIP", name, f"not configured (set {markers})")
            continue
        if state_down:
            lines("SKIP", name, not_checked)
            continue
        try:
            connectors = service.connectors(name)
        except ConfigError as exc:
            lines("FAIL", name, f"{exc.state}: {exc}")
            continue
        for index, connector in enumerate(connectors):
            label = name if len(connectors) == 1 else f"{name}[{registry.instance_id(connector, index)}]"
            result = registry.probe(connector)
            lines("PASS" if result.ok else "FAIL", label, f"{result.state}: {result.detail}")
    return 1 if lines.failed else 0


# -- dead letters ---------------------------------------------------------------------------------

def _selected(service: Service, args: argparse.Namespace) -> list[DeadLetter]:
    entries = service.state.list_dead_letters(args.source)
    return [e for e in entries if e.id == args.id] if args.id else entries


def cmd_deadletter(args: argparse.Namespace, service: Service) -> int:
    if args.action == "drop" and not (args.id or args.source):
        out("deadletter drop needs a SOURCE (drops all of its entries) or --id ID")
        return 2
    if args.action == "show":
        wanted = args.id or args.source  # `deadletter show ID`: the id comes as the positional argument
        if not wanted:
            out("deadletter show needs an ID (see deadletter list)")
            return 2
        shown = [e for e in service.state.list_dead_letters() if e.id == wanted]
        out(operator_views.dead_letter_text(shown[0]) if shown else f"No dead letter with id {wanted} found.")
        return 0 if shown else 1
    entries = _selected(service, args)
    if args.action == "list":
        out(operator_views.render_dead_letters(entries))
        return 0
    if not entries:
        out(f"No dead letter{' with id ' + args.id if args.id else ''} found.")
        return 1 if args.id else 0
    if args.action == "drop":
        for entry in entries:
            service.state.remove_dead_letter(entry.connector, entry.id)
            if entry.bytes_path and os.path.isfile(entry.bytes_path):
                os.remove(entry.bytes_path)
            out(f"dropped {entry.id} ({entry.connector} {entry.scope} {entry.source_id})")
        return 0
    return _retry(entries, service)


def _retry(entries: Sequence[DeadLetter], service: Service) -> int:
    from base.replay import REPLAYED, RESOLVED, replay

    built: dict[str, BaseConnector | ConfigError] = {}
    failed = False
    for entry in entries:
        if entry.connector not in built:
            try:
                built[entry.connector] = service.connectors(entry.connector)[0]
            except ConfigError as exc:
                built[entry.connector] = exc
        connector = built[entry.connector]
        if isinstance(connector, ConfigError):
            out(f"{entry.id} {entry.connector} {entry.source_id}: kept: cannot build the connector: {connector}")
            failed = True
            continue
        try:
            outcome = replay(connector, entry)
        except (ConfigError, TransientError) as exc:
            out(f"{entry.id} {entry.connector} {entry.source_id}: kept; stopping: {mask_text(str(exc))}")
            return 1
        out(f"{entry.id} {entry.connector} {entry.source_id}: {outcome.result}: {outcome.detail}")
        failed = failed or outcome.result not in (REPLAYED, RESOLVED)
    return 1 if failed else 0


# -- held documents -------------------------------------------------------------------------------

def _kinds_text(kinds: Mapping[str, int]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items())) or "-"


def cmd_held(args: argparse.Namespace, service: Service) -> int:
    from base.held import RELEASED, RESOLVED, drop, release
    from utils.audit import AuditLog

    state = service.state
    if args.action == "list":
        rows = [(e.id, e.connector, e.scope, e.filename, _kinds_text(e.kinds), e.rule.removeprefix("rule:"),
                 format_duration(ago(e.held_at)), e.state) for e in state.list_held(args.target)]
        out(render_table(("ID", "SOURCE", "SCOPE", "FILENAME", "KINDS", "RULE", "AGE", "STATE"), rows, max_width=40)
            if rows else "No held documents.")
        return 0
    if not args.target:
        out(f"held {args.action} needs the ID of a held document (`kmrl-connectors held list` shows them)")
        return 2
    entry = state.get_held(args.target)
    if entry is None:
        out(f"No held document with id {args.target}.")
        return 1
    label = f"{entry.id} {entry.connector} {entry.source_id}"
    if args.action == "drop":
        drop(state, AuditLog(service.settings.audit_log), entry)
        out(f"{label}: dropped (bytes and entry deleted; the item stays done and is not fetched again)")
        return 0
    try:
        connector = service.connectors(entry.connector)[0]
    except ConfigError as exc:
        out(f"{label}: kept: cannot build the connector: {exc}")
        return 1
    try:
        outcome = release(connector, entry)
    except (ConfigError, TransientError) as exc:
        out(f"{label}: kept: {mask_text(str(exc))}")
        return 1
    out(f"{label}: {outcome.result}: {outcome.detail}")
    return 0 if outcome.result in (RELEASED, RESOLVED) else 1


# -- processes ------------------------------------------------------------------------------------

def cmd_web(args: argparse.Namespace, service: Service) -> int:
    from web.__main__ import serve

    serve(service.settings, public_host=args.host, public_port=args.port)  # and the internal listener
    return 0


def run_children(args: argparse.Namespace) -> list[Child]:
    """What ``run`` starts: a worker with an embedded beat, the web app (both listeners, under
    gunicorn as in production) and the watchers, less what ``--without`` names."""
    python = sys.executable
    children = [Child("worker", [python, "-m", "celery", "-A", "scheduler", "worker", "--beat",
                                 f"--loglevel={args.loglevel}", f"--concurrency={args.concurrency}"]),
                Child("web", [python, "-m", "gunicorn", "-c", "python:web.gunicorn_conf", "web.app:create_app()"]),
                Child("watcher", [python, "-m", "watchers"])]
    return [child for child in children if child.name not in args.without]


def cmd_run(args: argparse.Namespace, service: Service) -> int:
    unknown = set(args.without) - {"web", "watcher"}
    if unknown:
        out(f"run: --without takes web and watcher, not {', '.join(sorted(unknown))}")
        return 2
    children = run_children(args)
    out("starting: " + ", ".join(child.name for child in children) + " (Ctrl-C or SIGTERM stops them all)")
    return Supervisor(children).run()


def cmd_watch(args: argparse.Namespace, service: Service) -> int:
    from watchers.__main__ import run

    return run(service)


def _probe_watcher(settings: Settings) -> tuple[bool, str]:
    from watchers.__main__ import probe

    return probe(settings)


def _probe_worker(settings: Settings) -> tuple[bool, str]:
    import scheduler

    path = scheduler.liveness_file(settings)
    try:
        age = time.time() - os.path.getmtime(path)
    except FileNotFoundError:
        return False, f"no liveness file at {path}"
    return age <= LIVENESS_MAX_AGE, f"liveness file touched {age:.0f} s ago"


def _probe_beat(settings: Settings) -> tuple[bool, str]:
    client = redis.Redis.from_url(settings.redbeat_redis_url, socket_connect_timeout=3, socket_timeout=5,
                                  **redis_tls_kwargs(settings.redbeat_redis_url, settings.redis_ca_file))
    try:
        held = bool(client.exists("redbeat::lock"))
    except REDIS_DOWN as exc:
        return False, redis_problem(settings.redbeat_redis_url, redis_variable(settings, "redbeat"), exc)
    except redis.RedisError as exc:
        return False, f"redbeat Redis: {type(exc).__name__}: {mask_text(str(exc))}"
    finally:
        client.close()
    return held, "a beat holds the RedBeat lock" if held else "no beat holds the RedBeat lock"


def _probe_web(settings: Settings) -> tuple[bool, str]:
    from web.listeners import Listeners

    url = f"http://{Listeners.from_settings(settings).internal_probe_address()}/healthz"  # the internal listener
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200, f"{url} answered {response.status}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{url}: {exc}"


def cmd_probe(args: argparse.Namespace, service: Service) -> int:
    role = args.role or service.settings.env("KMRL_ROLE", "worker")
    probes = {"worker": _probe_worker, "beat": _probe_beat, "web": _probe_web, "watcher": _probe_watcher}
    if role not in probes:
        out(f"unknown role {role!r}: worker, beat, watcher or web")
        return 2
    ok, detail = probes[role](service.settings)
    out(f"{'PASS' if ok else 'FAIL'}  {role}  {detail}")
    return 0 if ok else 1


def warn_without_env_file(settings: Settings) -> None:
    """One line on stderr when no .env file was found where one was looked for (``Settings.env_file``)."""
    if settings.env_file.note:
        print(f"warning: {settings.env_file.note}", file=sys.stderr, flush=True)


# -- the parser -----------------------------------------------------------------------------------

def cmd_migrate(args: argparse.Namespace, service: Service) -> int:
    """Brings the state in Redis to this release's schema version (what a worker does as it starts)."""
    result = migrate(service.state)
    if result.migrated:
        kinds = ", ".join(f"{kind} {count}" for kind, count in result.kinds.items()) or "no keys"
        out(f"state schema: migrated from version {result.before} to {result.after} ({kinds})")
    else:
        out(f"state schema: version {result.after}, nothing to migrate")
    return 0


def _library_labels(connector: Any) -> dict[str, str]:
    """Drive id -> 'site / library' for the connector's site (one Graph call); {} when it cannot be read."""
    try:
        with connector.connect(connector.default_credentials()):
            return dict(connector.library_labels(connector.site()))
    except Exception:  # noqa: BLE001 - a name is a courtesy: the drive id still identifies the library
        return {}


def cmd_subscriptions(args: argparse.Namespace, service: Service) -> int:
    """Runs the Graph subscriptions check in this process (what ``kmrl.subscriptions`` does) and shows
    each drive's outcome and expiry; exits 2 when change notifications are off or unusable."""
    from connectors import sharepoint_subscriptions as push
    from connectors.sharepoint_connector import SharePointConnector

    settings = push.PushSettings.from_settings(service.settings)
    if not settings.enabled:
        out("Graph change notifications are off (GRAPH_NOTIFICATION_URL is not set): SharePoint is polled.")
        return 2
    instances = [(registry.instance_id(c, i), c) for i, c in enumerate(service.connectors("sharepoint"))
                 if isinstance(c, SharePointConnector)]
    results = push.ensure_subscriptions(instances, service.state, settings, action=args.action,
                                        wait=push.LEASE_WAIT)
    store = push.SubscriptionStore(service.state)
    rows = []
    for instance, outcomes in results.items():
        labels = _library_labels(dict(instances)[instance])
        for drive, outcome in outcomes.items():
            record = store.get(drive)
            library = labels.get(drive, drive)
            rows.append((library, outcome, record.id if record else "",
                         format_time(record.expires if record else None), drive))
    out(render_table(("LIBRARY", "OUTCOME", "SUBSCRIPTION", "EXPIRES", "DRIVE ID"), rows, max_width=48)
        if rows else "No SharePoint library to subscribe (or another process is checking them now).")
    return 0
#: What ``kmrl-connectors --help`` says the tool is (plain text: argparse shows it as written).
DESCRIPTION = "Run, inspect and repair KMRL Connectors from a shell."
#: Examples under ``--help``.
EPILOG = """examples:
  kmrl-connectors check                          prove every setting and credential
  kmrl-connectors status                         each scope: state, last success, lag, counts, last error
  kmrl-connectors sync email --dry-run           what a sync would ingest, skip or delete
  kmrl-connectors sync sharepoint --scope "sites/operations / Documents"
  kmrl-connectors deadletter list                failed documents and why
  kmrl-connectors deadletter retry --id ID       send one again from its kept bytes

Exit codes: 0 all asked for worked; 1 something failed (a check, a run, a Redis that does not
answer); 2 a usage or settings error. Output for people goes to stdout; logs go to stderr (warnings,
or everything with -v) and to LOG_FILE (JSON lines, UTC times; status shows IST)."""


def version() -> str:
    """This installation's version (the package's metadata; ``unknown`` when it is not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("kmrl-connectors")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kmrl-connectors", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show INFO logs on the console")
    commands = parser.add_subparsers(dest="command", required=True)

    sync = commands.add_parser("sync", help="run a sync now, in this process")
    sync.add_argument("source", help="a source name, or 'all' for every configured source")
    sync.add_argument("--scope", help="only this scope: a folder, a site, the inbox, a library by its id or "
                      "as status names it (\"sites/operations / Documents\")")
    sync.add_argument("--dry-run", action="store_true", help="list what would happen; change nothing")
    sync.add_argument("--full", action="store_true", help="ignore cursors and re-read everything (dedup still holds)")
    sync.set_defaults(handler=cmd_sync)

    again = commands.add_parser("reprocess", help="read ingested documents again; send the Hub their text and "
                                "new language, department and extraction")
    again.add_argument("source", help="a source name, or 'all' for every configured source")
    again.add_argument("--scope", help="only this scope (folder, drive id, site)")
    again.add_argument("--since", type=_day, help="only documents dated (modified) on or after this day (IST)")
    again.add_argument("--until", type=_day, help="only documents dated before this day (IST)")
    again.set_defaults(handler=cmd_reprocess)

    status = commands.add_parser("status", help="each connector's scopes: state, last success, lag, counts")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--long", action="store_true", help="also print each scope's last error in full")
    status.set_defaults(handler=cmd_status)

    recent = commands.add_parser("recent", help="the documents settled lately: file, language, department, decision")
    recent.add_argument("--source", help="only this source's documents")
    recent.add_argument("--language", help="only documents in this language (e.g. ml, en, mixed)")
    recent.add_argument("--department", help="only documents of this department (e.g. Safety)")
    recent.add_argument("--decision", choices=DECISIONS, help="only documents with this outcome")
    recent.add_argument("--limit", type=int, default=50, help="at most this many, newest first (default 50)")
    recent.add_argument("--json", action="store_true", help="machine-readable output (every field)")
    recent.set_defaults(handler=cmd_recent)

    check = commands.add_parser("check", help="validate settings and prove every credential with a real call")
    check.add_argument("source", nargs="?", help="only this source (it must be configured)")
    check.set_defaults(handler=cmd_check)

    dead = commands.add_parser("deadletter", help="list, replay or drop failed documents")
    dead.add_argument("action", choices=("list", "show", "retry", "drop"))
    dead.add_argument("source", nargs="?", help="only this source's entries (show: the entry's id)")
    dead.add_argument("--id", help="only the entry with this id")
    dead.set_defaults(handler=cmd_deadletter)

    held = commands.add_parser("held", help="list, release or drop documents a [[hold]] content rule kept back")
    held.add_argument("action", choices=("list", "release", "drop"))
    held.add_argument("target", nargs="?", metavar="SOURCE|ID", help="list: only this source's; release, drop: the id")
    held.set_defaults(handler=cmd_held)

    web = commands.add_parser("web", help="serve the webhook, probes and /metrics (development server; "
                              "gunicorn in production)")
    web.add_argument("--host", default="127.0.0.1", help="the public listener's address")
    web.add_argument("--port", type=int, default=None, help="the public listener's port (default WEB_PUBLIC_PORT)")
    web.set_defaults(handler=cmd_web)

    run = commands.add_parser("run", help="everything on one machine: a worker with an embedded beat, the web app "
                              "and the watchers")
    run.add_argument("--concurrency", type=int, default=2)
    run.add_argument("--loglevel", default="info")
    run.add_argument("--without", type=lambda v: [p for p in v.split(",") if p], default=[],
                     help="leave out these, comma-separated: web, watcher")
    run.set_defaults(handler=cmd_run)

    subs = commands.add_parser("subscriptions", help="create, renew or recreate the Graph change-notification "
                                                     "subscriptions of the SharePoint libraries now")
    subs.add_argument("--action", choices=("check", "renew", "recreate"), default="check",
                      help="check: create missing, renew near expiry (default); renew / recreate: every one now")
    subs.set_defaults(handler=cmd_subscriptions)

    watch = commands.add_parser("watch", help="watch the mail accounts and sync a folder as mail arrives in it")
    watch.set_defaults(handler=cmd_watch)

    migrate_cmd = commands.add_parser("migrate", help="bring the state in Redis to this release's schema version")
    migrate_cmd.set_defaults(handler=cmd_migrate)

    probe = commands.add_parser("probe", help="container health probe (role from KMRL_ROLE)")
    probe.add_argument("role", nargs="?", choices=("worker", "beat", "web", "watcher"))
    probe.set_defaults(handler=cmd_probe)
    return parser


def main(argv: Sequence[str] | None = None, *, sources: Mapping[str, registry.Source] = registry.SOURCES) -> int:
    """Runs the command ``argv`` (default: the process's arguments) against ``sources`` (default: the
    service's table; tests hand one with fake sources); returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        out(f"settings: {exc}")
        return 2
    quiet = args.command in ("sync", "status", "recent", "check", "deadletter", "held", "probe",
                             "migrate") and not args.verbose
    # The log file gets LOG_LEVEL's lines whatever the console shows: a manual sync leaves its run lines there.
    configure_logging(log_file=settings.log_file, level=settings.log_level, console_format=settings.log_format,
                      console_level="WARNING" if quiet else None)
    warn_without_env_file(settings)
    try:
        return int(args.handler(args, Service(settings, sources=sources)))
    except BrokenPipeError:
        # The reader went away (`status | head`): what is left unprinted has nobody to read it. stdout is
        # pointed at /dev/null so the interpreter's last flush does not fail again (Python's advice).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except ConfigError as exc:
        out(f"{exc.state}: {mask_text(str(exc))}")
        return 2
    except REDIS_DOWN as exc:
        # status, deadletter and sync start from the state store: its outage is one line, not a traceback.
        out(redis_problem(settings.state_redis_url, redis_variable(settings, "state"), exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
