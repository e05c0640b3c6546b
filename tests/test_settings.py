"""Settings: what ``repr``/``str`` may show (no password of any URL, no secret field) and the defaults
that bound a run."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from config.settings import SettingError, Settings
from utils.errors import ConfigError

PASSWORD = "r3dis-Pa55word"
TOKEN = "hub-token-0123456789"


def secret_settings() -> Settings:
    return Settings.from_env({
        "REDIS_URL": f"redis://:{PASSWORD}@redis.internal:6379/0",
        "CELERY_RESULT_BACKEND": f"rediss://worker:{PASSWORD}@redis.internal:6380/1?ssl_cert_reqs=required",
        "STATE_REDIS_URL": f"redis://redis.internal:6379/3?password={PASSWORD}",
        "HUB_API_URL": f"https://ops:{PASSWORD}@hub.kmrl.internal",
        "HUB_API_TOKEN": TOKEN,
    })


@pytest.mark.parametrize("render", [repr, str], ids=["repr", "str"])
def test_repr_and_str_mask_every_url_password_and_secret(render) -> None:
    text = render(secret_settings())
    assert PASSWORD not in text and TOKEN not in text, text
    # Redacted as every URL in a message is (utils.logging.redact_url): it still says where it connects.
    assert "redis://***@redis.internal:6379/0" in text
    assert "rediss://***@redis.internal:6380/1?ssl_cert_reqs=***" in text
    assert "redis://redis.internal:6379/3?password=***" in text
    assert "https://***@hub.kmrl.internal" in text


def test_no_string_field_shows_a_url_password_whichever_field_holds_it() -> None:
    text_fields = [f.name for f in dataclasses.fields(Settings) if f.type in ("str", str)]
    values: dict[str, Any] = {name: f"https://user:{PASSWORD}-{name}@host.example/x" for name in text_fields}
    text = repr(Settings(**values))
    assert PASSWORD not in text, text


def test_every_field_named_like_a_secret_is_masked_whole() -> None:
    secret_fields = [f.name for f in dataclasses.fields(Settings)
                     if f.type in ("str", str) and any(w in f.name for w in ("token", "password", "secret"))]
    assert "hub_api_token" in secret_fields
    values: dict[str, Any] = {name: f"{TOKEN}-{name}" for name in secret_fields}
    text = repr(Settings(**values))
    assert TOKEN not in text, text


def test_masking_keeps_what_is_not_secret() -> None:
    text = repr(Settings(redis_url="redis://localhost:6379/0", spool_dir="./var/spool"))
    assert "redis_url='redis://localhost:6379/0'" in text and "spool_dir='./var/spool'" in text
    assert "key_prefix='kmrl:'" in text and "max_document_mb=4096.0" in text


def test_settings_still_compare_and_copy_as_before() -> None:
    first, second = secret_settings(), secret_settings()
    assert first == second
    assert dataclasses.replace(first, lock_ttl=5).state_redis_url == first.state_redis_url


@pytest.mark.parametrize(("name", "value", "message"), [
    ("HUB_READ_TIMEOUT", "abc", "HUB_READ_TIMEOUT must be a number of seconds, not 'abc'"),
    ("HUB_CONNECT_TIMEOUT", "0", "HUB_CONNECT_TIMEOUT must be more than 0, not '0'"),
    ("LOCK_TTL_SECONDS", "nan", "LOCK_TTL_SECONDS must be a number of seconds, not 'nan'"),
    ("SPOOL_MIN_FREE_MB", "1.5", "SPOOL_MIN_FREE_MB must be a whole number of MB, not '1.5'"),
    ("MAX_DOCUMENT_MB", "-1", "MAX_DOCUMENT_MB must be at least 0, not '-1'"),
    ("ACK_BATCH_SIZE", "sixty-four", "ACK_BATCH_SIZE must be a whole number of documents, not 'sixty-four'"),
])
def test_a_number_setting_that_cannot_be_used_names_the_variable_and_the_value(name: str, value: str,
                                                                             message: str) -> None:
    with pytest.raises(SettingError) as raised:
        Settings.from_env({name: value})
    assert str(raised.value) == message


def test_number_settings_accept_what_env_example_writes() -> None:
    settings = Settings.from_env({"HUB_READ_TIMEOUT": " 90 ", "MAX_DOCUMENT_MB": "0", "SPOOL_MIN_FREE_MB": "512",
                                  "LOCK_TTL_SECONDS": "120", "ACK_BATCH_SIZE": "64"})
    assert (settings.hub_read_timeout, settings.max_document_bytes, settings.spool_min_free_mb,
            settings.lock_ttl, settings.ack_batch_size) == (90.0, None, 512, 120.0, 64)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("WEB_INTERNAL_PORT", "80a", "WEB_INTERNAL_PORT must be a TCP port number, not '80a'"),
    ("WEB_PUBLIC_PORT", "70000", "WEB_PUBLIC_PORT must be at most 65535, not '70000'"),
    ("OPERATOR_SESSION_HOURS", "0", "OPERATOR_SESSION_HOURS must be more than 0, not '0'"),
])
def test_component_numbers_are_read_as_the_service_settings_are(name: str, value: str, message: str) -> None:
    from web.listeners import Listeners
    from web.operator import OperatorAccess

    settings = Settings.from_env({name: value, "KMRL_ENV_FILE": ""})
    read = Listeners.from_settings if name.startswith("WEB_") else OperatorAccess.from_settings
    with pytest.raises(SettingError) as raised:
        read(settings)
    assert str(raised.value) == message and isinstance(raised.value, ConfigError)
