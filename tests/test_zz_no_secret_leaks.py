"""Secrets stay secret: after everything else has run (this module sorts last), no configured secret value
is in any log file the suite wrote, nor anywhere in the test Redis databases.

To make that mean something, the first test here runs the service the way an operator would, with
every secret configured and DEBUG logging on (so msal, urllib3, imapclient and the web app log all they
can): ``kmrl-connectors sync all``, ``check``, ``status``, ``deadletter list`` against all four sources
and the Hub, once with the right secrets and once with wrong ones (the failure messages are where a
secret most easily slips out), plus the webhook's signed intake and subscription handshake. Then it
reads its own log files and Redis database.

The last test scans what the whole suite left: every log-like file under pytest's temporary folders
and ``./logs`` written since this test process started, and every key of Redis databases 5-10 and 15
(read by type: strings, hashes, lists, sets, sorted sets, streams; ``DUMP`` would hide long values
behind LZF compression). The secrets searched for are those registered with the log redactor in this
process (``utils.logging.registered_secrets``) plus every sandbox and test secret of the project.
A scanner that finds nothing could be broken, so a planted secret must be found first.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import redis

from config.settings import redis_db_url
from sandbox.dovecot import DovecotServer, require_dovecot
from sandbox.hub import RunningHub, running_hub
from sandbox.tls import CertAuthority
from tests.conftest import server_url
from tests.reliability import beds
from tests.reliability.conftest import HUB_TOKEN
from tests.reliability.workers import Worker
from utils.logging import registered_secrets

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[1]
#: Test databases (tests/conftest.py).
TEST_DATABASES = (5, 6, 7, 8, 9, 10, 15)
#: Secret constants of the sandbox and of the test modules, as "module:attribute" (a missing one is
#: skipped: a renamed test constant must not break this scan, it only narrows it).
KNOWN_SECRET_CONSTANTS = (
    "sandbox.hub:SANDBOX_TOKEN", "sandbox.whatsapp:SANDBOX_TOKEN", "sandbox.whatsapp:SANDBOX_APP_SECRET",
    "sandbox.maximo:DEFAULT_API_KEYS", "tests.reliability.conftest:HUB_TOKEN",
    "tests.reliability.beds:EMAIL_PASSWORD", "tests.reliability.beds:GRAPH_CLIENT_SECRET",
    "tests.reliability.beds:WHATSAPP_TOKEN", "tests.reliability.beds:WHATSAPP_APP_SECRET",
    "tests.test_hostile_input:WEBHOOK_SECRET", "tests.test_web_webhook:APP_SECRET",
    "tests.test_web_webhook:VERIFY_TOKEN", "tests.test_web_gunicorn:APP_SECRET",
    "tests.test_web_gunicorn:VERIFY_TOKEN", "tests.test_whatsapp_connector:APP_SECRET",
    "tests.test_whatsapp_connector:TOKEN", "tests.test_hub_simulator:TOKEN",
    "tests.test_web_access:TOKEN", "tests.test_web_access:APP_SECRET", "tests.test_web_access:VERIFY_TOKEN",
    "tests.test_web_gunicorn:OPERATOR_TOKEN", "tests.test_worker_processes:OPERATOR_TOKEN",
    "tests.test_redis_tls:PASSWORD", "tests.test_deployment:PASSWORD", "sandbox.dovecot:SANDBOX_MAIL_PASSWORD",
)
#: Shorter values are too likely to occur by chance in an honest log line.
MIN_SECRET_LENGTH = 6
#: Files whose content is log output: log files, and the console output of worker processes.
LOG_SUFFIXES = (".log", ".err", ".out", ".jsonl")
#: Secrets of the leak run; wrong ones are secrets too (a typo'd password is still a password).
VERIFY_TOKEN = "leak-run-verify-token-6a2f"
WRONG = {"EMAIL_PASSWORD": "wrong-imap-password-0c4d", "SHAREPOINT_CLIENT_SECRET": "wrong-graph-secret-8d1b",
         "MAXIMO_API_KEY": "wrong-maximo-key-77e0", "WHATSAPP_ACCESS_TOKEN": "wrong-whatsapp-token-19fa",
         "HUB_API_TOKEN": "wrong-hub-token-3b5c"}


def known_secrets() -> set[str]:
    found: set[str] = set(WRONG.values()) | {VERIFY_TOKEN}
    for spec in KNOWN_SECRET_CONSTANTS:
        module_name, _, attribute = spec.partition(":")
        try:
            value = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError):
            continue
        found.update(value if isinstance(value, (tuple, list, set)) else [value])
    from sandbox.maximo import DEFAULT_USERS

    found.update(DEFAULT_USERS.values())
    return {s for s in found | set(registered_secrets()) if isinstance(s, str) and len(s) >= MIN_SECRET_LENGTH}


def leaks_in_files(paths: Iterable[Path], secrets: set[str]) -> list[tuple[str, str]]:
    """(file, secret) for every secret found in the files."""
    found: list[tuple[str, str]] = []
    encoded = {s: s.encode() for s in secrets}
    for path in paths:
        try:
            content = path.read_bytes()
        except OSError:
            continue
        found.extend((str(path), s) for s, raw in encoded.items() if raw in content)
    return found


def _b(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _values(client: Any, key: bytes) -> Iterator[bytes]:
    """Every value stored under ``key``, whatever its type, as bytes (hash fields and stream fields too)."""
    kind = client.type(key)
    if kind == b"string":
        yield _b(client.get(key) or b"")
    elif kind == b"hash":
        for field, value in client.hgetall(key).items():
            yield _b(field) + b"\0" + _b(value)
    elif kind == b"list":
        yield from (_b(v) for v in client.lrange(key, 0, -1))
    elif kind == b"set":
        yield from (_b(v) for v in client.smembers(key))
    elif kind == b"zset":
        yield from (_b(member) for member, _ in client.zrange(key, 0, -1, withscores=True))
    elif kind == b"stream":
        for _, fields in client.xrange(key):
            yield b"\0".join(_b(k) + b"=" + _b(v) for k, v in fields.items())


def leaks_in_redis(url: str, secrets: set[str]) -> list[tuple[str, str]]:
    """(db/key, secret) for every secret found in a key name or value of the database at ``url``."""
    client = redis.Redis.from_url(url)
    encoded = {s: s.encode() for s in secrets}
    found: list[tuple[str, str]] = []
    try:
        for key in client.scan_iter(count=500):
            blobs = [key, *_values(client, key)]
            found.extend((f"{url} {key!r}", s) for s, raw in encoded.items() if any(raw in b for b in blobs))
    finally:
        client.close()
    return found


def log_files(folder: Path, *, since: float = 0.0) -> list[Path]:
    if not folder.is_dir():
        return []
    files = []
    for path in folder.rglob("*"):
        try:
            if (path.is_file() and (path.name.endswith(LOG_SUFFIXES) or ".log." in path.name)
                    and path.stat().st_mtime >= since):
                files.append(path)
        except OSError:
            continue  # removed while we looked
    return files


def process_started_at() -> float:
    """When this test process started (files older than that were not written by this suite)."""
    return os.stat(f"/proc/{os.getpid()}").st_ctime if os.path.isdir(f"/proc/{os.getpid()}") else time.time() - 3600


# -- the positive control ---------------------------------------------------------------------------

def test_zz_scanner_finds_a_planted_secret_in_a_log_file_and_in_redis(tmp_path: Path) -> None:
    planted = "planted-secret-value-5e1c"
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "kmrl-connectors.log").write_text(f'{{"event": "x", "detail": "{planted}"}}\n')
    (tmp_path / "logs" / "kmrl-connectors.log.1").write_text("nothing here\n")
    assert leaks_in_files(log_files(tmp_path), {planted}) == [(str(tmp_path / "logs" / "kmrl-connectors.log"),
                                                                planted)]
    url = redis_db_url(server_url(), 10)
    client = redis.Redis.from_url(url)
    key = f"kmrl-leak-probe:{os.getpid()}"
    try:
        client.xadd(key, {"caption": f"long enough to be compressed by DUMP {'x' * 200} {planted}"})
        assert [s for _, s in leaks_in_redis(url, {planted})] == [planted]
    finally:
        client.delete(key)
        client.close()


# -- the service, run with every secret, DEBUG logs on ----------------------------------------------

@pytest.fixture
def everything(tmp_path: Path) -> Iterator[tuple[dict[str, str], RunningHub]]:
    """All four sources and the Hub on simulators, and the environment configuring all of them."""
    require_dovecot()
    from tests.conftest import flushed_db_url

    state_url = flushed_db_url(9)
    with ExitStack() as stack:
        hub = stack.enter_context(running_hub(token=HUB_TOKEN, data_dir=tmp_path / "hub"))
        dovecot = stack.enter_context(DovecotServer())
        ca = CertAuthority(str(tmp_path / "ca"))
        env = {**beds.service_env(tmp_path, state_url, hub), "LOG_LEVEL": "DEBUG", "LOG_FORMAT": "json",
               "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN}
        for bed in (stack.enter_context(beds.email_bed(dovecot, 5)), stack.enter_context(beds.maximo_bed(6)),
                    stack.enter_context(beds.sharepoint_bed(ca, 5)),
                    stack.enter_context(beds.whatsapp_bed(tmp_path, state_url, 5))):
            env.update(bed.env)
        yield env, hub


def test_zz_a_debug_logged_run_of_every_source_leaks_no_secret_to_logs_or_redis(
        everything: tuple[dict[str, str], RunningHub], tmp_path: Path) -> None:
    env, hub = everything
    configured = {value for name, value in env.items()
                  if any(word in name for word in ("PASSWORD", "SECRET", "TOKEN", "API_KEY"))}
    good = Worker(env, tmp_path / "cli")
    synced = good.run("sync", "all")
    assert synced.returncode == 0 and set(synced.states.values()) == {"ok"}, synced.describe()
    assert len(hub.sim.documents) == 5 + 6 + 5 + 5
    for command in (("check",), ("status",), ("deadletter", "list")):
        good.run(*command)
    bad = Worker({**env, **WRONG}, tmp_path / "cli-wrong")
    failed = bad.run("check")
    assert failed.returncode == 1, failed.describe()
    bad.run("sync", "all")

    import requests

    from config.settings import Settings
    from sandbox.servers import ServerThread
    from web.app import create_app

    # The webhook: a handshake with the verify token, a wrong one, and a signed notification.
    with ServerThread(create_app(Settings.from_env(env))) as web:
        url = web.url + "/webhooks/whatsapp"
        ok = requests.get(url, params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN,
                                       "hub.challenge": "42"}, timeout=10)
        # A caller's wrong guess is not a configured secret (and the test client's own urllib3 logs it).
        refused = requests.get(url, params={"hub.mode": "subscribe", "hub.verify_token": "a-wrong-guess",
                                            "hub.challenge": "42"}, timeout=10)
        assert (ok.status_code, ok.text, refused.status_code) == (200, "42", 403)

    secrets = configured | known_secrets()
    files = log_files(tmp_path)
    assert any(path.name == "worker.log" and path.stat().st_size > 10_000 for path in files), \
        "the DEBUG run wrote no log worth scanning"
    assert leaks_in_files(files, secrets) == []
    assert leaks_in_redis(env["STATE_REDIS_URL"], secrets) == []


# -- everything the suite left ----------------------------------------------------------------------

def test_zz_logs_and_redis_left_by_the_whole_suite_hold_no_secret(tmp_path_factory: pytest.TempPathFactory) -> None:
    secrets = known_secrets()
    since = process_started_at()
    files = log_files(tmp_path_factory.getbasetemp(), since=since) + log_files(ROOT / "logs", since=since)
    assert leaks_in_files(files, secrets) == []
    for db in TEST_DATABASES:
        assert leaks_in_redis(redis_db_url(server_url(), db), secrets) == []
