"""The shared HTTP layer: a configured CA bundle wins over the environment's; an untrusted certificate
is a configuration error, not something to retry; a credential goes only to its origins, redirects
included; answers read into memory are capped; page loops are caught; URLs in error text are redacted."""

from __future__ import annotations

from typing import Any

import pytest
from werkzeug.wrappers import Response

from sandbox.servers import ServerThread, free_port
from sandbox.tls import CertAuthority
from tests.hostile_servers import Scripted, deeply_nested, padded_json, redirect
from utils.errors import ConfigError, OriginNotAllowed, PagingLoopError, ResponseTooLarge, TransientError
from utils.http import (
    ERROR_BODY_BYTES,
    HttpClient,
    JSONTooDeep,
    Origin,
    OriginPolicy,
    PageLinks,
    RetryPolicy,
    json_body,
)
from utils.logging import mask_text, redact_url


def hello_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def test_configured_ca_bundle_wins_over_requests_ca_bundle(tmp_path, monkeypatch):
    ca = CertAuthority(str(tmp_path / "ca"))
    other = CertAuthority(str(tmp_path / "other"))
    with ServerThread(hello_app, ssl_context=ca.issue().server_context()) as server:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", other.ca_path)
        monkeypatch.setenv("CURL_CA_BUNDLE", other.ca_path)
        client = HttpClient("test", ca_bundle=ca.ca_path, policy=RetryPolicy(attempts=1))
        assert client.request("GET", server.url).text == "hello"
        untrusting = HttpClient("test", ca_bundle=other.ca_path, policy=RetryPolicy(attempts=1))
        with pytest.raises(ConfigError, match="not trusted"):
            untrusting.request("GET", server.url)


# -- credentials go only to their origins ----------------------------------------------------------
# Every test below runs real loopback servers: ``home`` is where the credential belongs, ``foreign``
# records whatever reaches it.

SECRET_HEADERS = {"apikey": "maximo-key-0123", "Authorization": "Bearer graph-token-4567"}


def _client(**options: Any) -> HttpClient:
    return HttpClient("test", policy=RetryPolicy(attempts=1), **options)


def test_redirect_to_another_origin_is_refused_and_the_other_host_receives_nothing():
    with ServerThread(Scripted()) as foreign_server:
        foreign = foreign_server.app
        home = Scripted(lambda r: redirect(f"{foreign_server.url}/steal"))
        with ServerThread(home) as home_server:
            client = _client(origins=OriginPolicy.of(home_server.url, setting="TEST_URL"))
            with pytest.raises(OriginNotAllowed) as caught:
                client.request("GET", f"{home_server.url}/page", headers=SECRET_HEADERS)
    message = str(caught.value)
    assert str(Origin.of(foreign_server.url)) in message and "TEST_URL" in message
    assert "maximo-key-0123" not in message and "graph-token" not in message
    assert foreign.seen == []
    assert home.credentials_seen() == ["authorization", "apikey"]


def test_a_credential_header_without_declared_origins_stays_on_the_origin_it_was_sent_to():
    # requests itself would follow this 307 and strip only Authorization: apikey would travel on.
    with ServerThread(Scripted()) as foreign_server:
        home = Scripted(lambda r: redirect(f"{foreign_server.url}/x", 307))
        with ServerThread(home) as home_server, pytest.raises(OriginNotAllowed):
            _client().request("GET", home_server.url, headers={"apikey": "maximo-key-0123"})
        assert foreign_server.app.seen == []


def test_request_to_an_origin_not_allowed_is_never_sent():
    with ServerThread(Scripted()) as foreign_server:
        client = _client(origins=OriginPolicy.of("https://maximo.example", setting="MAXIMO_URL"))
        with pytest.raises(OriginNotAllowed, match="MAXIMO_URL"):
            client.request("GET", f"{foreign_server.url}/doclink", headers=SECRET_HEADERS)
        assert foreign_server.app.seen == []


def test_https_to_http_is_refused_even_between_allowed_origins(tmp_path):
    ca = CertAuthority(str(tmp_path / "ca"))
    with ServerThread(Scripted()) as plain:
        secure = Scripted(lambda r: redirect(f"{plain.url}/clear"))
        with ServerThread(secure, ssl_context=ca.issue().server_context()) as secure_server:
            client = _client(ca_bundle=ca.ca_path, origins=OriginPolicy.of(secure_server.url, plain.url))
            with pytest.raises(OriginNotAllowed, match="from https to plain http"):
                client.request("GET", secure_server.url, headers=SECRET_HEADERS)
        assert plain.app.seen == []


def test_same_origin_redirect_is_followed_with_the_credential():
    def answer(request):
        return Response("the page") if request.path == "/moved" else redirect("/moved", 301)

    home = Scripted(answer)
    with ServerThread(home) as server:
        response = _client(origins=OriginPolicy.of(server.url)).request("GET", f"{server.url}/page?a=1",
                                                                        headers=SECRET_HEADERS)
    assert response.text == "the page"
    assert home.paths() == ["/page", "/moved"]
    assert home.seen[1].credentials() == ["authorization", "apikey"]


def test_anonymous_request_follows_a_redirect_elsewhere_and_may_not_carry_a_credential():
    with ServerThread(Scripted(lambda r: Response("bytes"))) as cdn:
        home = Scripted(lambda r: redirect(f"{cdn.url}/blob?tempauth=abc"))
        with ServerThread(home) as server:
            client = _client(origins=OriginPolicy.of(server.url))
            assert client.request("GET", f"{server.url}/download", anonymous=True).text == "bytes"
            with pytest.raises(ValueError, match="anonymous"):
                client.request("GET", f"{server.url}/download", anonymous=True, headers=SECRET_HEADERS)
        assert cdn.app.seen[0].credentials() == []


# -- answers read into memory are capped -------------------------------------------------------------

def test_unstreamed_answer_over_the_cap_is_refused_and_a_streamed_one_is_left_to_the_caller():
    big = padded_json(3 * 1024 * 1024)
    with ServerThread(Scripted(lambda r: Response(big, mimetype="application/json"))) as server:
        client = _client(max_body_bytes=1024 * 1024)
        with pytest.raises(ResponseTooLarge, match="1 MiB"):
            client.request("GET", server.url)
        streamed = client.request("GET", server.url, stream=True)
        assert sum(len(chunk) for chunk in streamed.iter_content(65536)) == len(big)


def test_unstreamed_answer_without_a_length_is_cut_at_the_cap():
    def endless_enough(request):
        return Response((b"[" + b"0," * 1024 for _ in range(4096)), mimetype="application/json")

    with ServerThread(Scripted(endless_enough)) as server, pytest.raises(ResponseTooLarge):
        _client(max_body_bytes=1024 * 1024).request("GET", server.url)


def test_error_answer_is_read_only_as_far_as_its_message_needs():
    big = b"e" * (2 * 1024 * 1024)
    with ServerThread(Scripted(lambda r: Response(big, status=404))) as server:
        response = _client().request("GET", server.url, stream=True)
    assert response.status_code == 404 and len(response.content) == ERROR_BODY_BYTES


def test_json_nested_too_deeply_is_a_value_error_not_a_recursion_error():
    with ServerThread(Scripted(lambda r: Response(deeply_nested(), mimetype="application/json"))) as server:
        response = _client().request("GET", server.url)
    with pytest.raises(JSONTooDeep, match="nested too deeply"):
        json_body(response)
    assert issubclass(JSONTooDeep, ValueError)


# -- page loops ----------------------------------------------------------------------------------------

def test_a_page_link_read_twice_is_a_paging_loop():
    pages = PageLinks("graph", "the delta feed of library 'Documents'")
    pages.visit("https://graph.example/v1.0/drives/1/root/delta?token=abc")
    pages.visit("https://graph.example/v1.0/drives/1/root/delta?token=abd")
    with pytest.raises(PagingLoopError, match="a second time") as caught:
        pages.visit("https://graph.example/v1.0/drives/1/root/delta?token=abc")
    assert "token=abc" not in str(caught.value)


def test_the_same_query_with_a_moved_cursor_is_not_a_loop():
    pages = PageLinks("maximo", "work orders")
    pages.visit("https://m/api/os/wo", {"oslc.where": "a"}, state={"changedate": "1", "taken": ["A"]})
    pages.visit("https://m/api/os/wo", {"oslc.where": "a"}, state={"changedate": "1", "taken": ["A", "B"]})
    with pytest.raises(PagingLoopError):
        pages.visit("https://m/api/os/wo", {"oslc.where": "a"}, state={"changedate": "1", "taken": ["A", "B"]})


# -- secrets stay out of text --------------------------------------------------------------------------

def test_failed_request_names_its_url_without_userinfo_or_query_values():
    dead = free_port()
    client = HttpClient("sharepoint", policy=RetryPolicy(attempts=2, backoff_base=0.001))
    with pytest.raises(TransientError) as caught:
        client.request("GET", f"http://ops:hunter2-pass@127.0.0.1:{dead}/download.aspx?UniqueId=7&tempauth=eyJ0e.sig",
                       anonymous=True)
    message = str(caught.value)
    assert "eyJ0e" not in message and "hunter2" not in message
    assert "tempauth=***" in message and f"127.0.0.1:{dead}/download.aspx" in message


def test_mask_text_redacts_urls_in_any_text():
    text = ("HTTPSConnectionPool(host='lookaside.fbsbx.com', port=443): Max retries exceeded with url: "
            "/whatsapp_business/attachments/?mid=1&hash=ARx9secret (Caused by x); see "
            "redis://:redis-pass@redis:6379/0, and https://u:p@host/a?tempauth=t0k.")
    masked = mask_text(text)
    for secret in ("ARx9secret", "redis-pass", "u:p@", "t0k"):
        assert secret not in masked
    assert "hash=***" in masked and "redis://***@redis:6379/0," in masked and masked.endswith("tempauth=***.")
    assert redact_url("https://graph.microsoft.com/v1.0/sites/kmrl.sharepoint.com:/sites/ops") == \
        "https://graph.microsoft.com/v1.0/sites/kmrl.sharepoint.com:/sites/ops"
    # urllib3's debug line for a request names its target without scheme and host.
    assert mask_text('https://t.sharepoint.com:443 "GET /download.aspx?tempauth=t0k HTTP/1.1" 200 5') == \
        'https://t.sharepoint.com:443 "GET /download.aspx?tempauth=*** HTTP/1.1" 200 5'

