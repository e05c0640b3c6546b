"""Secrets stay secret: log files, reprs, exception messages; settings validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from config.settings import Settings
from utils.credentials_manager import CredentialsManager
from utils.errors import ConfigError
from utils.logging import configure_logging, get_logger, register_secret

ENV = {
    "EMAIL_HOST": "imap.kmrl.example", "EMAIL_USER": "docs@kmrl.example", "EMAIL_PASSWORD": "Imap-Pa55-Kochi",
    "MAXIMO_URL": "https://maximo.kmrl.example", "MAXIMO_API_KEY": "mx-apikey-0123456789",
    "SHAREPOINT_CLIENT_ID": "client-id-1", "SHAREPOINT_CLIENT_SECRET": "sp-secret-abcdef",
    "SHAREPOINT_TENANT_ID": "tenant-1",
    "WHATSAPP_ACCESS_TOKEN": "EAAG-whatsapp-token", "WHATSAPP_PHONE_NUMBER_ID": "1065",
    "WHATSAPP_APP_SECRET": "app-s3cret",
}
SECRETS = ["Imap-Pa55-Kochi", "mx-apikey-0123456789", "sp-secret-abcdef", "EAAG-whatsapp-token", "app-s3cret"]


def manager() -> CredentialsManager:
    return CredentialsManager(Settings.from_env(ENV))


def test_credentials_print_masked():
    cm = manager()
    printed = " ".join(str(c) for c in (cm.get_email_credentials(), cm.get_maximo_credentials(),
                                        cm.get_sharepoint_credentials(), cm.get_whatsapp_credentials()))
    assert "docs@kmrl.example" in printed
    for secret in SECRETS:
        assert secret not in printed
    assert cm.get_email_credentials()["password"] == "Imap-Pa55-Kochi"  # the code still gets the value


def test_missing_settings_are_named_in_one_message():
    with pytest.raises(ConfigError) as caught:
        CredentialsManager(Settings.from_env({"EMAIL_HOST": "imap"})).get_email_credentials()
    assert "EMAIL_USER" in str(caught.value) and "EMAIL_PASSWORD" in str(caught.value)


def test_maximo_auth_style_decides_what_is_required():
    env = {"MAXIMO_URL": "https://m", "MAXIMO_AUTH": "maxauth", "MAXIMO_USER": "u"}
    with pytest.raises(ConfigError, match="MAXIMO_PASSWORD"):
        CredentialsManager(Settings.from_env(env)).get_maximo_credentials()


def test_log_file_holds_no_secret(tmp_path: Path):
    log_file = tmp_path / "service.log"
    configure_logging(log_file=str(log_file), level="INFO", force=True)
    cm = manager()
    creds = cm.get_email_credentials()
    log = get_logger("test")
    log.info("login_attempt", user=creds["email"], password=creds["password"])
    log.info("header_seen", headers={"Authorization": "Bearer EAAG-whatsapp-token"})
    log.warning("remote_said", detail="invalid client secret sp-secret-abcdef for tenant")
    try:
        raise RuntimeError("maximo refused apikey mx-apikey-0123456789")
    except RuntimeError:
        log.exception("call_failed")
    import logging

    logging.getLogger("urllib3").warning("GET /?apikey=%s failed", "mx-apikey-0123456789")
    register_secret("app-s3cret")
    log.info("webhook", signature_secret="app-s3cret", note="app-s3cret")
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = log_file.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert any(line["event"] == "login_attempt" and line["user"] == "docs@kmrl.example" for line in lines)
    for secret in SECRETS:
        assert secret not in text
    configure_logging(log_file="", force=True)


def test_settings_repr_hides_the_hub_token():
    settings = Settings.from_env({"HUB_API_URL": "http://hub", "HUB_API_TOKEN": "hub-tok-999"})
    assert "hub-tok-999" not in repr(settings)


def test_dotenv_values_apply_but_real_variables_win(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text("EMAIL_HOST=from-dotenv\nKMRL_TEST_ONLY_VAR=dotenv\n")
    monkeypatch.setenv("EMAIL_HOST", "from-environment")
    monkeypatch.delenv("KMRL_TEST_ONLY_VAR", raising=False)
    settings = Settings.from_env(dotenv_path=str(env_file))
    assert settings.env("EMAIL_HOST") == "from-environment"
    assert settings.env("KMRL_TEST_ONLY_VAR") == "dotenv"
    import os

    assert os.environ["KMRL_TEST_ONLY_VAR"] == "dotenv"  # modules reading os.environ see it too
    monkeypatch.delenv("KMRL_TEST_ONLY_VAR")


def test_a_line_below_the_level_is_dropped_before_any_processor_builds_it() -> None:
    from utils.logging import configure_logging, get_logger

    class Watched:
        """Counts how often a processor looks at it (the redaction step compares secret-named values)."""

        looks = 0

        def __eq__(self, other: object) -> bool:
            Watched.looks += 1
            return False

        __hash__ = object.__hash__

    log = get_logger("kmrl.test.levels")
    try:
        configure_logging(log_file="", level="INFO", force=True)
        log.debug("document_ingested", token=Watched())
        assert Watched.looks == 0
        configure_logging(log_file="", level="DEBUG", force=True)
        log.debug("document_ingested", token=Watched())
        assert Watched.looks > 0  # at DEBUG the line is built, and redacted
    finally:
        configure_logging(force=True)
