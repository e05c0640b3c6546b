"""TLS options for every Redis connection the service opens: state, web, broker, results, RedBeat.

A ``rediss://`` URL means TLS with the server's certificate verified and its hostname checked,
against the system's CA store by default, or against REDIS_CA_FILE (a PEM bundle, for a private CA)
when it is set. No ``?ssl_cert_reqs=`` is needed in the URL: without these options kombu would fall
back to an unverified connection and Celery's result backend would refuse the URL. A ``redis://``
URL gets no TLS options at all. Options written into a URL's query string still win, since each
client applies the query over these keyword arguments (``?ssl_cert_reqs=none`` turns verification
off, for a lab only).
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit

#: The URL scheme that asks for TLS (redis-py, kombu and Celery all name it so).
TLS_SCHEME = "rediss"


def uses_tls(url: str) -> bool:
    """True when ``url`` asks for TLS (``rediss://``)."""
    return urlsplit(url).scheme.lower() == TLS_SCHEME


def redis_tls_kwargs(url: str, ca_file: str = "") -> dict[str, Any]:
    """redis-py keyword arguments for TLS to ``url``: ``{}`` unless it is ``rediss://``; then the
    certificate is required and the hostname checked, against ``ca_file`` when given (else the system
    CAs). Fit for ``redis.Redis.from_url(url, **kwargs)`` and for Celery's ``*_use_ssl`` settings."""
    if not uses_tls(url):
        return {}
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True}
    if ca_file:
        options["ssl_ca_certs"] = ca_file
    return options


def celery_tls_settings(*, broker_url: str, result_backend: str, redbeat_redis_url: str,
                        ca_file: str = "") -> dict[str, Any]:
    """The Celery settings that carry TLS options, each present only when its own URL is ``rediss://``
    (an SSL option on a plain URL would make kombu and the result backend speak TLS to it):
    ``broker_use_ssl``, ``redis_backend_use_ssl`` and ``redbeat_redis_use_ssl``."""
    settings: dict[str, Any] = {}
    for name, url in (("broker_use_ssl", broker_url), ("redis_backend_use_ssl", result_backend),
                      ("redbeat_redis_use_ssl", redbeat_redis_url)):
        if uses_tls(url):
            settings[name] = redis_tls_kwargs(url, ca_file)
    return settings
