"""Changes arrive without the tick: a real worker (``celery -A scheduler worker`` in its own session),
the web app, the Hub, WhatsApp and Maximo simulators (sandbox/stack.py) with every ``*_SYNC_MINUTES``
at 0, so that no beat entry exists and any run must have been triggered.

- WhatsApp: 10 signed notifications, each with one media message, spread out; the webhook's group
  commit pokes the inbox sync, and every document reaches the Hub once.
- Maximo: 10 new work orders, each followed by the trigger a Maximo automation script sends
  (``POST /sync/maximo/<site>`` on the internal listener, with the operator token); a site that is not
  configured is refused and leaves no state.

Redis test databases: 5 broker, 6 results, 7 RedBeat, 8 state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from base.state import StateStore, metric_field
from base.triggers import TRIGGER_METRIC
from config.settings import Settings
from sandbox.servers import ServerThread
from sandbox.stack import RedisLayout, ServiceProcess, Stack, celery_argv
from sandbox.whatsapp import WebhookSender
from tests.conftest import flushed_db_url

PROJECT = Path(__file__).resolve().parents[1]
OPERATOR_TOKEN = "freshness-operator-token-0123456789"
#: Longest wait for the documents of one source, seconds: bounds a hang, not a measurement.
ARRIVAL_TIMEOUT = 90.0


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, worker: ServiceProcess) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        assert worker.alive(), f"the worker died:\n{worker.tail(40)}"
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{worker.tail(40)}")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    layout = RedisLayout(*(flushed_db_url(db) for db in (5, 6, 7, 8)))
    with Stack(root=tmp_path / "stack", redis=layout, sources=("maximo", "whatsapp"), sync_minutes=0) as running:
        yield running


@pytest.fixture
def worker(stack: Stack, tmp_path: Path) -> Iterator[ServiceProcess]:
    env = stack.process_env()
    env["OPERATOR_TOKEN"] = OPERATOR_TOKEN
    process = ServiceProcess("worker", celery_argv("-A", "scheduler", "worker", "--loglevel=INFO", "--concurrency=2"),
                             env=env, cwd=PROJECT, log_path=tmp_path / "worker.log")
    state = StateStore.from_url(stack.settings().state_redis_url, prefix=stack.key_prefix)
    try:
        wait_for(lambda: state.redis.exists(state.keys.workers_alive()), timeout=60, what="the worker to start",
                 worker=process)
        yield process
    finally:
        process.stop()


def hub_documents(stack: Stack, source: str) -> list[dict[str, Any]]:
    return [doc for doc in stack.running.hub.state()["documents"].values() if doc["metadata"].get("source") == source]


def triggered(state: StateStore, source: str) -> float:
    counters, _ = state.metrics()
    return counters.get(metric_field(TRIGGER_METRIC, {"source": source, "outcome": "sent"}), 0.0)


def test_whatsapp_media_reach_the_hub_without_the_tick(stack: Stack, worker: ServiceProcess):
    cloud = stack.running.whatsapp
    assert cloud is not None
    sender = WebhookSender(stack.running.webhook_url, stack.env()["WHATSAPP_APP_SECRET"])
    state = StateStore.from_url(stack.settings().state_redis_url, prefix=stack.key_prefix)
    for n in range(10):
        media = cloud.add_media(f"Field report {n}: Aluva platform 2 signage, checked.".encode(),
                                mime_type="text/plain")
        message = cloud.message("document", media, filename=f"field-report-{n}.txt", caption=f"report {n}")
        assert sender.send(cloud.notification([message])).delivered
        time.sleep(0.3)
    wait_for(lambda: len(hub_documents(stack, "whatsapp")) >= 10, timeout=ARRIVAL_TIMEOUT,
             what="10 WhatsApp documents in the Hub", worker=worker)
    time.sleep(1.0)  # room for a duplicate, which must not come
    assert len(hub_documents(stack, "whatsapp")) == 10
    assert set(stack.running.hub.uploads_per_key.values()) == {1}
    assert 1 <= triggered(state, "whatsapp") <= 10
    assert state.get_status("whatsapp", "inbox")["state"] == "ok"


def test_maximo_trigger_syncs_a_configured_site_and_refuses_others(stack: Stack, worker: ServiceProcess):
    from web.app import create_internal_app

    maximo = stack.running.maximo
    assert maximo is not None
    settings = Settings.from_env({**stack.env(), "OPERATOR_TOKEN": OPERATOR_TOKEN})
    state = StateStore.from_url(settings.state_redis_url, prefix=stack.key_prefix)
    bearer = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    with ServerThread(create_internal_app(settings)) as internal:
        refused = requests.post(f"{internal.url}/sync/maximo/NOSUCHSITE", headers=bearer, timeout=10)
        assert refused.status_code == 404 and "not a configured Maximo site" in refused.json()["error"]
        unauthenticated = requests.post(f"{internal.url}/sync/maximo/MUTTOM", timeout=10)
        assert unauthenticated.status_code in (401, 404)
        for _ in range(10):
            maximo.add_work_order(siteid="MUTTOM", attachments=1)
            answer = requests.post(f"{internal.url}/sync/maximo/MUTTOM", headers=bearer, timeout=10)
            assert answer.status_code == 202, answer.text
            assert answer.json()["requested"] is True
            time.sleep(0.3)
        wait_for(lambda: len(hub_documents(stack, "maximo")) >= 10, timeout=ARRIVAL_TIMEOUT,
                 what="10 Maximo documents in the Hub", worker=worker)
    time.sleep(1.0)
    assert len(hub_documents(stack, "maximo")) == 10
    assert set(stack.running.hub.uploads_per_key.values()) == {1}
    assert triggered(state, "maximo") >= 1
    # Nothing was created for the refused site, and ALUVA (configured, never asked for) did not run.
    assert not state.get_status("maximo", "NOSUCHSITE")
    assert not state.redis.exists(state.keys.trigger("maximo", "NOSUCHSITE"))
    assert not state.get_status("maximo", "ALUVA")
