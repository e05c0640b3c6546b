"""The email watcher (watchers/) against a real Dovecot (sandbox/dovecot.py) and the real Redis.

Each test has its own mailbox user on one Dovecot. Until the end-to-end test at the bottom (the real
``scheduler.request_sync`` and a real Celery worker), the watcher's trigger is a recorder: each
APPEND must cause one request for the scope of the folder it landed in, with the mode's reason.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from base.state import StateStore, metric_field
from connectors.email_imap import EmailAccount
from sandbox.dovecot import DovecotServer, require_dovecot
from tests import waiting
from watchers.board import CONNECTED_GAUGE, WatcherBoard
from watchers.imap_channels import IdleChannel, PollChannel
from watchers.imap_watcher import IDLE, NOTIFY, POLL, AccountWatcher, ChannelPlan, WatchConfig, plan_channels

FOLDERS = ("INBOX", "Circulars", "Reports")
#: Short intervals so that a test sees reconnects, takeovers and re-issues in seconds.
FAST = WatchConfig(lease_seconds=1.5, backoff_base=0.2, backoff_max=1.0, timeout=10.0, poll_seconds=0.5)


def wait_for(predicate: Callable[[], Any], *, timeout: float = 15.0, what: str = "condition") -> Any:
    return waiting.wait_for(predicate, timeout=timeout, what=what, interval=0.02)


def mail(subject: str) -> bytes:
    return (f"From: ops@kochimetro.org\r\nTo: a@kmrl.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@kochimetro.org>\r\n\r\nbody\r\n").encode()


class Recorder:
    """The watcher's trigger: records (scope, reason) of every request, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.fail_next = 0

    def __call__(self, scope: str, reason: str) -> bool:
        with self.lock:
            if self.fail_next:
                self.fail_next -= 1
                raise ConnectionError("broker unreachable")
            self.calls.append((scope, reason))
        return True

    def count(self) -> int:
        with self.lock:
            return len(self.calls)


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    require_dovecot()
    with DovecotServer() as server:
        yield server


@pytest.fixture
def user(dovecot: DovecotServer) -> str:
    name = f"w{uuid.uuid4().hex[:10]}@kmrl.test"
    dovecot.add_user(name, "pw-" + name)
    for folder in FOLDERS:
        dovecot.create_folder(name, folder)
    return name


@pytest.fixture
def running(dovecot: DovecotServer, state: StateStore) -> Iterator[Callable[..., AccountWatcher]]:
    """Starts watchers in threads; stops them all (and waits) after the test."""
    started: list[tuple[AccountWatcher, threading.Event, threading.Thread]] = []

    def start(user: str, trigger: Callable[[str, str], object], *, folders: tuple[str, ...] = FOLDERS,
              config: WatchConfig = FAST, identity: str | None = None, password: str | None = None) -> AccountWatcher:
        account = EmailAccount(host="127.0.0.1", user=user, port=dovecot.imaps_port, folders=folders,
                               ssl_ca_file=dovecot.ca_path)
        watcher = AccountWatcher(account, password or "pw-" + user, state=state, trigger=trigger, config=config,
                                 identity=identity)
        stop = threading.Event()
        thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
        thread.start()
        started.append((watcher, stop, thread))
        return watcher

    yield start
    for _, stop, _ in started:
        stop.set()
    for _, _, thread in started:
        thread.join(timeout=15)
        assert not thread.is_alive()


def connected(watcher: AccountWatcher) -> bool:
    return watcher.record.state == "connected"


def scope(user: str, folder: str) -> str:
    return f"{user}@127.0.0.1/{folder}"


def append_each_and_expect(dovecot: DovecotServer, user: str, recorder: Recorder, reason: str,
                           folders: tuple[str, ...] = FOLDERS, count: int = 10) -> None:
    """APPENDs ``count`` messages, spread over ``folders`` and over time; each must cause one request
    for its folder's scope with ``reason``, and nothing else."""
    before = recorder.count()
    expected = []
    for index in range(count):
        folder = folders[index % len(folders)]
        dovecot.append(user, [mail(f"circular {index}")], folder=folder)
        expected.append((scope(user, folder), reason))
        wait_for(lambda n=len(expected): recorder.count() >= before + n, what=f"the request for message {index}")
        time.sleep(0.05)
    time.sleep(0.5)  # room for a request too many, which must not come
    assert recorder.calls[before:] == expected


# -- planning ----------------------------------------------------------------------------------------

def test_notify_watches_every_folder_on_one_connection_and_the_fallback_stays_within_the_cap() -> None:
    folders = [f"F{i}" for i in range(10)]
    config = WatchConfig(max_connections=5)
    assert plan_channels(folders, ["IMAP4REV1", "IDLE", "NOTIFY"], config) == [ChannelPlan(NOTIFY, tuple(folders))]
    idle = plan_channels(folders, ["IMAP4REV1", "IDLE"], config)
    assert idle == [*(ChannelPlan(IDLE, (f,)) for f in folders[:4]), ChannelPlan(POLL, tuple(folders[4:]))]
    # Few enough folders: each its own IDLE; NOTIFY ignored when idle is forced.
    assert plan_channels(folders[:5], ["IDLE", "NOTIFY"], replace(config, mode="idle")) == [
        ChannelPlan(IDLE, (f,)) for f in folders[:5]]
    # EMAIL_IDLE_FOLDERS chooses (in its order; unknown names ignored); the rest is polled.
    chosen = plan_channels(folders[:5], ["IDLE"], replace(config, idle_folders=("F3", "Nope", "F1")))
    assert chosen == [ChannelPlan(IDLE, ("F3",)), ChannelPlan(IDLE, ("F1",)), ChannelPlan(POLL, ("F0", "F2", "F4"))]
    assert plan_channels(folders, ["IMAP4REV1"], config) == [ChannelPlan(POLL, tuple(folders))]
    assert plan_channels(folders, ["IDLE", "NOTIFY"], replace(config, mode="poll")) == [
        ChannelPlan(POLL, tuple(folders))]
    for cap in range(1, 12):
        assert len(plan_channels(folders, ["IDLE"], replace(config, max_connections=cap))) <= cap
    # A folder not on the server gets no IDLE (it would fail): it is polled.
    assert plan_channels(folders[:3], ["IDLE"], config, missing=("F1",)) == [
        ChannelPlan(IDLE, ("F0",)), ChannelPlan(IDLE, ("F2",)), ChannelPlan(POLL, ("F1",))]


# -- NOTIFY ------------------------------------------------------------------------------------------

def test_with_notify_each_append_asks_for_its_folders_sync_over_one_connection(dovecot, user, running):
    recorder = Recorder()
    watcher = running(user, recorder)
    wait_for(lambda: connected(watcher), what="the watcher to connect")
    assert (watcher.record.mode, watcher.record.connections) == ("notify", 1)
    assert recorder.calls == []                          # empty folders: nothing to ask for at connect
    append_each_and_expect(dovecot, user, recorder, "imap_notify")


def test_mail_that_came_while_nobody_watched_is_asked_for_on_connect(dovecot, user, running, state):
    dovecot.append(user, [mail("early 1"), mail("early 2")], folder="Circulars")
    dovecot.append(user, [mail("synced")], folder="Reports")
    # Reports' cursor already passed its message; INBOX is empty; Circulars was never synced.
    state.set_cursor("email", scope(user, "Reports"), {"uidvalidity": dovecot.uidvalidity(user, "Reports"),
                                                       "last_uid": 1})
    recorder = Recorder()
    watcher = running(user, recorder)
    wait_for(lambda: connected(watcher), what="the watcher to connect")
    time.sleep(0.3)
    assert recorder.calls == [(scope(user, "Circulars"), "imap_notify")]


def test_with_notify_a_folder_created_after_connecting_is_watched_too(dovecot, user, running):
    recorder = Recorder()
    watcher = running(user, recorder, folders=("INBOX", "Later"))
    wait_for(lambda: connected(watcher), what="the watcher to connect")
    dovecot.append(user, [mail("first in a new folder")], folder="Later")   # CREATE, then APPEND
    wait_for(lambda: recorder.calls == [(scope(user, "Later"), "imap_notify")], what="the new folder's mail")
    append_each_and_expect(dovecot, user, recorder, "imap_notify", folders=("Later", "INBOX"), count=4)
    assert watcher.connects == 1                         # Dovecot watches a NOTIFY mailbox by its name


# -- IDLE and polling --------------------------------------------------------------------------------

def test_without_notify_each_folder_gets_its_own_idle(dovecot, user, running):
    recorder = Recorder()
    watcher = running(user, recorder, config=replace(FAST, mode="idle"))
    wait_for(lambda: connected(watcher), what="the watcher to connect")
    assert (watcher.record.mode, watcher.record.connections) == ("idle", 3)
    assert all(isinstance(c, IdleChannel) for c in watcher.channels)
    append_each_and_expect(dovecot, user, recorder, "imap_idle")


def test_folders_beyond_the_connection_cap_are_polled(dovecot, user, running):
    recorder = Recorder()
    config = replace(FAST, mode="idle", max_connections=2, idle_folders=("Reports",))
    watcher = running(user, recorder, config=config)
    wait_for(lambda: connected(watcher), what="the watcher to connect")
    kinds = sorted((type(c).__name__, tuple(c.folders)) for c in watcher.channels)
    assert kinds == [("IdleChannel", ("Reports",)), ("PollChannel", ("INBOX", "Circulars"))]
    append_each_and_expect(dovecot, user, recorder, "imap_idle", folders=("Reports",), count=3)
    append_each_and_expect(dovecot, user, recorder, "imap_poll", folders=("INBOX", "Circulars"), count=4)


def test_idle_is_issued_again_before_its_interval_ends_and_still_sees_mail(dovecot, user, running):
    recorder = Recorder()
    watcher = running(user, recorder, folders=("INBOX",), config=replace(FAST, mode="idle", keepalive=0.3))
    wait_for(lambda: connected(watcher), what="the watcher to connect")
    (channel,) = watcher.channels
    assert isinstance(channel, IdleChannel)
    wait_for(lambda: channel.idles >= 5, timeout=10, what="IDLE re-issued four times")
    assert watcher.connects == 1                         # re-issued on the same connection
    append_each_and_expect(dovecot, user, recorder, "imap_idle", folders=("INBOX",), count=3)
    assert watcher.connects == 1


def test_a_folder_missing_on_the_server_is_polled_and_the_others_still_get_idle(dovecot, user, running):
    recorder = Recorder()
    folders = ("INBOX", "Circulars", "Later")
    watcher = running(user, recorder, folders=folders, config=replace(FAST, mode="idle", poll_seconds=0.2))
    wait_for(lambda: connected(watcher), what="the watcher to connect")
    kinds = sorted((type(c).__name__, tuple(c.folders)) for c in watcher.channels)
    assert kinds == [("IdleChannel", ("Circulars",)), ("IdleChannel", ("INBOX",)), ("PollChannel", ("Later",))]
    append_each_and_expect(dovecot, user, recorder, "imap_idle", folders=("INBOX", "Circulars"), count=2)
    append_each_and_expect(dovecot, user, recorder, "imap_poll", folders=("Later",), count=2)  # created by APPEND
    assert watcher.connects == 1


def test_polling_alone_sees_mail_in_every_folder(dovecot, user, running):
    recorder = Recorder()
    watcher = running(user, recorder, config=replace(FAST, mode="poll", poll_seconds=0.2))
    wait_for(lambda: connected(watcher), what="the watcher to connect")
    (channel,) = watcher.channels
    assert isinstance(channel, PollChannel) and watcher.record.mode == "poll"
    append_each_and_expect(dovecot, user, recorder, "imap_poll", count=4)


# -- failures ----------------------------------------------------------------------------------------

def test_a_dovecot_crash_is_survived_by_reconnecting_and_mail_meanwhile_is_not_missed(dovecot, user, running):
    recorder = Recorder()
    watcher = running(user, recorder)
    wait_for(lambda: connected(watcher), what="the watcher to connect")
    dovecot.kill()                                       # a crash: every connection drops; mail and ports stay
    wait_for(lambda: watcher.record.state in ("backoff", "connecting"), what="the drop to be noticed")
    dovecot.seed(user, [mail("arrived while the server was down")], folder="Reports")
    dovecot.start()
    wait_for(lambda: connected(watcher) and watcher.connects >= 2, timeout=30, what="the reconnect")
    # The message that came while the server was down is asked for on reconnect (the cursor is behind).
    wait_for(lambda: recorder.calls == [(scope(user, "Reports"), "imap_notify")], what="the catch-up request")
    append_each_and_expect(dovecot, user, recorder, "imap_notify", count=3)


def test_a_trigger_that_cannot_be_sent_reconnects_and_asks_again(dovecot, user, running):
    recorder = Recorder()
    watcher = running(user, recorder)
    wait_for(lambda: connected(watcher), what="the watcher to connect")
    recorder.fail_next = 1
    dovecot.append(user, [mail("while the broker is down")], folder="Circulars")
    wait_for(lambda: watcher.connects >= 2 and connected(watcher), what="the reconnect after the failed request")
    wait_for(lambda: recorder.calls == [(scope(user, "Circulars"), "imap_notify")], what="the request made again")


def test_refused_credentials_back_off_and_say_why(dovecot, user, running, state):
    watcher = running(user, Recorder(), password="wrong")
    wait_for(lambda: watcher.record.state == "backoff", what="the backoff")
    record = WatcherBoard(state).records()[0]
    assert record["state"] == "backoff" and "refused" in record["error"] and "wrong" not in record["error"]
    wait_for(lambda: watcher.backoff.failures >= 2, what="a second attempt")


# -- one holder per account --------------------------------------------------------------------------

def test_two_watchers_of_one_account_one_watches_the_other_stands_by_and_takes_over(dovecot, user, running, state):
    recorder_a, recorder_b = Recorder(), Recorder()
    a = running(user, recorder_a, identity="machine-a:1")
    wait_for(lambda: connected(a), what="the first watcher to connect")
    b = running(user, recorder_b, identity="machine-b:2")
    wait_for(lambda: b.record.state == "standby", what="the second to stand by")
    append_each_and_expect(dovecot, user, recorder_a, "imap_notify", count=3)
    assert recorder_b.calls == []
    assert WatcherBoard(state).records()[0]["host"] == "machine-a:1"
    # The holder's lease is taken from it (as when it froze past its TTL): it stops watching.
    state.redis.set(state.keys.watcher_lease(a.name), "someone-else", px=1500)
    wait_for(lambda: a.record.state == "standby", what="the first to give up the account")
    wait_for(lambda: connected(a) or connected(b), timeout=10, what="a watcher to take over once the lease lapsed")
    holder, recorder = (a, recorder_a) if connected(a) else (b, recorder_b)
    other_before = (recorder_b if holder is a else recorder_a).count()
    before = recorder.count()
    dovecot.append(user, [mail("after the takeover")], folder="INBOX")
    wait_for(lambda: recorder.count() == before + 1, what="the new holder's request")
    time.sleep(0.5)
    assert (recorder_b if holder is a else recorder_a).count() == other_before
    assert WatcherBoard(state).records()[0]["host"] == holder.identity


def test_a_lease_left_by_a_dead_watcher_is_taken_once_it_lapses(dovecot, user, running, state):
    name = f"email:{user}@127.0.0.1"
    state.redis.set(state.keys.watcher_lease(name), "dead-process", px=1200)
    started = time.monotonic()
    watcher = running(user, Recorder())
    wait_for(lambda: watcher.record.state == "standby", what="standby behind the dead lease")
    wait_for(lambda: connected(watcher), what="the takeover")
    assert time.monotonic() - started >= 1.0


# -- what status and /metrics show ---------------------------------------------------------------------

def test_the_watcher_publishes_its_record_and_gauge(dovecot, user, running, state):
    from web.metrics import render_metrics

    watcher = running(user, Recorder(), identity="machine-a:7")
    wait_for(lambda: connected(watcher), what="the watcher to connect")
    dovecot.append(user, [mail("one")], folder="Reports")
    wait_for(lambda: watcher.record.last_event, what="the event")
    (record,) = WatcherBoard(state).records()
    assert record["name"] == f"email:{user}@127.0.0.1"
    assert (record["state"], record["mode"], record["host"], record["error"]) == ("connected", "notify",
                                                                                 "machine-a:7", "")
    assert record["since"] <= record["last_event"] <= time.time()
    assert 0 < state.redis.pttl(state.keys.watcher(watcher.name)) <= 4500
    gauge = metric_field(CONNECTED_GAUGE, {"watcher": watcher.name})
    assert state.metrics()[1][gauge] == 1.0
    assert f'kmrl_watcher_connected{{watcher="{watcher.name}"}} 1.0' in render_metrics(state)


# -- the whole way: python -m watchers, request_sync, a real worker, the outbox ------------------------

def email_environ(dovecot: DovecotServer, user: str, **extra: str) -> dict[str, str]:
    return {"EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": str(dovecot.imaps_port), "EMAIL_USER": user,
            "EMAIL_PASSWORD": "pw-" + user, "EMAIL_SSL_CA_FILE": dovecot.ca_path,
            "EMAIL_FOLDERS": "INBOX,Circulars", "SYNC_AT_START": "0", **extra}


def test_mail_reaches_the_outbox_through_the_watcher_and_a_worker_without_the_tick(dovecot, user, tmp_path):
    """10 messages spread out, then a burst of 200 in one folder: every document delivered once, and
    the burst costs at most two runs of its folder after the first (the trigger rule)."""
    from celery.contrib.testing.worker import start_worker

    import scheduler
    from connectors import registry
    from connectors.service import Service
    from tests.conftest import flushed_db_url, make_settings
    from tests.test_email_connector import message
    from watchers.__main__ import email_watchers

    settings = make_settings(tmp_path, flushed_db_url(8), broker_url=flushed_db_url(5),
                             result_backend=flushed_db_url(6), redbeat_redis_url=flushed_db_url(7),
                             environ=email_environ(dovecot, user, SYNC_TRIGGER_DELAY_SECONDS="0.2",
                                                   WORKER_LIVENESS_FILE=str(tmp_path / "alive"),
                                                   EMAIL_WATCH_LEASE_SECONDS="2"))
    scheduler.configure(settings, sources=registry.SOURCES)
    service = Service(settings)
    (watcher,) = email_watchers(service)                # the real trigger: scheduler.request_sync
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    outbox = tmp_path / "outbox"

    def delivered() -> list[str]:
        return sorted(p.name for p in outbox.iterdir() if len(p.name) == 64) if outbox.is_dir() else []

    try:
        with start_worker(scheduler.app, pool="threads", concurrency=2, perform_ping_check=False,
                          loglevel="WARNING", shutdown_timeout=15):
            thread.start()
            wait_for(lambda: connected(watcher), what="the watcher to connect")
            for index in range(10):
                folder = ("INBOX", "Circulars")[index % 2]
                dovecot.append(user, [message(f"Circular {index}", (f"circular-{index}.pdf",
                                                                    f"%PDF-1.4 circular {index}".encode()))],
                               folder=folder)
                time.sleep(0.3)                          # spread out: some land while a run is under way
            wait_for(lambda: len(delivered()) == 10, timeout=60, what="10 documents in the outbox")
            time.sleep(1.5)
            spread_counters, _ = service.state.metrics()
            inbox_runs = len(service.state.redis.lrange(service.state.keys.history("email", scope(user, "INBOX")),
                                                        0, -1))
            dovecot.append(user, [message(f"Burst {n}", (f"burst-{n}.pdf", f"%PDF-1.4 burst {n}".encode()))
                                  for n in range(200)], folder="INBOX", batch=20)
            wait_for(lambda: len(delivered()) == 210, timeout=90, what="the burst in the outbox")
            time.sleep(2.0)                              # room for runs too many, which must not come
            counters, _ = service.state.metrics()
            burst_runs = len(service.state.redis.lrange(service.state.keys.history("email", scope(user, "INBOX")),
                                                        0, -1)) - inbox_runs
    finally:
        stop.set()
        thread.join(timeout=15)
        scheduler.service.reset(scheduler.service.settings, sources=registry.SOURCES)
    new = metric_field("kmrl_documents_total", {"source": "email", "outcome": "new"})
    assert spread_counters[new] == 10
    assert spread_counters[metric_field("kmrl_sync_triggers_total", {"source": "email", "outcome": "sent"})] >= 2
    assert len(delivered()) == 210 and counters[new] == 210
    assert not any("outcome=duplicate" in field for field in counters)
    assert 1 <= burst_runs <= 3, burst_runs


def test_python_m_watchers_watches_until_sigterm_and_leaves_the_gauge_at_zero(dovecot, user, tmp_path, state,
                                                                              redis_url):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from config.settings import Settings
    from tests.conftest import flushed_db_url
    from watchers.__main__ import probe

    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("EMAIL_", "KMRL_", "CELERY_"))},
           **email_environ(dovecot, user), "KMRL_ENV_FILE": str(tmp_path / "none.env"),
           "STATE_REDIS_URL": redis_url, "REDIS_URL": redis_url, "CELERY_BROKER_URL": flushed_db_url(5),
           "LOG_FILE": str(tmp_path / "watch.log"), "AUDIT_LOG": str(tmp_path / "audit.log"),
           "WATCHER_LIVENESS_FILE": str(tmp_path / "watcher.alive")}
    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen([sys.executable, "-m", "watchers"], cwd=root, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    name = f"email:{user}@127.0.0.1"
    board = WatcherBoard(state)
    try:
        wait_for(lambda: any(r["name"] == name and r["state"] == "connected" for r in board.records()),
                 timeout=30, what="the watcher process to connect")
        (record,) = board.records()
        assert record["host"].endswith(f":{process.pid}") and record["mode"] == "notify"
        dovecot.append(user, [mail("to the broker")], folder="Circulars")
        wait_for(lambda: state.redis.exists(state.keys.trigger("email", scope(user, "Circulars"))),
                 what="the sync asked for through request_sync")
        settings = Settings.from_env({"KMRL_ENV_FILE": "", "WATCHER_LIVENESS_FILE": str(tmp_path / "watcher.alive")})
        alive, why = probe(settings)
        assert alive, why
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode(errors="replace")
    assert process.returncode == 0, output
    assert state.metrics()[1][metric_field(CONNECTED_GAUGE, {"watcher": name})] == 0.0
    assert not state.redis.exists(state.keys.watcher_lease(name))
    assert probe(settings) == (False, f"no liveness file at {tmp_path / 'watcher.alive'}")


def test_watch_settings_are_read_and_a_wrong_one_names_its_variable() -> None:
    from config.settings import Settings
    from utils.env import SettingError

    settings = Settings.from_env({"KMRL_ENV_FILE": "", "EMAIL_WATCH_MODE": "IDLE", "EMAIL_WATCH_MAX_CONNECTIONS": "3",
                                  "EMAIL_IDLE_FOLDERS": "INBOX, Circulars", "EMAIL_WATCH_POLL_SECONDS": "15"})
    config = WatchConfig.from_settings(settings, timeout=12)
    assert (config.mode, config.max_connections, config.idle_folders, config.poll_seconds, config.timeout) == (
        "idle", 3, ("INBOX", "Circulars"), 15.0, 12)
    for name, value, message in [("EMAIL_WATCH_KEEPALIVE_SECONDS", "1800", "at most 1740"),
                                 ("EMAIL_WATCH_MODE", "push", "one of auto, idle, poll"),
                                 ("EMAIL_WATCH_MAX_CONNECTIONS", "0", "at least 1")]:
        with pytest.raises(SettingError, match=f"{name} must be {message}"):
            WatchConfig.from_settings(Settings.from_env({"KMRL_ENV_FILE": "", name: value}))


def test_kmrl_connectors_watch_with_nothing_to_watch_stays_up_for_its_probe_until_sigterm(tmp_path, redis_url):
    import os
    import shlex
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from config.settings import Settings
    from tests.readme_commands import readme_command
    from watchers.__main__ import probe

    alive = tmp_path / "watcher.alive"
    argv = shlex.split(readme_command("kmrl-connectors watch"))
    argv[0] = str(Path(sys.executable).parent / argv[0])  # the console script of this environment
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("EMAIL_", "KMRL_"))},
           "KMRL_ENV_FILE": "", "EMAIL_WATCH": "0", "EMAIL_HOST": "imap.kmrl.test", "STATE_REDIS_URL": redis_url,
           "REDIS_URL": redis_url, "LOG_FILE": str(tmp_path / "watch.log"), "WATCHER_LIVENESS_FILE": str(alive)}
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    settings = Settings.from_env({"KMRL_ENV_FILE": "", "WATCHER_LIVENESS_FILE": str(alive)})
    try:
        wait_for(lambda: probe(settings)[0], timeout=30, what="the liveness file")
        assert process.poll() is None                    # nothing to watch is no reason to exit (and restart)
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode(errors="replace")
    assert process.returncode == 0, output
    assert not alive.exists()
