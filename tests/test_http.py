"""The shared HTTP layer: a configured CA bundle wins over the environment's; an untrusted certificate
is a configuration error, not something to retry."""

from __future__ import annotations

import pytest

from sandbox.servers import ServerThread
from sandbox.tls import CertAuthority
from utils.errors import ConfigError
from utils.http import HttpClient, RetryPolicy


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
