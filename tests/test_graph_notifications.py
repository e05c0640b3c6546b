"""SharePoint change notifications end to end, over real sockets: the Graph simulator (TLS) creates
subscriptions after validating the web app (a real gunicorn serving TLS with a certificate of a test
CA, as behind the operator's proxy), posts its notifications there, the web app asks for the drive's
sync through the scheduler's trigger, and a real Celery worker (threads, in this process) runs the
delta sync into the Hub simulator. Broker, results and state are test databases 5, 6 and 8."""

from __future__ import annotations

import hashlib
import itertools
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from celery.contrib.testing.worker import start_worker

import cli
import scheduler
from base.state import StateStore, metric_field
from config.settings import Settings, redis_db_url
from connectors import registry
from connectors import sharepoint_subscriptions as push
from connectors.service import Service
from sandbox.graph import SITES_READ_ALL, GraphSimulator
from sandbox.graph_store import Drive
from sandbox.graph_subscriptions import FILES_READWRITE_ALL
from sandbox.hub import RunningHub, running_hub
from sandbox.servers import free_port
from sandbox.tls import CertAuthority
from tests import waiting
from tests.conftest import flushed_db_url, make_settings, server_url
from tests.readme_commands import readme_command

BROKER_DB, RESULTS_DB, STATE_DB = 5, 6, 8
SECRET = "graph-client-state-secret-5e0c9d7a13f2"
SITE = "sites/operations"
ROOT = Path(__file__).resolve().parents[1]
_libraries = itertools.count(1)


def wait_for(predicate: Callable[[], Any], *, timeout: float = 30.0, what: str = "condition") -> Any:
    return waiting.wait_for(predicate, timeout=timeout, what=what, interval=0.05)


@dataclass
class Stack:
    ca: CertAuthority
    sim: GraphSimulator
    hub: RunningHub
    web: str  # the public listener, https
    settings: Settings
    state: StateStore

    @property
    def notification_url(self) -> str:
        return self.web + "/webhooks/graph"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return CertAuthority(str(tmp_path_factory.mktemp("ca")))


@pytest.fixture(scope="module")
def web(ca: CertAuthority, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """gunicorn with the production config, serving TLS itself (the proxy's part), one worker."""
    logs = tmp_path_factory.mktemp("web")
    cert = ca.issue("web", hosts=("127.0.0.1", "localhost"))
    public_port, internal_port = free_port(), free_port()
    env = {**os.environ, "KMRL_ENV_FILE": "", "STATE_REDIS_URL": redis_db_url(server_url(), STATE_DB),
           "CELERY_BROKER_URL": redis_db_url(server_url(), BROKER_DB),
           "CELERY_RESULT_BACKEND": redis_db_url(server_url(), RESULTS_DB),
           "REDBEAT_REDIS_URL": redis_db_url(server_url(), 7),
           "GRAPH_CLIENT_STATE_SECRET": SECRET, "LOG_FILE": str(logs / "web.log"), "LOG_LEVEL": "WARNING",
           "WEB_PUBLIC_HOST": "127.0.0.1", "WEB_PUBLIC_PORT": str(public_port),
           "WEB_INTERNAL_HOST": "127.0.0.1", "WEB_INTERNAL_PORT": str(internal_port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:web.gunicorn_conf", "--workers", "1",
         "--certfile", cert.cert_path, "--keyfile", cert.key_path, "web.app:create_app()"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                probe = requests.get(f"https://127.0.0.1:{internal_port}/healthz", verify=ca.ca_path, timeout=2)
                if probe.status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"gunicorn did not start: {output[-3000:]}")
            time.sleep(0.1)
        yield f"https://127.0.0.1:{public_port}"
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture(scope="module")
def stack(ca: CertAuthority, web: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("graph-push")
    sim = GraphSimulator(roles=(SITES_READ_ALL, FILES_READWRITE_ALL), notify_ca_file=ca.ca_path,
                         notify_retry_delays=(0.2, 0.5, 1.0))
    sim.store.add_drive(SITE, "Documents")
    sim.start(ca)
    with running_hub(data_dir=root / "hub") as hub:
        env = {"SHAREPOINT_URL": sim.sharepoint_url, "SHAREPOINT_SITES": SITE, "SHAREPOINT_TENANT_ID": sim.tenant_id,
               "SHAREPOINT_CLIENT_ID": sim.client_id, "SHAREPOINT_CLIENT_SECRET": sim.client_secret,
               "GRAPH_BASE_URL": sim.graph_url, "ENTRA_AUTHORITY": sim.authority_host,
               "SHAREPOINT_CA_FILE": ca.ca_path, "SHAREPOINT_SCOPE_CACHE_SECONDS": "0",
               "GRAPH_NOTIFICATION_URL": web + "/webhooks/graph", "GRAPH_CLIENT_STATE_SECRET": SECRET,
               "WORKER_LIVENESS_FILE": str(root / "worker.alive"),
               # Only notifications start runs here: no start sync (its ticks would list the scopes).
               "SYNC_AT_START": "0"}
        settings = make_settings(root, flushed_db_url(STATE_DB), broker_url=flushed_db_url(BROKER_DB),
                                 result_backend=flushed_db_url(RESULTS_DB), redbeat_redis_url=flushed_db_url(7),
                                 hub_api_url=hub.url, hub_api_token=hub.token, environ=env)
        scheduler.configure(settings, sources=registry.SOURCES)
        try:
            with start_worker(scheduler.app, pool="threads", concurrency=3, perform_ping_check=False,
                              loglevel="WARNING", shutdown_timeout=15):
                yield Stack(ca=ca, sim=sim, hub=hub, web=web, settings=settings,
                            state=StateStore.from_url(settings.state_redis_url))
        finally:
            sim.stop()


def new_library(stack: Stack) -> Drive:
    """A library of its own for one test (the site's other libraries are synced too, unseen)."""
    return stack.sim.store.add_drive(SITE, f"Library {next(_libraries)}")


def subscribe(stack: Stack, drive: Drive) -> push.SubscriptionRecord:
    """Runs the subscriptions task on the worker and waits for the drive's record."""
    scheduler.subscriptions.delay()
    store = push.SubscriptionStore(stack.state)
    record = wait_for(lambda: (r := store.get(drive.id)) is not None and r.id and r, what="the drive's subscription")
    assert isinstance(record, push.SubscriptionRecord)
    return record


def in_hub(stack: Stack, *contents: bytes) -> int:
    """How many of ``contents`` the Hub holds."""
    held = {d["sha256"] for d in stack.hub.sim.state()["documents"].values()}
    return sum(1 for c in contents if hashlib.sha256(c).hexdigest() in held)


def counter(state: StateStore, outcome: str) -> float:
    counters, _ = state.metrics()
    return counters.get(metric_field("kmrl_graph_notifications_total", {"outcome": outcome}), 0.0)


def runs_of(state: StateStore, drive: Drive) -> int:
    return len(state.redis.lrange(state.keys.history("sharepoint", drive.id), 0, -1))


def test_the_worker_subscribes_the_libraries_as_it_starts(stack: Stack) -> None:
    documents = stack.sim.store.drive(SITE, "Documents")  # the one library there was at start
    wait_for(lambda: stack.sim.subscriptions.for_drive(documents), what="the start's subscription")
    record = push.SubscriptionStore(stack.state).get(documents.id)
    assert record is not None and record.id == stack.sim.subscriptions.for_drive(documents)[0].id


def test_a_drive_is_subscribed_after_graph_validated_the_web_app(stack: Stack) -> None:
    drive = new_library(stack)
    record = subscribe(stack, drive)
    [sub] = stack.sim.subscriptions.for_drive(drive)
    assert (record.id, record.instance, record.resource) == (sub.id, SITE, f"drives/{drive.id}/root")
    assert abs(record.expires - sub.expires_at) < 1
    assert sub.change_type == "updated" and sub.notification_url == stack.notification_url
    assert sub.lifecycle_url == stack.notification_url + "/lifecycle"
    assert sub.client_state == push.client_state(SECRET, drive.id) and SECRET not in (sub.client_state or "")
    validated = {url: outcome for url, outcome in stack.sim.subscriptions.validations}
    assert validated[stack.notification_url] == 200 and validated[stack.notification_url + "/lifecycle"] == 200
    assert push.SubscriptionStore(stack.state).drive_of(sub.id) == drive.id


def test_ten_file_changes_reach_the_hub_without_the_tick_once_each(stack: Stack) -> None:
    drive = new_library(stack)
    subscribe(stack, drive)
    contents = [f"Freshness check {n}: circular on platform screen doors, {time.time()}".encode() for n in range(10)]
    for n, content in enumerate(contents):
        stack.sim.store.put_file(drive, f"Circular {n}.txt", content)
    wait_for(lambda: in_hub(stack, *contents) == 10, timeout=60, what="ten documents in the Hub")
    uploads = stack.hub.sim.state()["uploads_per_key"]
    assert [uploads[hashlib.sha256(c).hexdigest()] for c in contents] == [1] * 10  # none uploaded twice
    changes = [d for d in stack.sim.subscriptions.deliveries if d.kind == "change"
               and d.body["value"][0]["resource"] == f"drives/{drive.id}/root"]
    assert len(changes) >= 10 and all(d.statuses[-1] == 202 for d in changes if d.delivered)
    assert counter(stack.state, "accepted") >= 10
    # Nothing but the notifications asked for these runs: no tick ran (it would have listed the scopes).
    assert not stack.state.redis.exists(stack.state.keys.scopes("sharepoint", SITE))
    # The trigger rule made the burst of notifications a run or two, not one run per change.
    wait_for(lambda: runs_of(stack.state, drive) >= 1, what="the run's record")  # written after its uploads
    assert runs_of(stack.state, drive) <= 3


def test_the_validation_handshake_echoes_the_token_as_plain_text(stack: Stack) -> None:
    token = "Validation: <script>alert('x')</script> & Request-Id: 42"
    answer = requests.post(stack.notification_url, params={"validationToken": token}, data=b"",
                           headers={"Content-Type": "text/plain; charset=utf-8"}, verify=stack.ca.ca_path, timeout=10)
    assert answer.status_code == 200 and answer.text == token
    assert answer.headers["Content-Type"].startswith("text/plain")
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_a_notification_with_a_wrong_client_state_is_ignored_and_counted(stack: Stack) -> None:
    drive = new_library(stack)
    record = subscribe(stack, drive)
    before = (counter(stack.state, "bad_client_state"), counter(stack.state, "unknown_subscription"))
    forged = {"value": [{"subscriptionId": record.id, "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
                         "changeType": "updated", "resource": f"drives/{drive.id}/root", "clientState": "guess",
                         "tenantId": stack.sim.tenant_id}]}
    unknown = {"value": [{"subscriptionId": "00000000-0000-0000-0000-000000000000", "changeType": "updated",
                          "resource": "drives/b!unknown/root", "clientState": "guess"}]}
    for body in (forged, unknown):
        answer = requests.post(stack.notification_url, json=body, verify=stack.ca.ca_path, timeout=10)
        assert answer.status_code == 202
    assert (counter(stack.state, "bad_client_state"), counter(stack.state, "unknown_subscription")) == (
        before[0] + 1, before[1] + 1)
    time.sleep(1.0)
    assert runs_of(stack.state, drive) == 0  # no run was asked for
    # The same notification with the drive's clientState does ask for one.
    forged["value"][0]["clientState"] = push.client_state(SECRET, drive.id)
    assert requests.post(stack.notification_url, json=forged, verify=stack.ca.ca_path, timeout=10).status_code == 202
    wait_for(lambda: runs_of(stack.state, drive) >= 1, what="the run the genuine notification asked for")


def test_a_subscription_is_renewed_before_it_expires(stack: Stack) -> None:
    drive = new_library(stack)
    settings = push.PushSettings(notification_url=stack.notification_url,
                                 lifecycle_url=stack.notification_url + "/lifecycle", client_state_secret=SECRET,
                                 lifetime=600.0, renew_margin=360.0)
    [connector] = Service(stack.settings).connectors("sharepoint")
    first = push.ensure_subscriptions([(SITE, connector)], stack.state, settings)[SITE]
    assert first[drive.id] == push.CREATED
    record = push.SubscriptionStore(stack.state).get(drive.id)
    assert record is not None
    assert push.ensure_subscriptions([(SITE, connector)], stack.state, settings)[SITE][drive.id] == push.KEPT
    later = push.ensure_subscriptions([(SITE, connector)], stack.state, settings,
                                      clock=lambda: time.time() + 300)[SITE]
    assert later[drive.id] == push.RENEWED
    renewed = push.SubscriptionStore(stack.state).get(drive.id)
    assert renewed is not None and renewed.id == record.id and renewed.expires >= record.expires + 290
    [sub] = stack.sim.subscriptions.for_drive(drive)
    assert abs(sub.expires_at - renewed.expires) < 1


def test_subscription_removed_is_recreated_and_the_drive_synced(stack: Stack) -> None:
    drive = new_library(stack)
    record = subscribe(stack, drive)
    stack.sim.subscriptions.lifecycle(record.id, "subscriptionRemoved")
    store = push.SubscriptionStore(stack.state)
    fresh = wait_for(lambda: (r := store.get(drive.id)) is not None and r.id != record.id and r,
                     what="a new subscription")
    assert [s.id for s in stack.sim.subscriptions.for_drive(drive)] == [fresh.id]
    wait_for(lambda: runs_of(stack.state, drive) >= 1, what="the sync after the re-subscription")
    assert counter(stack.state, "lifecycle_subscriptionRemoved") >= 1


def test_reauthorization_required_renews_the_subscription(stack: Stack) -> None:
    drive = new_library(stack)
    record = subscribe(stack, drive)
    stack.sim.subscriptions.lifecycle(record.id, "reauthorizationRequired")
    store = push.SubscriptionStore(stack.state)
    renewed = wait_for(lambda: (r := store.get(drive.id)) is not None and r.renewed > record.renewed and r,
                       what="the renewal")
    assert renewed.id == record.id


def test_missed_notifications_ask_for_a_sync(stack: Stack) -> None:
    drive = new_library(stack)
    record = subscribe(stack, drive)
    subs = stack.sim.subscriptions
    with subs._lock:  # Graph drops what it could not deliver: this change is never notified
        held = subs.subscriptions.pop(record.id)
    content = b"A change Graph failed to notify: track circuit report."
    stack.sim.store.put_file(drive, "Missed.txt", content)
    with subs._lock:
        subs.subscriptions[record.id] = held
    time.sleep(0.5)
    assert in_hub(stack, content) == 0
    subs.lifecycle(record.id, "missed")
    wait_for(lambda: in_hub(stack, content) == 1, what="the missed change in the Hub")


def test_an_expired_subscription_is_created_again_and_the_drive_synced(stack: Stack) -> None:
    drive = new_library(stack)
    record = subscribe(stack, drive)
    stack.sim.subscriptions.expire(record.id)
    content = b"Changed while nobody was notified: signalling memo."
    stack.sim.store.put_file(drive, "While expired.txt", content)
    scheduler.subscriptions.delay()
    store = push.SubscriptionStore(stack.state)
    wait_for(lambda: (r := store.get(drive.id)) is not None and r.id != record.id, what="a new subscription")
    wait_for(lambda: in_hub(stack, content) == 1, what="the change made while expired, in the Hub")
    assert store.drive_of(record.id) is None  # the old id no longer maps to the drive


def test_status_shows_each_subscription_and_its_expiry(stack: Stack) -> None:
    drive = new_library(stack)
    record = subscribe(stack, drive)
    data = cli.status_data(Service(stack.settings))
    [sharepoint] = [s for s in data["sources"] if s["source"] == "sharepoint"]
    shown = {s["drive"]: s for s in sharepoint["subscriptions"]}
    assert shown[drive.id]["id"] == record.id and abs(shown[drive.id]["expires"] - record.expires) < 1


def test_the_readme_subscriptions_command_checks_them_and_renews_all_on_demand(
        stack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    drive = new_library(stack)
    record = subscribe(stack, drive)
    env = {**stack.settings.environ, "KMRL_ENV_FILE": "", "STATE_REDIS_URL": stack.settings.state_redis_url,
           "LOG_FILE": stack.settings.log_file}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    command = shlex.split(readme_command("kmrl-connectors subscriptions"))[1:]
    assert cli.main(command) == 0
    shown = capsys.readouterr().out
    assert "kept" in shown
    assert f"{SITE} / Documents" in shown  # the library as a person reads it, beside its drive id
    assert cli.main([*command, "--action", "renew"]) == 0
    renewed = push.SubscriptionStore(stack.state).get(drive.id)
    assert renewed is not None and renewed.id == record.id and renewed.renewed > record.renewed
    assert "renewed" in capsys.readouterr().out
    monkeypatch.delenv("GRAPH_NOTIFICATION_URL")
    assert cli.main(command) == 2
    assert "GRAPH_NOTIFICATION_URL is not set" in capsys.readouterr().out
