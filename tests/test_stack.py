"""The simulated stack (sandbox/stack.py) on its own: what it gives the service, what it skips and
why, and that stopping it (or a service process) leaves nothing behind."""

from __future__ import annotations

import socket
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

import pytest

import sandbox.stack
from sandbox.report import summary_tables
from sandbox.samples import kmrl_samples
from sandbox.stack import RedisLayout, ServiceProcess, Stack, session_members
from tests.conftest import flushed_db_url

#: A child that ignores SIGTERM, started in the background by a shell that waits for it.
STUBBORN_CHILD = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                  "open(__import__('sys').argv[1], 'w').close(); time.sleep(300)")


def accepts(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def layout() -> RedisLayout:
    url = flushed_db_url(10)
    return RedisLayout(url, url, url, url)


def test_email_is_skipped_with_the_reason_when_dovecot_is_missing(tmp_path, layout, monkeypatch):
    monkeypatch.setattr(sandbox.stack, "dovecot_binary", lambda: None)
    with Stack(root=tmp_path, redis=layout, sources=("email", "maximo"), key_prefix="kmrl-stack-test:") as stack:
        stack.seed(kmrl_samples())
        env = stack.env()
        assert stack.skipped == {"email": "Dovecot is not installed (apt-get install -y dovecot-imapd)"}
        assert stack.active_sources == ["maximo"]
        assert not any(name.startswith("EMAIL_") and name != "EMAIL_SYNC_MINUTES" for name in env)
        minutes = [env[f"{source}_SYNC_MINUTES"] for source in ("EMAIL", "MAXIMO", "SHAREPOINT", "WHATSAPP")]
        assert minutes == ["0", "1", "0", "0"]
        assert env["MAXIMO_URL"].startswith("https://") and env["MAXIMO_CA_FILE"].endswith("ca.pem")
        table = summary_tables(["email", "maximo"], {"maximo": {"fetched": 6, "new": 6}},
                               {"maximo": {"language": Counter(en=6), "department": Counter(Engineering=6)}},
                               stack.skipped)
        assert "email" in table and "skipped: Dovecot is not installed" in table


def test_the_service_gets_the_stacks_settings_and_none_of_the_callers(tmp_path, layout, monkeypatch):
    monkeypatch.setenv("MAXIMO_API_KEY", "the-callers-own-key")
    monkeypatch.setenv("EMAIL_ACCOUNTS_FILE", "/etc/the-callers-accounts.toml")
    with Stack(root=tmp_path, redis=layout, sources=("maximo",)) as stack:
        env = stack.process_env()
        assert env["MAXIMO_API_KEY"] != "the-callers-own-key"
        assert "EMAIL_ACCOUNTS_FILE" not in env and env["KMRL_ENV_FILE"] == ""
        assert env["STATE_REDIS_URL"] == env["CELERY_BROKER_URL"] == layout.state_url
        settings = stack.settings()
        assert settings.hub_api_url == stack.running.hub_url and settings.state_redis_url == layout.state_url


def test_stop_closes_every_port_the_stack_opened(tmp_path, layout):
    stack = Stack(root=tmp_path, redis=layout, sources=("maximo", "whatsapp", "sharepoint"),
                  key_prefix="kmrl-stack-test:").start()
    try:
        urls = [stack.running.hub_url, stack.running.maximo_url, stack.running.whatsapp_url,
                stack.running.webhook_url, stack.running.graph.url]
        assert all(accepts(url) for url in urls)
    finally:
        stack.stop()
        stack.stop()  # a second stop is harmless
    assert not any(accepts(url) for url in urls)


def test_stopping_a_service_process_ends_every_process_it_forked(tmp_path):
    ready = tmp_path / "child-ready"
    process = ServiceProcess("shell", ["sh", "-c", f'"{sys.executable}" -c "$0" "$1" & wait', STUBBORN_CHILD,
                                       str(ready)], env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path,
                             log_path=tmp_path / "shell.log")
    deadline = time.monotonic() + 20
    while not ready.exists():
        assert time.monotonic() < deadline, process.tail()
        time.sleep(0.05)
    assert len(session_members(process.pid)) == 2  # the shell and its child
    process.stop(grace=1)
    assert session_members(process.pid) == []
