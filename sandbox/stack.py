"""The whole simulated world around the service, started and stopped as one: for the demo, the smoke
tests and the end-to-end test.

``Stack`` starts, on loopback ports, in this process:

- the Knowledge Hub simulator (sandbox/hub.py), keeping what it receives under ``root/hub``;
- Microsoft Graph with Entra ID over TLS (sandbox/graph.py), Maximo's OSLC API over TLS
  (sandbox/maximo.py), the WhatsApp Cloud API (sandbox/whatsapp.py) and our own web app
  (web/app.py), to which the simulated Meta webhook sender posts signed notifications;
- a private Dovecot (sandbox/dovecot.py) when Dovecot is installed; otherwise email is listed in
  ``skipped`` with the reason, and the service is given no EMAIL_* settings.

``seed(samples)`` puts a ``SampleSet`` (sandbox/samples.py) into the sources; ``env()`` gives the
environment variables with which the real service (a Celery worker, beat, the CLI, or a connector
built in-process) talks to all of it. ``stop()`` stops everything the stack started, in reverse
order, and is safe to call twice.

``ServiceProcess`` runs one service command (a Celery worker, beat) in its own session so that
stopping it ends every process it forked; ``RedisServer`` is a private redis-server on a free port.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import redis

from base.keys import DEFAULT_PREFIX
from config.settings import Settings, redis_db_url
from sandbox.dovecot import DovecotServer, dovecot_binary
from sandbox.graph import GraphSimulator
from sandbox.hub import HubSimulator
from sandbox.maximo import MaximoSimulator
from sandbox.samples import DEMO_MAILBOX, MAXIMO_SITES, SampleSet
from sandbox.servers import ServerThread, free_port
from sandbox.tls import CertAuthority
from sandbox.whatsapp import WebhookSender, WhatsAppCloudSimulator

#: Every source the stack can simulate, in the service's table order.
ALL_SOURCES = ("email", "whatsapp", "maximo", "sharepoint")
#: Prefixes of the variables the service reads: a child process gets ours, never the caller's.
SERVICE_VARIABLE_PREFIXES = ("EMAIL_", "MAXIMO_", "SHAREPOINT_", "WHATSAPP_", "HUB_", "CELERY_", "REDBEAT_",
                             "STATE_REDIS_", "GRAPH_", "ENTRA_", "KMRL_", "SPOOL_", "DEADLETTER_", "HELD_", "LOG_",
                             "AUDIT_", "REDIS_URL", "CONTENT_RULES_", "DEPARTMENTS_", "MAX_DOCUMENT_", "LOCK_TTL_",
                             "CURSOR_", "HEALTH_CHECK_", "CLEANUP_", "SCOPE_CACHE_", "BEAT_", "TASK_", "WORKER_",
                             "LANGUAGE_")
#: Seconds a service process gets to stop after SIGTERM before its whole session is killed.
STOP_GRACE = 20.0
#: Seconds to wait for a private redis-server to answer.
REDIS_START_TIMEOUT = 10.0


@dataclass(frozen=True)
class RedisLayout:
    """Where the service keeps its broker, results, beat schedule and state.

    ``service(url)`` is the service's own layout (databases 0, 1, 2, 3 of ``url``'s server);
    ``tests(url)`` the end-to-end test's (5, 6, 7, 8: tests/conftest.py).
    """

    broker_url: str
    result_backend: str
    redbeat_url: str
    state_url: str

    @classmethod
    def service(cls, server_url: str) -> RedisLayout:
        return cls(*(redis_db_url(server_url, db) for db in (0, 1, 2, 3)))

    @classmethod
    def tests(cls, server_url: str) -> RedisLayout:
        return cls(*(redis_db_url(server_url, db) for db in (5, 6, 7, 8)))

    def urls(self) -> tuple[str, ...]:
        return self.broker_url, self.result_backend, self.redbeat_url, self.state_url

    def env(self) -> dict[str, str]:
        return {"REDIS_URL": self.state_url, "CELERY_BROKER_URL": self.broker_url,
                "CELERY_RESULT_BACKEND": self.result_backend, "REDBEAT_REDIS_URL": self.redbeat_url,
                "STATE_REDIS_URL": self.state_url}


@dataclass
class Simulators:
    """What a running stack serves (None where the source is not simulated)."""

    hub: HubSimulator
    hub_url: str
    graph: GraphSimulator | None = None
    maximo: MaximoSimulator | None = None
    maximo_url: str = ""
    whatsapp: WhatsAppCloudSimulator | None = None
    whatsapp_url: str = ""
    webhook_url: str = ""
    dovecot: DovecotServer | None = None


@dataclass
class Stack:
    """The simulators of ``sources``, the Hub and (for WhatsApp) the web app; see the module docstring.

    root: a folder for everything the stack and the service write (Hub data, CA, spool, logs).
    redis: the Redis layout given to the service.
    sources: which sources to simulate (default all four).
    key_prefix: KMRL_KEY_PREFIX for the service (default the service's ``kmrl:``).
    sync_minutes: each simulated source's *_SYNC_MINUTES (beat interval); the others get 0 (off).
    """

    root: Path
    redis: RedisLayout
    sources: Sequence[str] = ALL_SOURCES
    key_prefix: str = DEFAULT_PREFIX
    sync_minutes: int = 1
    #: Why a requested source is not simulated (email without Dovecot).
    skipped: dict[str, str] = field(default_factory=dict)
    sims: Simulators | None = None
    _servers: list[Any] = field(default_factory=list, repr=False)
    _secrets: dict[str, str] = field(default_factory=dict, repr=False)
    _ca_path: str = ""

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> Stack:
        """Starts the Hub and every requested source's simulator; stops what started if one fails."""
        unknown = set(self.sources) - set(ALL_SOURCES)
        if unknown:
            raise ValueError(f"unknown sources: {', '.join(sorted(unknown))}")
        self.root = Path(self.root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._secrets = {name: secrets.token_urlsafe(18) for name in
                         ("hub", "graph", "maximo", "whatsapp_token", "app_secret", "verify_token", "mail")}
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        ca = CertAuthority(str(self.root / "ca"))
        self._ca_path = ca.ca_path
        hub = HubSimulator(token=self._secrets["hub"], data_dir=self.root / "hub", persist=True)
        hub_server = ServerThread(hub.app).start()
        self._servers.append(hub_server)
        sims = self.sims = Simulators(hub=hub, hub_url=hub_server.url)
        if "email" in self.sources:
            if dovecot_binary() is None:
                self.skipped["email"] = "Dovecot is not installed (apt-get install -y dovecot-imapd)"
            else:
                sims.dovecot = DovecotServer().start()
                self._servers.append(sims.dovecot)
                sims.dovecot.add_user(DEMO_MAILBOX, self._secrets["mail"])
                sims.dovecot.create_folder(DEMO_MAILBOX, "INBOX")
        if "maximo" in self.sources:
            sims.maximo = MaximoSimulator(api_keys=(self._secrets["maximo"],))
            maximo_server = ServerThread(sims.maximo, ssl_context=ca.issue("maximo").server_context()).start()
            self._servers.append(maximo_server)
            sims.maximo_url = maximo_server.url
        if "sharepoint" in self.sources:
            sims.graph = GraphSimulator(client_secret=self._secrets["graph"])
            sims.graph.start(ca)
            self._servers.append(sims.graph)
        if "whatsapp" in self.sources:
            sims.whatsapp = WhatsAppCloudSimulator(access_token=self._secrets["whatsapp_token"])
            whatsapp_server = ServerThread(sims.whatsapp).start()
            self._servers.append(whatsapp_server)
            sims.whatsapp_url = whatsapp_server.url
            self._servers.append(web_server := self._start_web_app())
            sims.webhook_url = web_server.url + "/webhooks/whatsapp"

    def _start_web_app(self) -> ServerThread:
        from web.app import create_app

        # The web app logs to its own file and only warnings to the console: the caller's output stays readable.
        settings = replace(self.settings(), log_file=str(self.root / "logs" / "web.log"), log_level="WARNING")
        return ServerThread(create_app(settings)).start()

    def stop(self) -> None:
        """Stops everything started, newest first; safe to call again."""
        while self._servers:
            server = self._servers.pop()
            try:
                server.stop()
            except Exception as exc:  # one failed stop must not leave the rest running
                print(f"stack: stopping {type(server).__name__} failed: {exc}", file=sys.stderr)
        if self.sims is not None:
            self.sims.hub.close()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def running(self) -> Simulators:
        if self.sims is None:
            raise RuntimeError("the stack is not started")
        return self.sims

    @property
    def active_sources(self) -> list[str]:
        """The requested sources that are simulated (not skipped), in the service's order."""
        return [s for s in ALL_SOURCES if s in self.sources and s not in self.skipped]

    # -- what the service is given ------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The service's variables for this stack (every secret included: keep it out of logs).

        SHAREPOINT_SITES lists the sites seeded so far: call this after ``seed``.
        """
        sims = self.running
        root = self.root
        env: dict[str, str] = {
            **self.redis.env(),
            "KMRL_ENV_FILE": "",  # a developer's .env must not leak into the demo or the tests
            "KMRL_KEY_PREFIX": self.key_prefix,
            "HUB_API_URL": sims.hub_url, "HUB_API_TOKEN": self._secrets["hub"],
            "SPOOL_DIR": str(root / "spool"), "SPOOL_MIN_FREE_MB": "16", "DEADLETTER_DIR": str(root / "deadletter"),
            "HELD_DIR": str(root / "held"), "HUB_OUTBOX_DIR": str(root / "outbox"),
            "LOG_FILE": str(root / "logs" / "kmrl-connectors.log"), "AUDIT_LOG": str(root / "logs" / "audit.log"),
            "LOG_LEVEL": "INFO", "WORKER_LIVENESS_FILE": str(root / "worker.alive"),
            "HEALTH_CHECK_MINUTES": "0", "BEAT_MAX_LOOP_INTERVAL": "5",
        }
        for source in ALL_SOURCES:
            env[f"{source.upper()}_SYNC_MINUTES"] = str(self.sync_minutes) if source in self.active_sources else "0"
        if sims.dovecot is not None:
            env.update(EMAIL_HOST=sims.dovecot.host, EMAIL_PORT=str(sims.dovecot.imaps_port), EMAIL_USER=DEMO_MAILBOX,
                       EMAIL_PASSWORD=self._secrets["mail"], EMAIL_SSL_CA_FILE=sims.dovecot.ca_path,
                       EMAIL_FOLDERS="INBOX")
        if sims.maximo is not None:
            env.update(MAXIMO_URL=sims.maximo_url + "/maximo", MAXIMO_AUTH="apikey",
                       MAXIMO_API_KEY=self._secrets["maximo"], MAXIMO_CA_FILE=self._ca_path,
                       MAXIMO_SITE_IDS=",".join(MAXIMO_SITES))
        if sims.graph is not None:
            sites = sorted({site.path.strip("/") for site in sims.graph.store.sites.values()})
            env.update(SHAREPOINT_URL=sims.graph.sharepoint_url, SHAREPOINT_TENANT_ID=sims.graph.tenant_id,
                       SHAREPOINT_CLIENT_ID=sims.graph.client_id, SHAREPOINT_CLIENT_SECRET=self._secrets["graph"],
                       SHAREPOINT_SITES=",".join(sites), GRAPH_BASE_URL=sims.graph.graph_url,
                       ENTRA_AUTHORITY=sims.graph.authority_host, SHAREPOINT_CA_FILE=self._ca_path)
        if sims.whatsapp is not None:
            env.update(WHATSAPP_ACCESS_TOKEN=self._secrets["whatsapp_token"],
                       WHATSAPP_PHONE_NUMBER_ID=sims.whatsapp.phone_number_id,
                       WHATSAPP_APP_SECRET=self._secrets["app_secret"],
                       WHATSAPP_VERIFY_TOKEN=self._secrets["verify_token"], WHATSAPP_GRAPH_URL=sims.whatsapp_url)
        return env

    def settings(self) -> Settings:
        """``Settings`` for this stack, as a service process would read them from ``env()``."""
        return Settings.from_env(self.env())

    def process_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default os.environ) without any service variable, plus ``env()``: what a child gets."""
        base = os.environ if base is None else base
        clean = {k: v for k, v in base.items() if not k.startswith(SERVICE_VARIABLE_PREFIXES)}
        project = str(Path(__file__).resolve().parent.parent)
        clean["PYTHONPATH"] = os.pathsep.join(p for p in (project, clean.get("PYTHONPATH", "")) if p)
        return {**clean, **self.env()}

    # -- the sources' content -------------------------------------------------------------------------

    def seed(self, samples: SampleSet) -> None:
        """Adds ``samples`` to every simulated source (a later round adds to what is there) and applies
        its SharePoint deletions. WhatsApp messages go through the web app as Meta would send them."""
        sims = self.running
        if sims.dovecot is not None and samples.mails:
            sims.dovecot.append(DEMO_MAILBOX, [mail.to_bytes() for mail in samples.mails])
        if sims.maximo is not None:
            for wo in samples.work_orders:
                sims.maximo.add_work_order(wo.wonum, siteid=wo.siteid, description=wo.description,
                                           long_description=wo.long_description, worktype=wo.worktype,
                                           location=wo.location, attachments=0)
                for n, (doc, description) in enumerate(wo.doclinks, start=1):
                    sims.maximo.add_doclink(wo.siteid, wo.wonum, filename=doc.filename, mime_type=doc.mime_type,
                                            title=f"{wo.wonum}-{n}", description=description, content=doc.data)
        if sims.graph is not None:
            store = sims.graph.store
            for entry in samples.sharepoint:
                store.put_file(store.add_drive(entry.site, entry.library), entry.path, entry.file.data,
                               mime_type=entry.file.mime_type)
            for site, library, path in samples.sharepoint_deletions:
                store.delete(store.drive(site, library), path)
        if sims.whatsapp is not None and samples.whatsapp:
            cloud = sims.whatsapp
            messages = []
            for message in samples.whatsapp:
                media = cloud.add_media(message.file.data, mime_type=message.file.mime_type)
                messages.append(cloud.message(message.kind, media, sender=message.sender, caption=message.caption,
                                              filename=message.file.filename if message.kind == "document" else None))
            names = {m.sender: m.profile_name for m in samples.whatsapp}
            delivery = WebhookSender(sims.webhook_url, self._secrets["app_secret"]).send(
                cloud.notification(messages, profile_names=names))
            if not delivery.delivered:
                raise RuntimeError(f"the web app did not accept the WhatsApp webhook: HTTP {delivery.statuses}")

    def describe(self) -> list[tuple[str, str]]:
        """(what, where) of every running part, for the demo's output."""
        sims = self.running
        parts = [("Knowledge Hub simulator", sims.hub_url)]
        if sims.dovecot is not None:
            parts.append(("Dovecot (IMAPS)", f"{sims.dovecot.host}:{sims.dovecot.imaps_port}"))
        if sims.maximo is not None:
            parts.append(("Maximo OSLC API", sims.maximo_url + "/maximo"))
        if sims.graph is not None:
            parts.append(("Microsoft Graph + Entra ID", sims.graph.url))
        if sims.whatsapp is not None:
            parts.append(("WhatsApp Cloud API", sims.whatsapp_url))
            parts.append(("web app (WhatsApp webhook)", sims.webhook_url))
        return parts


# -- service processes ------------------------------------------------------------------------------------

class ServiceProcess:
    """One command of the service (``celery -A scheduler worker`` ...) in its own session.

    Output goes to ``log_path``. ``stop()`` sends SIGTERM to the whole session, waits up to
    ``STOP_GRACE`` seconds, then SIGKILLs whatever of it is left, so no forked child survives.
    """

    def __init__(self, name: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: str | Path,
                 log_path: str | Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log: IO[bytes] = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self.process = subprocess.Popen(self.argv, env=dict(env), cwd=str(cwd), stdout=log, stderr=log,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace: float = STOP_GRACE) -> int | None:
        """Stops the session; returns the main process's exit code (negative: the signal that ended it).

        A child may outlive the main process (or ignore SIGTERM): whatever of the session is still
        there when ``grace`` is over is killed.
        """
        deadline = time.monotonic() + grace
        code: int | None = None
        if self.alive():
            _signal_session(self.pid, signal.SIGTERM)
            try:
                code = self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        if not wait_until_session_gone(self.pid, timeout=max(0.0, deadline - time.monotonic())):
            _signal_session(self.pid, signal.SIGKILL)
            wait_until_session_gone(self.pid, timeout=5)
        if code is None:
            try:
                code = self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
        return code

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _signal_session(sid: int, signum: int) -> None:
    for pid in session_members(sid):
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def session_members(sid: int) -> list[int]:
    """Pids of the live processes of session ``sid`` (read from /proc; Linux)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state ppid pgrp session ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def wait_until_session_gone(sid: int, *, timeout: float) -> bool:
    """True once no live process belongs to session ``sid``."""
    deadline = time.monotonic() + timeout
    while session_members(sid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


#: Seconds to wait for beat to store its schedule in Redis.
BEAT_START_TIMEOUT = 30.0
#: When an entry made due "now" last ran, as far as RedBeat is told: long ago, so every schedule is overdue.
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


def fire_beat_entries_now(redbeat_url: str, names: Sequence[str], *, timeout: float = BEAT_START_TIMEOUT) -> None:
    """Makes a running beat send the entries ``names`` (``sync-email``...) at its next loop, as if their
    interval had just passed, instead of at the next whole minute.

    Beat's source intervals are whole minutes on the clock (crontab), and a new entry counts as run
    at start-up, so a fresh beat sends nothing before the minute turns. This tells RedBeat, through
    its own ``reschedule``, that each entry last ran long ago: beat itself then sends the ticks within
    BEAT_MAX_LOOP_INTERVAL seconds. Waits (up to ``timeout``) for beat to have stored the entries.
    """
    from celery import Celery
    from redbeat.schedulers import RedBeatSchedulerEntry, ensure_conf

    app = Celery("kmrl-sandbox", set_as_current=False)
    app.conf.redbeat_redis_url = redbeat_url
    ensure_conf(app)
    client = redis.Redis.from_url(redbeat_url)
    try:
        deadline = time.monotonic() + timeout
        keys = [RedBeatSchedulerEntry.generate_key(app, name) for name in names]
        while not all(client.hexists(key, "definition") for key in keys):
            if time.monotonic() > deadline:
                raise TimeoutError(f"beat did not store {', '.join(names)} in {timeout:.0f} s")
            time.sleep(0.1)
        for key in keys:
            RedBeatSchedulerEntry.from_key(key, app=app).reschedule(last_run_at=LONG_AGO)
    finally:
        client.close()


def celery_argv(*args: str) -> list[str]:
    """``celery ARGS`` run by this interpreter (the project's venv), whatever PATH says."""
    return [sys.executable, "-m", "celery", *args]


# -- Redis ---------------------------------------------------------------------------------------------------

class RedisServer:
    """A private, non-persistent redis-server on a free port (``url`` names database 0).

    bind: the addresses it listens on (default loopback only); ``url`` uses the first. Tests that
    reach it from another network namespace bind it to their host-side veth addresses.
    """

    def __init__(self, directory: str | Path, *, bind: Sequence[str] = ("127.0.0.1",)) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        if not bind:
            raise ValueError("redis-server needs at least one address to bind")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port(bind[0])
        self.url = f"redis://{bind[0]}:{self.port}/0"
        # Protected mode answers only loopback clients while no password is set; clients on the
        # addresses asked for must be answered too (the server listens on those addresses only).
        protected = "yes" if all(ipaddress.ip_address(a).is_loopback for a in bind) else "no"
        self.process = ServiceProcess(
            "redis-server", [binary, "--port", str(self.port), "--bind", *bind, "--protected-mode", protected,
                             "--save", "", "--appendonly", "no", "--dir", str(self.directory)],
            env=os.environ, cwd=self.directory, log_path=self.directory / "redis.log")
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while not redis_answers(self.url):
            if not self.process.alive() or time.monotonic() > deadline:
                self.process.stop()
                raise RuntimeError(f"redis-server did not start: {self.process.tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.process.stop(grace=5)


def redis_answers(url: str) -> bool:
    """True when a Redis at ``url`` answers PING within two seconds."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def used_databases(server_url: str, dbs: Sequence[int]) -> list[int]:
    """Which of ``dbs`` on ``server_url``'s server hold at least one key (empty list: all empty)."""
    used = []
    for db in dbs:
        client = redis.Redis.from_url(redis_db_url(server_url, db), socket_connect_timeout=2)
        try:
            if client.dbsize():
                used.append(db)
        finally:
            client.close()
    return used

