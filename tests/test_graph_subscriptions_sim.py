"""The Graph simulator's change notifications, as a client sees them over HTTPS: subscriptions on drive
roots and their refusals, the validation handshake sent to a subscriber (a real TLS server here whose
answers each test chooses), renewal, deletion, listing, deliveries and their retries, lifecycle events."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from werkzeug.wrappers import Request, Response

from sandbox.graph import SITES_READ_ALL, GraphSimulator
from sandbox.graph_store import Drive
from sandbox.graph_subscriptions import FILES_READWRITE_ALL, MAX_DRIVE_MINUTES, graph_time
from sandbox.servers import ServerThread
from sandbox.tls import CertAuthority


@dataclass
class Subscriber:
    """A notification endpoint: answers validations as ``mode`` says, notifications with ``status``."""

    mode: str = "echo"  # echo | wrong | status500 | html | slow
    status: list[int] = field(default_factory=list)  # answers for the next notifications, then 202
    received: list[dict[str, Any]] = field(default_factory=list)
    validations: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        token = request.args.get("validationToken")
        if token is not None:
            with self.lock:
                self.validations.append(token)
            if self.mode == "slow":
                time.sleep(1.5)
            if self.mode == "status500":
                response = Response("no", status=500)
            elif self.mode == "wrong":
                response = Response(token + "x", mimetype="text/plain")
            elif self.mode == "html":
                response = Response(token, mimetype="text/html")
            else:
                response = Response(token, mimetype="text/plain")
            return response(environ, start_response)
        with self.lock:
            self.received.append(json.loads(request.get_data()))
            status = self.status.pop(0) if self.status else 202
        return Response("", status=status)(environ, start_response)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return CertAuthority(str(tmp_path_factory.mktemp("ca")))


@pytest.fixture
def subscriber(ca: CertAuthority) -> Iterator[tuple[Subscriber, str]]:
    app = Subscriber()
    cert = ca.issue("subscriber", hosts=("127.0.0.1",))
    with ServerThread(app, ssl_context=cert.server_context()) as server:
        yield app, server.url + "/notify"


@pytest.fixture
def sim(ca: CertAuthority) -> Iterator[GraphSimulator]:
    sim = GraphSimulator(roles=(SITES_READ_ALL, FILES_READWRITE_ALL), notify_ca_file=ca.ca_path,
                         notify_retry_delays=(0.1, 0.2), validation_timeout=1.0)
    sim.store.add_drive("sites/operations", "Documents")
    sim.start(ca)
    yield sim
    sim.stop()


def drive_of(sim: GraphSimulator) -> Drive:
    return sim.store.drive("sites/operations", "Documents")


class Graph:
    """Requests with an app's bearer token, verified against the test CA (named on every request:
    REQUESTS_CA_BUNDLE would win over a session's own setting)."""

    def __init__(self, token: str, ca_path: str) -> None:
        self.headers = {"Authorization": f"Bearer {token}"}
        self.ca_path = ca_path

    def __getattr__(self, method: str) -> Any:
        def send(url: str, **kwargs: Any) -> requests.Response:
            return requests.request(method.upper(), url, headers=self.headers, verify=self.ca_path, timeout=10,
                                    **kwargs)
        return send


def graph(sim: GraphSimulator, ca: CertAuthority, client_id: str | None = None, secret: str | None = None) -> Any:
    token = requests.post(f"{sim.url}/{sim.tenant_id}/oauth2/v2.0/token", verify=ca.ca_path, data={
        "grant_type": "client_credentials", "client_id": client_id or sim.client_id,
        "client_secret": secret or sim.client_secret, "scope": "https://graph.microsoft.com/.default"}).json()
    return Graph(token["access_token"], ca.ca_path)


def body(sim: GraphSimulator, url: str, **overrides: Any) -> dict[str, Any]:
    return {"changeType": "updated", "notificationUrl": url, "resource": f"/drives/{drive_of(sim).id}/root",
            "expirationDateTime": graph_time(time.time() + 3600), "clientState": "state-1", **overrides}


def test_a_subscription_is_created_only_after_the_validation_handshake(sim, ca, subscriber):
    app, url = subscriber
    answer = graph(sim, ca).post(sim.graph_url + "/subscriptions",
                                 json=body(sim, url, lifecycleNotificationUrl=url + "/lifecycle"))
    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert created["changeType"] == "updated" and created["clientState"] == "state-1"
    assert created["expirationDateTime"].endswith("Z") and uuid.UUID(created["id"])
    assert len(app.validations) == 2  # the notification URL and the lifecycle URL
    assert all(t.startswith("Validation: ") and " " in t for t in app.validations)  # URL-decoded by the server


@pytest.mark.parametrize(("mode", "code", "message"), [
    ("wrong", "ValidationError", "Response must exactly match validationToken"),
    ("html", "ValidationError", "Response must exactly match validationToken"),
    ("status500", "ValidationError", "must respond with 200 OK"),
    ("slow", "InvalidRequest", "Subscription validation request timed out."),
])
def test_a_failed_validation_creates_nothing(sim, ca, subscriber, mode, code, message):
    app, url = subscriber
    app.mode = mode
    answer = graph(sim, ca).post(sim.graph_url + "/subscriptions", json=body(sim, url))
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == code and message in error["message"] and "request-id" in error["innerError"]
    assert not sim.subscriptions.for_drive(drive_of(sim))


def test_a_subscriber_whose_certificate_is_not_trusted_fails_validation(sim, ca, tmp_path):
    other = CertAuthority(str(tmp_path / "other-ca"))
    cert = other.issue("stranger", hosts=("127.0.0.1",))
    with ServerThread(Subscriber(), ssl_context=cert.server_context()) as server:
        answer = graph(sim, ca).post(sim.graph_url + "/subscriptions", json=body(sim, server.url + "/notify"))
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "ValidationError"


@pytest.mark.parametrize(("overrides", "code", "fragment"), [
    ({"changeType": "created,updated"}, "InvalidRequest", "changeType"),
    ({"notificationUrl": "http://127.0.0.1:9/notify"}, "InvalidRequest", "https"),
    ({"clientState": "x" * 129}, "InvalidRequest", "128"),
    ({"expirationDateTime": graph_time(time.time() + (MAX_DRIVE_MINUTES + 5) * 60)}, "ExtensionError",
     "42300 minutes"),
    ({"expirationDateTime": None}, "InvalidRequest", "expirationDateTime is a required property"),
    ({"resource": "/drives/b!nosuchdrive/root"}, "InvalidRequest", "Unable to find target address"),
])
def test_a_request_graph_refuses_is_answered_400_without_a_validation(sim, ca, subscriber, overrides, code, fragment):
    app, url = subscriber
    answer = graph(sim, ca).post(sim.graph_url + "/subscriptions", json=body(sim, url, **overrides))
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == code and fragment in answer.json()["error"]["message"]
    assert app.validations == []


def test_subscriptions_need_files_readwrite_all(sim, ca, subscriber):
    sim.add_app("reader-app", "reader-secret-0123456789", tenant_id=sim.tenant_id, roles=(SITES_READ_ALL,))
    answer = graph(sim, ca, "reader-app", "reader-secret-0123456789").post(sim.graph_url + "/subscriptions",
                                                                          json=body(sim, subscriber[1]))
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "accessDenied"
    assert requests.post(sim.graph_url + "/subscriptions", json=body(sim, subscriber[1]),
                         verify=ca.ca_path).status_code == 401


def test_renew_list_and_delete(sim, ca, subscriber):
    session = graph(sim, ca)
    sub_id = session.post(sim.graph_url + "/subscriptions", json=body(sim, subscriber[1])).json()["id"]
    later = graph_time(time.time() + 7200)
    renewed = session.patch(f"{sim.graph_url}/subscriptions/{sub_id}", json={"expirationDateTime": later})
    assert renewed.status_code == 200 and renewed.json()["expirationDateTime"][:19] == later[:19]
    too_far = graph_time(time.time() + (MAX_DRIVE_MINUTES + 1) * 60)
    assert session.patch(f"{sim.graph_url}/subscriptions/{sub_id}",
                         json={"expirationDateTime": too_far}).json()["error"]["code"] == "ExtensionError"
    assert [s["id"] for s in session.get(sim.graph_url + "/subscriptions").json()["value"]] == [sub_id]
    assert session.delete(f"{sim.graph_url}/subscriptions/{sub_id}").status_code == 204
    assert session.delete(f"{sim.graph_url}/subscriptions/{sub_id}").status_code == 404
    assert session.patch(f"{sim.graph_url}/subscriptions/{sub_id}", json={"expirationDateTime": later}).status_code \
        == 404
    assert session.get(sim.graph_url + "/subscriptions").json()["value"] == []


def test_an_expired_subscription_is_gone(sim, ca, subscriber):
    session = graph(sim, ca)
    sub_id = session.post(sim.graph_url + "/subscriptions", json=body(sim, subscriber[1])).json()["id"]
    sim.subscriptions.expire(sub_id)
    assert session.get(f"{sim.graph_url}/subscriptions/{sub_id}").status_code == 404
    sim.store.put_file(drive_of(sim), "After expiry.txt", b"nobody hears this")
    time.sleep(0.3)
    assert subscriber[0].received == []


def test_each_change_is_notified_and_a_failed_delivery_is_retried(sim, ca, subscriber):
    app, url = subscriber
    sub_id = graph(sim, ca).post(sim.graph_url + "/subscriptions", json=body(sim, url)).json()["id"]
    app.status = [500, 503]  # the first two tries fail
    drive = drive_of(sim)
    item = sim.store.put_file(drive, "Circular.txt", b"one")
    [delivery] = sim.subscriptions.wait_delivered(1)
    assert delivery.statuses == [500, 503, 202]
    note = app.received[-1]["value"][0]
    assert note == {"subscriptionId": sub_id, "subscriptionExpirationDateTime": note["subscriptionExpirationDateTime"],
                    "changeType": "updated", "resource": f"drives/{drive.id}/root", "clientState": "state-1",
                    "tenantId": sim.tenant_id}
    sim.store.rename(drive, "Circular.txt", "Circular v2.txt")
    sim.store.delete(drive, "Circular v2.txt")
    assert len(sim.subscriptions.wait_delivered(3)) == 3
    assert item.deleted


def test_a_delivery_is_discarded_after_the_last_retry(sim, ca, subscriber):
    app, url = subscriber
    graph(sim, ca).post(sim.graph_url + "/subscriptions", json=body(sim, url))
    app.status = [500, 500, 500]
    sim.store.put_file(drive_of(sim), "Lost.txt", b"lost")
    deadline = time.monotonic() + 5
    while not sim.subscriptions.deliveries[0].discarded and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sim.subscriptions.deliveries[0].discarded and sim.subscriptions.deliveries[0].statuses == [500] * 3


def test_lifecycle_events_go_to_the_lifecycle_url_and_removal_ends_the_subscription(sim, ca, subscriber):
    app, url = subscriber
    sub_id = graph(sim, ca).post(sim.graph_url + "/subscriptions",
                                 json=body(sim, url, lifecycleNotificationUrl=url + "/lifecycle")).json()["id"]
    for event in ("reauthorizationRequired", "missed", "subscriptionRemoved"):
        sim.subscriptions.lifecycle(sub_id, event)
    sim.subscriptions.wait_delivered(3)
    events = [r["value"][0] for r in app.received]
    assert [e["lifecycleEvent"] for e in events] == ["reauthorizationRequired", "missed", "subscriptionRemoved"]
    assert all(set(e) == {"subscriptionId", "subscriptionExpirationDateTime", "tenantId", "clientState",
                          "lifecycleEvent"} for e in events)
    assert all(d.url == url + "/lifecycle" for d in sim.subscriptions.deliveries)
    assert sim.subscriptions.for_drive(drive_of(sim)) == []
