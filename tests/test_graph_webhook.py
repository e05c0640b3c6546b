"""The Graph notification routes' failure paths over a real HTTP socket (the public app in a server
thread), the subscription settings, the clientState derivation and the state keys they use. The
happy paths with the Graph simulator, gunicorn and a worker are in test_graph_notifications.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

import scheduler
from base.schema import SchemaMismatch, check_keys
from base.state import StateStore, metric_field
from config.settings import Settings
from connectors import sharepoint_subscriptions as push
from sandbox.servers import ServerThread, free_port
from tests.conftest import make_settings
from utils.errors import ConfigError
from web.app import create_public_app

SECRET = "graph-client-state-secret-0a7b3c9d51e8"
DRIVE = "b!Zm9vYmFyLWRyaXZl"


def settings_with(tmp_path: Path, state_url: str, **env: str) -> Settings:
    return make_settings(tmp_path, state_url, environ=env)


@pytest.fixture
def served(tmp_path: Path, redis_url: str) -> Iterator[tuple[str, StateStore]]:
    """The public app with GRAPH_CLIENT_STATE_SECRET set, its state in test database 15."""
    app = create_public_app(settings_with(tmp_path, redis_url, GRAPH_CLIENT_STATE_SECRET=SECRET))
    with ServerThread(app) as server:
        yield server.url + "/webhooks/graph", StateStore.from_url(redis_url)


def counted(state: StateStore, outcome: str) -> float:
    counters, _ = state.metrics()
    return counters.get(metric_field("kmrl_graph_notifications_total", {"outcome": outcome}), 0.0)


def test_without_the_secret_handshakes_are_answered_and_notifications_refused_503(tmp_path, redis_url):
    with ServerThread(create_public_app(settings_with(tmp_path, redis_url))) as server:
        url = server.url + "/webhooks/graph"
        assert requests.post(url, params={"validationToken": "abc def"}).text == "abc def"
        assert requests.post(url, json={"value": []}).status_code == 503


def test_a_malformed_body_is_answered_400_and_counted(served):
    url, state = served
    for data in (b"not json", b'{"value": 3}', b"[1, 2]"):
        assert requests.post(url, data=data, headers={"Content-Type": "application/json"}).status_code == 400
    assert counted(state, "malformed") == 3


def test_an_overlong_or_empty_validation_token_is_refused(served):
    url, _ = served
    assert requests.post(url, params={"validationToken": "x" * 2000}).status_code == 400
    assert requests.post(url + "?validationToken=").status_code == 400


def test_an_unknown_lifecycle_event_or_subscription_is_ignored_with_202(served):
    url, state = served
    push.SubscriptionStore(state).save(push.SubscriptionRecord(drive=DRIVE, instance="sites/ops",
                                                               resource=f"drives/{DRIVE}/root", id="sub-1",
                                                               expires=2e9, renewed=1.0))
    good_state = push.client_state(SECRET, DRIVE)
    odd = {"value": [{"subscriptionId": "sub-1", "clientState": good_state, "lifecycleEvent": "somethingNew"},
                     {"subscriptionId": "sub-unknown", "clientState": good_state, "lifecycleEvent": "missed"},
                     "not an object"]}
    assert requests.post(url + "/lifecycle", json=odd).status_code == 202
    assert (counted(state, "malformed"), counted(state, "unknown_subscription")) == (2, 1)


def test_notifications_are_answered_503_when_redis_is_unreachable(tmp_path):
    down = f"redis://127.0.0.1:{free_port()}/15"
    with ServerThread(create_public_app(settings_with(tmp_path, down, GRAPH_CLIENT_STATE_SECRET=SECRET))) as server:
        note = {"value": [{"subscriptionId": "sub-1", "resource": f"drives/{DRIVE}/root",
                           "clientState": push.client_state(SECRET, DRIVE), "changeType": "updated"}]}
        assert requests.post(server.url + "/webhooks/graph", json=note, timeout=10).status_code == 503


def test_client_state_is_per_drive_per_secret_and_fits_graphs_limit():
    one = push.client_state(SECRET, DRIVE)
    assert one == push.client_state(SECRET, DRIVE) and len(one) <= 128 and SECRET not in one
    assert one != push.client_state(SECRET, DRIVE + "x") and one != push.client_state(SECRET + "x", DRIVE)
    assert push.client_state_matches(SECRET, DRIVE, one)
    assert not push.client_state_matches(SECRET, DRIVE, one[:-1] + ("A" if one[-1] != "A" else "B"))
    assert not push.client_state_matches(SECRET, DRIVE, None) and not push.client_state_matches("", DRIVE, one)
    assert push.drive_of_resource(f"/drives/{DRIVE}/root") == push.drive_of_resource(f"drives/{DRIVE}/root") == DRIVE
    assert push.drive_of_resource("me/drive/root") is None


@pytest.mark.parametrize(("env", "fragment"), [
    ({"GRAPH_NOTIFICATION_URL": "http://connectors.example/webhooks/graph", "GRAPH_CLIENT_STATE_SECRET": SECRET},
     "https://"),
    ({"GRAPH_NOTIFICATION_URL": "https://connectors.example/webhooks/graph"}, "GRAPH_CLIENT_STATE_SECRET"),
    ({"GRAPH_NOTIFICATION_URL": "https://connectors.example/webhooks/graph", "GRAPH_CLIENT_STATE_SECRET": SECRET,
      "GRAPH_SUBSCRIPTION_MINUTES": "43000"}, "42300"),
    ({"GRAPH_NOTIFICATION_URL": "https://connectors.example/webhooks/graph", "GRAPH_CLIENT_STATE_SECRET": SECRET,
      "GRAPH_SUBSCRIPTION_MINUTES": "600", "GRAPH_SUBSCRIPTION_RENEW_HOURS": "10"}, "RENEW_HOURS"),
])
def test_unusable_subscription_settings_are_refused(tmp_path, redis_url, env, fragment):
    with pytest.raises(ConfigError, match=fragment):
        push.PushSettings.from_settings(settings_with(tmp_path, redis_url, **env))


def test_without_a_notification_url_there_is_no_subscription_work(tmp_path, redis_url):
    settings = settings_with(tmp_path, redis_url, SHAREPOINT_URL="https://kmrl.sharepoint.com")
    off = push.PushSettings.from_settings(settings)
    assert not off.enabled
    assert "graph-subscriptions" not in scheduler.beat_schedule(settings)
    assert push.ensure_subscriptions([("sites/ops", object())], StateStore.from_url(redis_url), off) == {}  # type: ignore[list-item]
    on = settings_with(tmp_path, redis_url, GRAPH_NOTIFICATION_URL="https://connectors.example/webhooks/graph",
                       GRAPH_CLIENT_STATE_SECRET=SECRET, GRAPH_SUBSCRIPTION_CHECK_MINUTES="30")
    enabled = push.PushSettings.from_settings(on)
    assert enabled.lifecycle_url == "https://connectors.example/webhooks/graph/lifecycle"
    entry: dict[str, Any] = scheduler.beat_schedule(on)["graph-subscriptions"]
    assert entry["task"] == "kmrl.subscriptions"


def test_subscription_keys_are_known_to_the_schema_check(state: StateStore, redis_client: redis.Redis):
    store = push.SubscriptionStore(state)
    store.save(push.SubscriptionRecord(drive=DRIVE, instance="sites/ops", resource=f"drives/{DRIVE}/root",
                                       id="sub-1", expires=2e9, renewed=1.0))
    store.save(push.SubscriptionRecord(drive=DRIVE, instance="sites/ops", resource=f"drives/{DRIVE}/root",
                                       id="sub-2", expires=2e9, renewed=2.0), replaces="sub-1")
    assert state.keys.graph_subscription(DRIVE) == f"kmrl:subscription:{DRIVE}"
    assert redis_client.hgetall("kmrl:subscriptions") == {"sub-2": DRIVE}
    assert check_keys(state) == {"subscription": 1, "subscriptions": 1}
    assert [r.id for r in store.all()] == ["sub-2"]
    redis_client.delete("kmrl:subscriptions")
    redis_client.set("kmrl:subscriptions", "oops")
    with pytest.raises(SchemaMismatch):
        check_keys(state)
