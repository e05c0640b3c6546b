"""``rediss://`` against a real redis-server speaking TLS only (``--port 0 --tls-port``), with a
certificate from a throwaway CA (sandbox.tls): every Redis client the service builds (state store,
web app, /metrics, Celery broker, result backend, RedBeat) verifies the certificate, against
REDIS_CA_FILE when set and the system CAs otherwise, with no ``?ssl_cert_reqs=`` in the URL."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from celery import Celery
from redbeat.schedulers import get_redis

from base.state import StateStore
from config.celery_config import celery_settings
from config.redis_tls import celery_tls_settings, redis_tls_kwargs
from config.settings import Settings
from sandbox.servers import free_port
from sandbox.tls import CertAuthority
from tests.conftest import skip_or_fail
from web.app import redis_for_web
from web.metrics import state_for_metrics

PASSWORD = "tls-redis-password-0a7f3e"


@dataclass
class TlsRedis:
    url: str  # rediss://:password@127.0.0.1:port (no database)
    ca_file: str  # the CA that signed the server's certificate
    other_ca_file: str  # a CA that did not


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        skip_or_fail("redis-server is not installed (make install installs it)")
    folder = tmp_path_factory.mktemp("tls-redis")
    ca = CertAuthority(str(folder / "ca"))
    other = CertAuthority(str(folder / "other-ca"), name="Some Other CA")
    cert = ca.issue("redis", hosts=("localhost", "127.0.0.1"))
    port = free_port()
    process = subprocess.Popen(
        [str(binary), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--tls-cert-file", cert.cert_path,
         "--tls-key-file", cert.key_path, "--tls-ca-cert-file", ca.ca_path, "--tls-auth-clients", "no",
         "--requirepass", PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}"
    try:
        client = redis.Redis.from_url(url + "/0", ssl_ca_certs=ca.ca_path, socket_connect_timeout=2)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None:
                    output = process.stdout.read().decode() if process.stdout else ""
                    skip_or_fail(f"redis-server did not start with TLS (built without it?): {output[-2000:]}")
                assert time.monotonic() < deadline, "redis-server with TLS did not answer"
                time.sleep(0.1)
        client.close()
        yield TlsRedis(url, ca.ca_path, other.ca_path)
    finally:
        process.terminate()
        process.wait(timeout=20)


def settings_for(server: TlsRedis, ca_file: str) -> Settings:
    return Settings.from_env({"REDIS_URL": server.url + "/0", "REDIS_CA_FILE": ca_file, "KMRL_ENV_FILE": ""})


# -- redis-py clients: state store, web app, /metrics ------------------------------------------------------

def test_the_state_store_verifies_against_the_ca_file(tls_redis: TlsRedis) -> None:
    state = StateStore.from_settings(settings_for(tls_redis, tls_redis.ca_file))
    state.set_cursor("tls", "scope", {"uid": 7})
    assert state.get_cursor("tls", "scope") == {"uid": 7}


def test_without_a_ca_file_the_system_cas_are_used_and_refuse_a_private_ca(tls_redis: TlsRedis) -> None:
    state = StateStore.from_settings(settings_for(tls_redis, ""))
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        state.redis.ping()


def test_a_certificate_from_another_ca_is_refused(tls_redis: TlsRedis) -> None:
    state = StateStore.from_settings(settings_for(tls_redis, tls_redis.other_ca_file))
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        state.redis.ping()


def test_the_web_app_and_metrics_clients_verify_too(tls_redis: TlsRedis) -> None:
    good = settings_for(tls_redis, tls_redis.ca_file)
    assert redis_for_web(good).ping()
    assert state_for_metrics(good).redis.ping()
    wrong = settings_for(tls_redis, tls_redis.other_ca_file)
    for client in (redis_for_web(wrong), state_for_metrics(wrong).redis):
        with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            client.ping()


# -- Celery: broker (kombu), result backend, RedBeat ------------------------------------------------------

def celery_app(settings: Settings) -> Celery:
    app = Celery("tls-test", set_as_current=False)
    conf = celery_settings(settings, longest_hard_limit=60)
    conf["broker_connection_retry_on_startup"] = False
    app.conf.update(conf)
    return app


def test_celery_broker_backend_and_redbeat_connect_over_verified_tls(tls_redis: TlsRedis) -> None:
    app = celery_app(settings_for(tls_redis, tls_redis.ca_file))
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1)
        with connection.SimpleQueue("kmrl-tls-test") as queue:
            queue.put({"ok": 1})
            assert queue.get(timeout=5).payload == {"ok": 1}
    assert app.backend.client.ping()
    assert get_redis(app).ping()


def test_celery_refuses_a_certificate_from_another_ca(tls_redis: TlsRedis) -> None:
    """kombu alone would fall back to an unverified connection for a bare rediss:// URL."""
    app = celery_app(settings_for(tls_redis, tls_redis.other_ca_file))
    with app.connection_for_write() as connection, pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        connection.ensure_connection(max_retries=0)
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        app.backend.client.ping()
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        get_redis(app).ping()


# -- the options themselves -------------------------------------------------------------------------------

def test_plain_urls_get_no_tls_options() -> None:
    assert redis_tls_kwargs("redis://localhost:6379/0", "/etc/ca.pem") == {}
    assert celery_tls_settings(broker_url="redis://h/0", result_backend="redis://h/1",
                               redbeat_redis_url="redis://h/2", ca_file="/etc/ca.pem") == {}


def test_tls_options_require_a_verified_certificate() -> None:
    assert redis_tls_kwargs("rediss://h:6380/0") == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True}
    assert redis_tls_kwargs("REDISS://h/0", "/etc/kmrl/redis-ca.pem")["ssl_ca_certs"] == "/etc/kmrl/redis-ca.pem"
    mixed = celery_tls_settings(broker_url="rediss://h/0", result_backend="redis://h/1",
                                redbeat_redis_url="rediss://h/2")
    assert set(mixed) == {"broker_use_ssl", "redbeat_redis_use_ssl"}


def test_the_readme_says_how_to_give_a_ca_file() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "REDIS_CA_FILE" in readme and "rediss://" in readme


# -- the operator's commands: check, probe beat ------------------------------------------------------------

def test_check_and_probe_beat_verify_against_the_ca_file(tls_redis: TlsRedis,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import cli

    good = settings_for(tls_redis, tls_redis.ca_file)
    lines = cli.CheckLines()
    assert cli._check_redis_roles(lines, good) == set()
    printed = capsys.readouterr().out
    assert "PASS" in printed and "FAIL" not in printed
    assert cli._probe_beat(good) == (False, "no beat holds the RedBeat lock")

    wrong = settings_for(tls_redis, tls_redis.other_ca_file)
    assert cli._check_redis_roles(cli.CheckLines(), wrong)
    assert "FAIL" in capsys.readouterr().out
    held, detail = cli._probe_beat(wrong)
    assert not held and ("does not answer" in detail or "TLS" in detail)
