"""The watcher of one mail account: a lease, its connections, and a sync asked for on new mail.

``AccountWatcher.run`` loops until stopped:

1. take the account's lease (``lock:watcher:{name}``, SET NX PX, renewed every third of its TTL);
   while another process holds it, stand by (``standby``) and try again every third of the TTL,
   so that process's death hands the account over within one TTL;
2. connect (``connecting``): the first connection logs in (connectors/email_imap.py: TLS
   verified, the password only to the account's server) and reads the server's capabilities;
   ``plan_channels`` then decides the connections: NOTIFY on that one connection when the server
   offers it, else IDLE on the folders that matter most and polling for the rest, at most
   ``max_connections`` connections in all;
3. watch (``connected``): each connection runs in its own thread (imap_channels.py); mail
   arriving in folder F asks for the sync of F's scope (``trigger(scope, reason)``, which is
   ``scheduler.request_sync`` in the service); the first sighting of each folder on a connection
   is compared with the folder's cursor, so mail that came while no connection was up is asked
   for at once;
4. any failure (a dropped connection, a server restart, a trigger that could not be sent) closes
   every connection of the account and waits (``backoff``: exponential, with jitter, up to
   ``backoff_max`` seconds) before step 2; a lost lease goes back to step 1.

Idle cost: a quiet account costs one blocked thread per connection and one wake-up per lease
renewal; connections wake only for their keepalive (NOOP or IDLE re-issue) or their poll.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import redis

from base.state import Lease, StateStore
from config.settings import Settings
from connectors.email_connector import EmailConnector
from connectors.email_imap import EmailAccount, ImapSession, classified
from utils.backoff import Backoff
from utils.errors import AuthError, ConfigError, LeaseLostError, TransientError
from utils.logging import get_logger, mask_text
from watchers.board import BACKOFF, CONNECTED, CONNECTING, STANDBY, WatcherBoard, WatcherRecord
from watchers.imap_channels import IDLE, NOTIFY, POLL, Channel, IdleChannel, NotifyChannel, PollChannel
from watchers.imap_wire import ImapWire

log = get_logger(__name__)

#: EMAIL_WATCH_MODE: ``auto`` (NOTIFY when offered, else IDLE and polling), ``idle`` (IDLE and
#: polling even when NOTIFY is offered), ``poll`` (polling only).
MODES = ("auto", "idle", "poll")
#: RFC 2177: a server may end an IDLE after 30 minutes; the keepalive may not exceed 29.
MAX_KEEPALIVE = 29 * 60  # seconds

#: ``trigger(scope, reason)``: asks for one sync of the scope; raises when the request could not be made.
Trigger = Callable[[str, str], object]


@dataclass(frozen=True)
class WatchConfig:
    """How email watchers watch (env.example, "Email watcher").

    mode: EMAIL_WATCH_MODE, one of ``MODES`` (default auto).
    max_connections: EMAIL_WATCH_MAX_CONNECTIONS, connections per account at most (default 5).
    poll_seconds: EMAIL_WATCH_POLL_SECONDS, seconds between STATUS rounds of polled folders (default 60).
    idle_folders: EMAIL_IDLE_FOLDERS, the folders that get IDLE when the server has no NOTIFY, in
        order of preference (default: the account's folders in their order).
    keepalive: EMAIL_WATCH_KEEPALIVE_SECONDS, seconds a quiet connection waits before proving it is
        alive (NOOP under NOTIFY, IDLE re-issued) (default 300, at most 1740).
    lease_seconds: EMAIL_WATCH_LEASE_SECONDS, the account lease's TTL (default 30): a standby
        watcher takes over within this long after the holder dies.
    backoff_base / backoff_max: the first and the longest wait before reconnecting, seconds
        (defaults 1 and EMAIL_WATCH_BACKOFF_MAX_SECONDS=300).
    timeout: seconds a command may wait for its answer (default the connector's EMAIL_TIMEOUT).
    """

    mode: str = "auto"
    max_connections: int = 5
    poll_seconds: float = 60.0
    idle_folders: tuple[str, ...] = ()
    keepalive: float = 300.0
    lease_seconds: float = 30.0
    backoff_base: float = 1.0
    backoff_max: float = 300.0
    timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout: float = 30.0) -> WatchConfig:
        """The EMAIL_WATCH_* settings; SettingError (a ConfigError) naming a variable that cannot be used."""
        read = settings.reader
        return cls(
            mode=read.choice("EMAIL_WATCH_MODE", "auto", MODES),
            max_connections=read.whole("EMAIL_WATCH_MAX_CONNECTIONS", 5, what="a whole number of connections",
                                       minimum=1),
            poll_seconds=read.duration("EMAIL_WATCH_POLL_SECONDS", 60.0, unit="seconds", above=0),
            idle_folders=tuple(settings.env_list("EMAIL_IDLE_FOLDERS")),
            keepalive=read.duration("EMAIL_WATCH_KEEPALIVE_SECONDS", 300.0, unit="seconds", above=0,
                                    maximum=MAX_KEEPALIVE),
            lease_seconds=read.duration("EMAIL_WATCH_LEASE_SECONDS", 30.0, unit="seconds", minimum=1),
            backoff_max=read.duration("EMAIL_WATCH_BACKOFF_MAX_SECONDS", 300.0, unit="seconds", minimum=1),
            timeout=timeout,
        )


def watch_enabled(settings: Settings) -> bool:
    """EMAIL_WATCH (default 1): whether the email watcher runs at all."""
    return settings.env_bool("EMAIL_WATCH", True)


@dataclass(frozen=True)
class ChannelPlan:
    """One connection: how it watches (``NOTIFY``, ``IDLE`` or ``POLL``) and which folders."""

    kind: str
    folders: tuple[str, ...]


def plan_channels(folders: Sequence[str], capabilities: Sequence[str], config: WatchConfig, *,
                  missing: Sequence[str] = ()) -> list[ChannelPlan]:
    """The connections that watch ``folders`` on a server with ``capabilities`` (upper case):

    - NOTIFY offered (and mode ``auto``): one NOTIFY connection for every folder;
    - else IDLE offered (mode ``auto`` or ``idle``): IDLE on each folder when they all fit in
      ``max_connections`` and EMAIL_IDLE_FOLDERS does not choose; otherwise IDLE on the chosen
      folders (EMAIL_IDLE_FOLDERS in its order, else the account's first folders), at most
      ``max_connections - 1`` of them, and one polling connection for the rest;
    - else (or mode ``poll``): one polling connection for every folder.

    ``missing`` folders (not on the server) never get an IDLE, which would fail: they are polled, so
    a folder created later is seen, and the other folders are watched meanwhile.
    """
    caps = {c.upper() for c in capabilities}
    folders = list(folders)
    if config.mode == "auto" and "NOTIFY" in caps:
        return [ChannelPlan(NOTIFY, tuple(folders))]
    if config.mode == "poll" or "IDLE" not in caps or (config.max_connections < 2 and len(folders) > 1):
        return [ChannelPlan(POLL, tuple(folders))]
    chosen = [f for f in config.idle_folders if f in folders] if config.idle_folders else folders
    chosen = [f for f in chosen if f not in missing]
    if len(chosen) == len(folders) and len(folders) <= config.max_connections:
        return [ChannelPlan(IDLE, (f,)) for f in folders]
    idle = chosen[:config.max_connections - 1]
    rest = tuple(f for f in folders if f not in idle)
    plans = [ChannelPlan(IDLE, (f,)) for f in idle]
    if rest:
        plans.append(ChannelPlan(POLL, rest))
    return plans


def process_identity() -> str:
    """``hostname:pid``: which process holds a lease and writes a record."""
    return f"{socket.gethostname()}:{os.getpid()}"


def cursor_behind(cursor: object, uidvalidity: int | None, uidnext: int | None) -> bool:
    """Whether a folder at (``uidvalidity``, ``uidnext``) holds mail past the email connector's
    ``cursor`` ({"uidvalidity", "last_uid"}; connectors/email_connector.py). Unknown values count as
    behind: asking for a sync that finds nothing costs one EXAMINE."""
    if uidvalidity is None or uidnext is None:
        return True
    if not isinstance(cursor, dict):
        return uidnext > 1  # never synced: behind when the folder ever held mail
    if cursor.get("uidvalidity") != uidvalidity:
        return True
    return uidnext > int(cursor.get("last_uid") or 0) + 1


@dataclass
class _Session:
    """The connections of one connect, their threads, and the first failure among them."""

    channels: list[Channel] = field(default_factory=list)
    logins: list[ImapSession] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    failure: BaseException | None = None

    def fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        self.done.set()

    def close(self) -> None:
        for channel in self.channels:
            channel.close()
        for thread in self.threads:
            thread.join(timeout=5)
        for login in self.logins:
            login.close(logout=False)


class AccountWatcher:
    """Watches one account's folders and asks for a folder's sync when mail arrives in it.

    account / password: the mailbox and its password (from ``EmailConnector.logins``).
    state: the state store (lease, cursors, the published record and gauge).
    trigger: ``trigger(scope, reason)``, asks for the scope's sync (``scheduler.request_sync``).
    config: a ``WatchConfig``.
    identity: who this watcher is in the lease and the record (default ``hostname:pid``).
    """

    source = "email"

    def __init__(self, account: EmailAccount, password: str, *, state: StateStore, trigger: Trigger,
                 config: WatchConfig, identity: str | None = None) -> None:
        self.account = account
        self.password = password
        self.state = state
        self.trigger = trigger
        self.config = config
        self.identity = identity or process_identity()
        self.name = f"{self.source}:{account.user}@{account.host}"
        self.board = WatcherBoard(state)
        self.lease = Lease(state, state.keys.watcher_lease(self.name), config.lease_seconds)
        self.backoff = Backoff(base=config.backoff_base, cap=max(config.backoff_base, config.backoff_max))
        self.record = WatcherRecord(name=self.name, state=STANDBY, host=self.identity, since=time.time())
        self._marks: dict[str, tuple[int | None, int | None]] = {}
        self._marks_lock = threading.Lock()
        self._session: _Session | None = None
        #: Syncs asked for, and connects made, by this watcher (for tests and logs).
        self.requests = 0
        self.connects = 0

    # -- what channels report -------------------------------------------------------------------

    def scope(self, folder: str) -> str:
        return EmailConnector.scope_name(self.account, folder)

    def sighting(self, folder: str, uidvalidity: int | None, uidnext: int | None, *, reason: str) -> None:
        """A folder's (UIDVALIDITY, UIDNEXT) from the server: new mail when UIDNEXT grew or
        UIDVALIDITY changed since the last sighting; on the first, when the cursor is behind. A
        STATUS may carry only what changed (Dovecot leaves out an unchanged UIDVALIDITY): a missing
        UIDVALIDITY is the last one seen; a missing UIDNEXT counts as new mail (asking costs one
        EXAMINE; missing mail would cost a tick)."""
        with self._marks_lock:
            previous = self._marks.get(folder)
            if previous is not None and uidvalidity is None:
                uidvalidity = previous[0]
            self._marks[folder] = (uidvalidity, uidnext if uidnext is not None else previous and previous[1])
        if previous is None:
            new = cursor_behind(self.state.get_cursor(self.source, self.scope(folder)), uidvalidity, uidnext)
        else:
            new = (uidnext is None or uidvalidity != previous[0]
                   or (previous[1] is None or uidnext > previous[1]))
        if new:
            self.arrived(folder, reason=reason)

    def arrived(self, folder: str, *, reason: str) -> None:
        """Asks for the folder's sync; a request that cannot be made fails the connection (the
        reconnect compares every folder with its cursor again, so the change is not lost)."""
        scope = self.scope(folder)
        try:
            sent = self.trigger(scope, reason)
        except Exception as exc:  # the broker or Redis: whatever it raised, the change must be asked again
            raise TransientError(f"asking for the sync of {scope} failed: {type(exc).__name__}: {exc}") from exc
        self.requests += 1
        self.record.last_event = time.time()
        log.info("watcher_change_seen", watcher=self.name, folder=folder, scope=scope, reason=reason,
                 sent=bool(sent))
        self._publish()

    # -- the loop ---------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Watches until ``stop`` is set; gives the lease back then. Never raises for the account's
        own failures (they are published and retried)."""
        try:
            while not stop.is_set():
                if not self.lease.held and not self._take_lease():
                    self._set(STANDBY, mode="", error="")
                    stop.wait(self.lease.ttl_ms / 3000)
                    continue
                self._watch_once(stop)
        finally:
            self._close_session()
            if self.lease.held:
                self.board.disconnected(self.name)
                self.record.state = STANDBY
                self.lease.release()
            log.info("watcher_stopped", watcher=self.name)

    def _take_lease(self) -> bool:
        try:
            taken = self.lease.acquire(heartbeat=False)
        except redis.RedisError as exc:
            log.warning("watcher_lease_unreachable", watcher=self.name, error=str(exc))
            return False
        if taken:
            log.info("watcher_lease_taken", watcher=self.name, host=self.identity)
        return taken

    def _watch_once(self, stop: threading.Event) -> None:
        """One connect, watch until failure or stop, and the backoff after a failure."""
        self._set(CONNECTING, error=self.record.error)
        try:
            session = self._connect()
            self._session = session
            if stop.is_set():
                return
            self.backoff.reset()
            self._set(CONNECTED, mode=self._mode(session), error="", connections=len(session.channels))
            log.info("watcher_connected", watcher=self.name, mode=self.record.mode, connections=len(session.channels),
                     folders=len(self.account.folders))
            for channel in session.channels:
                thread = threading.Thread(target=self._run_channel, args=(channel, session),
                                          name=f"watch-{channel.kind}-{self.account.user}", daemon=True)
                session.threads.append(thread)
                thread.start()
            renew_every = self.lease.ttl_ms / 3000
            while not stop.is_set() and not session.done.wait(renew_every):
                self.lease.renew()
                self._publish()
            if stop.is_set():
                return
            raise session.failure or TransientError("a connection ended")
        except LeaseLostError:
            log.warning("watcher_lease_lost", watcher=self.name)
            self._close_session()
            self.lease.held = False
            self.record.state = STANDBY
        except (TransientError, ConfigError, redis.RedisError, OSError) as exc:
            self._close_session()
            self._wait_after(exc, stop)
        finally:
            if stop.is_set():
                self._close_session()

    def _wait_after(self, exc: BaseException, stop: threading.Event) -> None:
        wait = self.backoff.next_wait()
        error = mask_text(str(exc))[:300]
        kind = "auth" if isinstance(exc, AuthError) else "config" if isinstance(exc, ConfigError) else "transient"
        log.warning("watcher_backoff", watcher=self.name, error=error, kind=kind, wait_seconds=round(wait, 2),
                    failures=self.backoff.failures)
        self._set(BACKOFF, error=error)
        deadline = time.monotonic() + wait
        renew_every = self.lease.ttl_ms / 3000
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if stop.wait(min(remaining, renew_every)):
                return
            try:
                self.lease.renew()  # the account stays ours while we wait to reconnect
                self._publish()
            except LeaseLostError:
                self.lease.held = False
                return
            except redis.RedisError:
                continue

    def _connect(self) -> _Session:
        """Opens the connections of the plan; every one is set up before the account counts as connected."""
        session = _Session()
        self._session = session
        with self._marks_lock:
            self._marks = {}
        self.connects += 1
        first = ImapSession(self.account, self.password, timeout=self.config.timeout)
        try:
            with classified(self.account, "reading capabilities"):
                capabilities = [c.decode().upper() if isinstance(c, bytes) else str(c).upper()
                                for c in first.client.capabilities()]
            with classified(self.account, "listing folders"):
                present = {str(name) for _flags, _sep, name in first.client.list_folders()}
        except BaseException:
            first.close(logout=False)
            raise
        missing = [f for f in self.account.folders if f not in present and f.upper() != "INBOX"]
        if missing:
            # The folder's sync reports it as a config error; the watcher keeps watching the others.
            log.warning("watcher_folders_missing", watcher=self.name, folders=missing)
        plans = plan_channels(self.account.folders, capabilities, self.config, missing=missing)
        session.logins.append(first)
        try:
            for index, plan in enumerate(plans):
                if index:
                    session.logins.append(ImapSession(self.account, self.password, timeout=self.config.timeout))
                channel = self._channel(plan, ImapWire.take_over(session.logins[-1]))
                session.channels.append(channel)
                channel.start()
        except BaseException:
            session.close()
            raise
        return session

    def _channel(self, plan: ChannelPlan, wire: ImapWire) -> Channel:
        options = {"timeout": self.config.timeout, "keepalive": self.config.keepalive}
        if plan.kind == NOTIFY:
            return NotifyChannel(wire, plan.folders, self, **options)
        if plan.kind == IDLE:
            return IdleChannel(wire, plan.folders, self, **options)
        return PollChannel(wire, plan.folders, self, poll_seconds=self.config.poll_seconds, **options)

    @staticmethod
    def _mode(session: _Session) -> str:
        kinds = {c.kind for c in session.channels}
        return NOTIFY if NOTIFY in kinds else IDLE if IDLE in kinds else POLL

    def _run_channel(self, channel: Channel, session: _Session) -> None:
        try:
            channel.run()
        except BaseException as exc:  # noqa: BLE001 - any failure ends the session; the loop reconnects
            session.fail(exc)
            return
        session.fail(TransientError("a connection ended"))

    def _close_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()

    # -- the published record ----------------------------------------------------------------------

    def _set(self, state: str, *, mode: str | None = None, error: str | None = None,
             connections: int | None = None) -> None:
        if state != self.record.state:
            self.record.since = time.time()
        self.record.state = state
        if mode is not None:
            self.record.mode = mode
        if error is not None:
            self.record.error = error
        if connections is not None or state != CONNECTED:
            self.record.connections = connections or 0
        self._publish()

    def _publish(self) -> None:
        try:
            self.board.publish(self.record, ttl=3 * self.config.lease_seconds, holder=self.lease.held)
        except redis.RedisError as exc:
            log.warning("watcher_record_unwritten", watcher=self.name, error=str(exc))

    # -- for tests and shutdown ---------------------------------------------------------------------

    @property
    def channels(self) -> list[Channel]:
        session = self._session
        return list(session.channels) if session is not None else []


def start_watchers(watchers: Sequence[AccountWatcher], stop: threading.Event) -> list[threading.Thread]:
    """Runs each watcher in its own thread until ``stop`` is set; returns the threads."""
    threads = []
    for watcher in watchers:
        thread = threading.Thread(target=watcher.run, args=(stop,), name=f"watcher-{watcher.name}", daemon=True)
        thread.start()
        threads.append(thread)
    return threads
