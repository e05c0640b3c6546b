"""The web app's access model over real sockets: one app (``web.app.create_app``) served on two
loopback ports, the public listener and the internal one (WEB_INTERNAL_PORT), as gunicorn serves it
(tests/test_web_gunicorn.py runs gunicorn itself). State in test database 15."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import requests

import cli
from config.settings import Settings
from sandbox.servers import ServerThread, free_port
from sandbox.whatsapp import WhatsAppCloudSimulator, meta_body, signature
from tests.conftest import make_settings
from web.app import create_app, create_internal_app
from web.operator import COOKIE_NAME, MIN_TOKEN_LENGTH

TOKEN = "operator-token-for-tests-3f9c2a71d04e"
APP_SECRET = "access-app-secret-8d21"
VERIFY_TOKEN = "access-verify-token-77c0"
STREAM = "kmrl:whatsapp:inbox"


@dataclass
class Served:
    public: str
    internal: str
    settings: Settings


def web_settings(tmp_path: Any, redis_url: str, internal_port: int, **environ: str) -> Settings:
    values = {"WHATSAPP_APP_SECRET": APP_SECRET, "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
              "WEB_INTERNAL_PORT": str(internal_port), **environ}
    return make_settings(tmp_path, redis_url, log_file="", environ=values)


def serve(tmp_path: Any, redis_url: str, redis_client: redis.Redis, **environ: str) -> Iterator[Served]:
    internal_port = free_port()
    settings = web_settings(tmp_path, redis_url, internal_port, **environ)
    app = create_app(settings, redis_client)
    with ServerThread(app) as public, ServerThread(app, port=internal_port) as internal:
        yield Served(public.url, internal.url, settings)


@pytest.fixture
def served(tmp_path, redis_url, redis_client) -> Iterator[Served]:
    """Both listeners, with OPERATOR_TOKEN configured."""
    yield from serve(tmp_path, redis_url, redis_client, OPERATOR_TOKEN=TOKEN)


@pytest.fixture
def served_without_token(tmp_path, redis_url, redis_client) -> Iterator[Served]:
    yield from serve(tmp_path, redis_url, redis_client)


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(base: str, token: str = TOKEN, *, origin: str | None = None) -> tuple[requests.Session, requests.Response]:
    """A browser's login: the form (which sets the login CSRF token), then its POST from ``origin``."""
    browser = requests.Session()
    form = browser.get(base + "/login")
    assert form.status_code == 200
    [login_csrf] = re.findall(r'name=login_csrf value="([^"]+)"', form.text)
    answer = browser.post(base + "/login", data={"token": token, "login_csrf": login_csrf},
                          headers={"Origin": origin or base}, allow_redirects=False)
    return browser, answer


def csrf_of(browser: requests.Session, base: str) -> str:
    [token] = set(re.findall(r'name="?csrf_token"? value="([^"]+)"', browser.get(base + "/").text))
    return token


# -- the internal listener ------------------------------------------------------------------------------

def test_metrics_are_refused_without_the_token_and_served_with_it(served: Served) -> None:
    anonymous = requests.get(served.internal + "/metrics")
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert "kmrl_" not in anonymous.text
    wrong = bearer("not-the-operator-token-000000")
    assert requests.get(served.internal + "/metrics", headers=wrong).status_code == 401
    assert requests.get(served.internal + "/metrics", headers={"Authorization": TOKEN}).status_code == 401
    scraped = requests.get(served.internal + "/metrics", headers=bearer())
    assert scraped.status_code == 200 and scraped.headers["Content-Type"].startswith("text/plain; version=0.0.4")


def test_operator_routes_are_absent_when_no_token_is_configured(served_without_token: Served) -> None:
    base = served_without_token.internal
    for path in ("/metrics", "/login", "/"):
        assert requests.get(base + path, headers=bearer()).status_code == 404, path
    assert requests.post(base + "/login", data={"token": ""}).status_code == 404
    assert requests.post(base + "/logout").status_code == 404
    assert requests.get(base + "/healthz").status_code == 200  # the probes stay, tokens or not


def test_a_token_shorter_than_the_minimum_keeps_operator_routes_off(tmp_path, redis_url, redis_client) -> None:
    short = "x" * (MIN_TOKEN_LENGTH - 1)
    for served in serve(tmp_path, redis_url, redis_client, OPERATOR_TOKEN=short):
        assert requests.get(served.internal + "/metrics", headers=bearer(short)).status_code == 404


def test_probes_answer_on_the_internal_listener_without_a_token(served: Served) -> None:
    assert requests.get(served.internal + "/healthz").json() == {"status": "alive"}
    assert requests.get(served.internal + "/readyz").json()["redis"] == "ok"


def test_the_health_probe_of_the_cli_checks_the_internal_listener(served: Served) -> None:
    ok, detail = cli._probe_web(served.settings)
    assert ok and served.internal.split("//")[1] in detail


# -- the public listener --------------------------------------------------------------------------------

def test_the_public_listener_carries_the_webhook_and_nothing_else(served: Served, redis_client) -> None:
    for path in ("/metrics", "/healthz", "/readyz", "/login", "/"):
        assert requests.get(served.public + path, headers=bearer()).status_code == 404, path
    assert requests.post(served.public + "/logout", headers=bearer()).status_code == 404
    handshake = requests.get(served.public + "/webhooks/whatsapp", params={
        "hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "4242"})
    assert (handshake.status_code, handshake.text) == (200, "4242")
    sim = WhatsAppCloudSimulator()
    body = meta_body(sim.notification([sim.message("document", sim.add_media())]))
    delivered = requests.post(served.public + "/webhooks/whatsapp", data=body,
                              headers={"X-Hub-Signature-256": signature(APP_SECRET, body)})
    assert delivered.status_code == 200 and redis_client.xlen(STREAM) == 1


def test_a_host_header_naming_the_internal_port_does_not_reach_it(served: Served) -> None:
    internal_host = served.internal.split("//")[1]
    forged = requests.get(served.public + "/metrics", headers={**bearer(), "Host": internal_host})
    assert forged.status_code == 404


def test_the_webhook_is_not_on_the_internal_listener(served: Served) -> None:
    assert requests.get(served.internal + "/webhooks/whatsapp", headers=bearer()).status_code == 404


# -- people: the login cookie and CSRF ------------------------------------------------------------------

def test_login_sets_an_httponly_samesite_strict_cookie_that_opens_metrics(served: Served) -> None:
    browser, answer = login(served.internal)
    assert answer.status_code == 303 and answer.headers["Location"].endswith("/")
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain http here; behind https it is Secure (next test)
    assert TOKEN not in cookie
    assert browser.get(served.internal + "/metrics").status_code == 200
    assert requests.get(served.internal + "/metrics", cookies={COOKIE_NAME: "forged"}).status_code == 401


def test_the_cookie_is_secure_when_the_request_came_over_https(tmp_path, redis_url, redis_client) -> None:
    settings = web_settings(tmp_path, redis_url, free_port(), OPERATOR_TOKEN=TOKEN)
    client = create_internal_app(settings, redis_client).test_client()
    base = "https://ops.kmrl.example"
    form = client.get("/login", base_url=base)
    [login_csrf] = re.findall(r'name=login_csrf value="([^"]+)"', form.get_data(as_text=True))
    answer = client.post("/login", base_url=base, data={"token": TOKEN, "login_csrf": login_csrf},
                         headers={"Origin": base})
    assert answer.status_code == 303
    assert "Secure" in answer.headers["Set-Cookie"] and "HttpOnly" in answer.headers["Set-Cookie"]


def test_a_wrong_token_at_login_opens_nothing(served: Served) -> None:
    browser, answer = login(served.internal, "a-wrong-guess-of-the-token-0000")
    assert answer.status_code == 401
    assert browser.get(served.internal + "/metrics").status_code == 401


@pytest.mark.parametrize("origin", ["https://attacker.example", "null"])
def test_a_login_posted_from_another_origin_is_refused(served: Served, origin: str) -> None:
    browser, answer = login(served.internal, origin=origin)
    assert answer.status_code == 403
    assert browser.get(served.internal + "/metrics").status_code == 401


def test_a_login_without_its_form_token_is_refused(served: Served) -> None:
    browser = requests.Session()
    browser.get(served.internal + "/login")
    answer = browser.post(served.internal + "/login", data={"token": TOKEN},
                          headers={"Origin": served.internal}, allow_redirects=False)
    assert answer.status_code == 403
    assert browser.get(served.internal + "/metrics").status_code == 401


def test_a_post_without_the_csrf_token_is_refused(served: Served) -> None:
    browser, _ = login(served.internal)
    refused = browser.post(served.internal + "/logout", headers={"Origin": served.internal}, allow_redirects=False)
    assert refused.status_code == 403
    assert browser.get(served.internal + "/metrics").status_code == 200  # still logged in


def test_a_post_with_the_csrf_token_from_another_origin_is_refused(served: Served) -> None:
    browser, _ = login(served.internal)
    csrf = csrf_of(browser, served.internal)
    for headers in ({"Origin": "https://attacker.example"}, {}):  # a foreign Origin, or none at all
        refused = browser.post(served.internal + "/logout", data={"csrf_token": csrf}, headers=headers,
                               allow_redirects=False)
        assert refused.status_code == 403
    assert browser.get(served.internal + "/metrics").status_code == 200


def test_a_post_with_the_csrf_token_from_this_origin_is_accepted(served: Served) -> None:
    browser, _ = login(served.internal)
    csrf = csrf_of(browser, served.internal)
    by_referer = browser.post(served.internal + "/logout", headers={"X-CSRF-Token": csrf,
                                                                     "Referer": served.internal + "/"},
                              allow_redirects=False)
    assert by_referer.status_code == 303
    assert browser.get(served.internal + "/metrics").status_code == 401  # logged out


def test_a_new_token_ends_every_session(tmp_path, redis_url, redis_client) -> None:
    internal_port = free_port()
    before = create_internal_app(web_settings(tmp_path, redis_url, internal_port, OPERATOR_TOKEN=TOKEN), redis_client)
    after = create_internal_app(web_settings(tmp_path, redis_url, internal_port,
                                             OPERATOR_TOKEN=TOKEN[::-1]), redis_client)
    with ServerThread(before) as old:
        browser, answer = login(old.url)
        assert answer.status_code == 303 and browser.get(old.url + "/metrics").status_code == 200
    with ServerThread(after, port=old.port) as new:
        assert browser.get(new.url + "/metrics").status_code == 401


def test_operator_pages_are_never_framed_or_cached(served: Served) -> None:
    page = requests.get(served.internal + "/login")
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"
