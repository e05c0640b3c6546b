"""The status page on the internal listener (web/status_page.py), served on real sockets as
tests/test_web_access.py serves the app.

The first test is the page as an operator meets it, in a real headless Chromium (tests/webdriver.py):
a real SharePoint sync through the Graph and Hub simulators fills the state (a Malayalam filename
among the documents, one document refused by the Hub and dead-lettered), the operator logs in
through the form, reads the page, filters it and retries the dead letter with its button. A
screenshot is saved under the test's tmp dir, and in KMRL_SCREENSHOT_DIR when that is set. The
other tests check the access rules and the escaping over HTTP with ``requests``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from base.recent import RecentDocument
from base.state import DeadLetter, StateStore
from config.settings import Settings
from connectors.registry import build_connectors
from sandbox.samples import kmrl_samples
from sandbox.servers import ServerThread, free_port
from sandbox.stack import RedisLayout, Stack
from tests.conftest import flushed_db_url, skip_or_fail
from tests.test_web_access import TOKEN, Served, bearer, login, serve
from tests.webdriver import Browser, missing_programs
from web.app import create_app

#: A Malayalam filename of the SharePoint sample set (an incident report, Safety).
MALAYALAM_FILE = "സംഭവ റിപ്പോർട്ട് - എസ്കലേറ്റർ അപകടം ഇടപ്പള്ളി.docx"
#: The sample the Hub refuses during the sync, to be retried from the page.
REFUSED_PREFIX = "Invoice KSEB energy bill"


@pytest.fixture
def served(tmp_path, redis_url, redis_client) -> Iterator[Served]:
    yield from serve(tmp_path, redis_url, redis_client, OPERATOR_TOKEN=TOKEN)


# -- in a real browser ------------------------------------------------------------------------------

@pytest.fixture
def synced_stack(tmp_path: Path, redis_url: str) -> Iterator[tuple[Stack, Settings, str]]:
    """The SharePoint and Hub simulators after one real sync (one document refused by the Hub, then
    the refusal lifted): (stack, the web app's settings, the refused file's name)."""
    layout = RedisLayout(*(flushed_db_url(db) for db in (5, 6, 7)), redis_url)
    with Stack(root=tmp_path / "stack", redis=layout, sources=["sharepoint"]) as stack:
        samples = kmrl_samples(2024)
        stack.seed(samples)
        refused = next(f.filename for _, f in samples.files("sharepoint") if f.filename.startswith(REFUSED_PREFIX))
        stack.running.hub.set_fault("reject", match=refused)
        settings = stack.settings()
        for connector in build_connectors("sharepoint", settings, state=StateStore.from_settings(settings)):
            connector.sync_documents()
        stack.running.hub.clear_faults()
        web = Settings.from_env({**stack.env(), "OPERATOR_TOKEN": TOKEN, "WEB_INTERNAL_PORT": str(free_port()),
                                 "LOG_FILE": ""})
        yield stack, web, refused


def test_an_operator_logs_in_reads_the_page_and_retries_a_dead_letter_in_a_browser(synced_stack, tmp_path) -> None:
    missing = missing_programs()
    if missing:
        skip_or_fail(f"{' and '.join(missing)} not installed (Debian packages chromium, chromium-driver; "
                     "`make install` as root installs them)")
    stack, settings, refused = synced_stack
    state = StateStore.from_settings(settings)
    (entry,) = state.list_dead_letters("sharepoint")
    assert entry.display_name == refused and entry.bytes_path
    app = create_app(settings, redis.Redis.from_url(settings.state_redis_url))
    internal_port = int(settings.env("WEB_INTERNAL_PORT"))
    with ServerThread(app) as _public, ServerThread(app, port=internal_port) as internal, Browser() as browser:
        browser.get(internal.url + "/")
        assert browser.url == internal.url + "/login"  # not logged in: the login form
        browser.find("input[name=token]").type(TOKEN)
        browser.find("form[action='/login'] button").click()
        browser.wait_until("the status page", lambda: browser.url == internal.url + "/")
        assert browser.title == "KMRL Connectors: status"

        # Every document of the sync is listed; the Malayalam name reads exactly as the source had it.
        recent = browser.find("#recent").text
        assert MALAYALAM_FILE in recent and "uploaded" in recent and "dead-lettered" in recent
        cells = [c for c in browser.find_all("#recent td.filename") if c.text == MALAYALAM_FILE]
        assert cells and cells[0].attribute("lang") == "ml"
        row = next(r.text for r in browser.find_all("#recent tbody tr") if MALAYALAM_FILE in r.text)
        assert "Safety" in row and "sharepoint" in row
        sources = browser.find("#sources").text
        assert "sharepoint" in sources and "ok" in sources and "failed 1" in sources

        # The filter form: Malayalam documents only.
        browser.find("input[name=language]").type("ml")
        browser.find("form.filters button").click()
        browser.wait_until("the filtered page", lambda: "language=ml" in browser.url)
        languages = [r.text for r in browser.find_all("#recent tbody tr td:nth-child(5)")]
        assert languages and set(languages) == {"ml"}

        # The dead letter, its reason, and its retry.
        dead = browser.find("#deadletters").text
        assert refused in dead and "422" in dead
        shots = [tmp_path] + ([Path(os.environ["KMRL_SCREENSHOT_DIR"])] if os.environ.get("KMRL_SCREENSHOT_DIR")
                              else [])
        for folder in shots:
            browser.find("section[aria-labelledby=h-dead]").screenshot(folder / "status-page-dead-letters.png")
        browser.find(f"#dl-{entry.id} button").click()
        browser.wait_until("the retry's outcome", lambda: bool(browser.find_all(".notice")))
        notice = browser.find(".notice").text
        assert f"Dead letter {entry.id}" in notice and "replayed" in notice
        assert browser.find("#h-dead").text == "Dead letters (0)"
        for folder in shots:
            browser.screenshot(folder / "status-page.png")
    assert (tmp_path / "status-page.png").stat().st_size > 10_000
    assert state.list_dead_letters("sharepoint") == []
    record = state.get_item("sharepoint", entry.scope, entry.source_id)
    assert record is not None and record.hub_id in stack.running.hub.documents
    assert stack.running.hub.documents[record.hub_id].metadata["filename"] == refused


# -- over HTTP --------------------------------------------------------------------------------------

def test_a_person_not_logged_in_is_sent_to_the_login_form(served: Served) -> None:
    for path in ("/", "/status"):
        answer = requests.get(served.internal + path, allow_redirects=False)
        assert answer.status_code == 303 and answer.headers["Location"].endswith("/login"), path
    # A machine with a wrong token is told so, not redirected.
    assert requests.get(served.internal + "/", headers=bearer("not-the-operator-token-000000")).status_code == 401
    assert requests.get(served.internal + "/", headers=bearer()).status_code == 200


def test_the_page_is_absent_without_an_operator_token(tmp_path, redis_url, redis_client) -> None:
    for served in serve(tmp_path, redis_url, redis_client):
        for path in ("/", "/status"):
            assert requests.get(served.internal + path, headers=bearer()).status_code == 404
        assert requests.post(served.internal + "/deadletters/x/retry", headers=bearer()).status_code == 404
        assert requests.get(served.public + "/status", headers=bearer()).status_code == 404


def test_everything_from_the_state_is_escaped(served: Served, state: StateStore) -> None:
    hostile = '<script>alert("x")</script>.pdf'
    state.record_many("email", [], recent=[RecentDocument("email", "INBOX", "m-1", "uploaded", filename=hostile,
                                                          department="<b>Safety</b>")])
    state.add_dead_letter(DeadLetter("email", "INBOX", "m-2", reason='refused: <img src=x onerror="alert(1)">',
                                     filename="അവധി <i>.pdf"))
    browser, _ = login(served.internal)
    page = browser.get(served.internal + "/")
    assert page.status_code == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "<script>" not in page.text and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;.pdf" in page.text
    assert "<img" not in page.text and "<b>Safety" not in page.text
    assert 'lang="ml"' in page.text and "അവധി &lt;i&gt;.pdf" in page.text
    assert "script-src" not in page.headers["Content-Security-Policy"]  # no script may run at all


def test_the_recent_documents_follow_the_filter(served: Served, state: StateStore) -> None:
    state.record_many("email", [], recent=[
        RecentDocument("email", "INBOX", "m-1", "uploaded", filename="circular.pdf", language="en",
                       department="Safety"),
        RecentDocument("sharepoint", "d1", "f-1", "held", filename="ശമ്പളം.xlsx", language="ml", department="HR",
                       reason="hold-personal-data (personal data: aadhaar 1)")])
    browser, _ = login(served.internal)
    text = browser.get(served.internal + "/", params={"language": "ml"}).text
    recent = text[text.index('id="recent"'):]
    assert "ശമ്പളം.xlsx" in recent and "circular.pdf" not in recent and "aadhaar 1" in recent
    text = browser.get(served.internal + "/", params={"decision": "uploaded", "department": "safety"}).text
    recent = text[text.index('id="recent"'):]
    assert "circular.pdf" in recent and "ശമ്പളം.xlsx" not in recent


def test_a_retry_without_the_csrf_token_or_from_another_origin_is_refused(served: Served, state: StateStore) -> None:
    entry = state.add_dead_letter(DeadLetter("email", "INBOX", "m-9", "could not be parsed"))
    browser, _ = login(served.internal)
    page = browser.get(served.internal + "/").text
    [csrf] = set(re.findall(r'name="csrf_token" value="([^"]+)"', page))
    url = f"{served.internal}/deadletters/{entry.id}/retry"
    assert browser.post(url, headers={"Origin": served.internal}, allow_redirects=False).status_code == 403
    assert browser.post(url, data={"csrf_token": csrf}, headers={"Origin": "https://attacker.example"},
                        allow_redirects=False).status_code == 403
    assert requests.post(url, data={"csrf_token": csrf}, headers={"Origin": served.internal},
                         allow_redirects=False).status_code == 401  # no session
    assert [e.id for e in state.list_dead_letters()] == [entry.id]


def test_a_retry_that_cannot_replay_says_why_and_keeps_the_entry(served: Served, state: StateStore) -> None:
    entry = state.add_dead_letter(DeadLetter("email", "INBOX", "m-9", "could not be parsed"))
    browser, _ = login(served.internal)
    [csrf] = set(re.findall(r'name="csrf_token" value="([^"]+)"', browser.get(served.internal + "/").text))
    answer = browser.post(f"{served.internal}/deadletters/{entry.id}/retry", data={"csrf_token": csrf},
                          headers={"Origin": served.internal})
    assert answer.status_code == 200 and answer.url.startswith(served.internal + "/")
    # Email is not configured in this test: the connector cannot be built, and the page says so.
    assert f"Dead letter {entry.id} kept" in answer.text and 'class="notice bad"' in answer.text
    assert [e.id for e in state.list_dead_letters()] == [entry.id]


def test_watchers_and_subscriptions_are_shown_from_what_redis_holds(served: Served, state: StateStore) -> None:
    browser, _ = login(served.internal)
    page = browser.get(served.internal + "/").text
    assert "No watcher has reported" in page and "No Graph change-notification subscription" in page
    state.redis.hset(state.key("watcher", "email:ops@kmrl.example:INBOX"),
                     mapping={"state": "idle", "since": "1733390000", "last_event": "EXISTS 42"})
    state.redis.hset(state.key("subscription", "b!drive-1"), mapping={"id": "sub-123", "expires": "1733400000"})
    page = browser.get(served.internal + "/").text
    watchers = page[page.index('id="watchers"'):]
    assert "email:ops@kmrl.example:INBOX" in watchers and "idle" in watchers and "EXISTS 42" in watchers
    assert "IST" in watchers  # a Unix time is shown as a time
    assert "b!drive-1" in page and "sub-123" in page
