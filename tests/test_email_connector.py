"""EmailConnector against a real Dovecot (sandbox/dovecot.py) on loopback, with the real Redis.

One Dovecot serves the module; each test has its own mailbox user, so tests do not see each
other's mail. A missing Dovecot skips these tests locally and fails them in CI (CI=true).
"""

from __future__ import annotations

import base64
import imaplib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from imapclient.exceptions import LoginError

from base.contract import Checkpoint, Item
from base.document import sanitize_filename
from base.hub_client import HttpHub
from config.settings import Settings
from connectors.email_connector import EmailConnector
from connectors.email_imap import EmailAccount, classified
from connectors.email_mime import iter_attachments
from sandbox.dovecot import DovecotServer, crlf, message_flags, require_dovecot
from sandbox.tls import CertAuthority
from tests.test_mime import CORPUS, CORPUS_ATTACHMENTS, corpus_files
from utils.errors import AuthError, ConfigError, TransientError

MALAYALAM_NAME = "കൊച്ചി മെട്രോ പരിപാലനം.pdf"


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    require_dovecot()
    with DovecotServer() as server:
        yield server


@pytest.fixture
def mailbox(dovecot: DovecotServer) -> str:
    """A fresh user (its own empty mailbox) on the shared server; its password is 'pw-' + user."""
    user = f"u{uuid.uuid4().hex[:10]}@kmrl.test"
    dovecot.add_user(user, "pw-" + user)
    return user


def creds(user: str) -> dict[str, str]:
    return {"email": user, "password": "pw-" + user}


@pytest.fixture
def make_connector(dovecot: DovecotServer, settings: Settings) -> Callable[..., EmailConnector]:
    def make(**options: Any) -> EmailConnector:
        options.setdefault("ssl_ca_file", dovecot.ca_path)
        port = options.pop("port", dovecot.imaps_port)
        return EmailConnector("127.0.0.1", port, settings=settings, **options)
    return make


def message(subject: str, *attachments: tuple[str, bytes], sender: str = "Track Team <track@kochimetro.org>",
            body: str = "Please find the report attached.") -> bytes:
    parts = [f"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n".encode()]
    for name, data in attachments:
        encoded = "=?UTF-8?B?" + base64.b64encode(name.encode()).decode() + "?="
        parts.append(f"--b1\r\nContent-Type: application/octet-stream; name=\"{encoded}\"\r\n"
                     f"Content-Disposition: attachment; filename=\"{encoded}\"\r\n"
                     "Content-Transfer-Encoding: base64\r\n\r\n".encode() + base64.encodebytes(data) + b"\r\n")
    head = (f"From: {sender}\r\nTo: ops@kmrl.co.in\r\nCc: depot@kmrl.co.in\r\nSubject: {subject}\r\n"
            f"Date: Mon, 1 Jan 2024 10:00:00 +0530\r\nMessage-ID: <{uuid.uuid4().hex}@kochimetro.org>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n").encode()
    return head + b"".join(parts) + b"--b1--\r\n"


def outbox_documents(settings: Settings) -> dict[str, dict[str, Any]]:
    """source_id -> (metadata.json + the stored bytes) of every document in the outbox."""
    found: dict[str, dict[str, Any]] = {}
    root = Path(settings.hub_outbox_dir)
    if not root.is_dir():
        return found
    for folder in root.iterdir():
        meta_path = folder / "metadata.json"
        if folder.name.startswith(("_", ".")) or not meta_path.exists():
            continue
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta["bytes"] = (folder / meta["stored_as"]).read_bytes()
        found[meta["source_id"]] = meta
    return found


class CommandLog:
    """Every IMAP command sent, by name (``UID FETCH`` as "UID FETCH")."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.names: list[str] = []
        original = imaplib.IMAP4._command  # type: ignore[attr-defined]

        def spy(imap: imaplib.IMAP4, name: str, *args: Any) -> Any:
            self.names.append(f"{name} {args[0]}" if name == "UID" and args else name)
            return original(imap, name, *args)

        monkeypatch.setattr(imaplib.IMAP4, "_command", spy)


# -- documents ------------------------------------------------------------------------------------

def test_attachments_reach_the_outbox_with_their_bytes_and_metadata(
        dovecot: DovecotServer, mailbox: str, make_connector: Callable[..., EmailConnector],
        settings: Settings) -> None:
    report, photo = b"%PDF-1.7 maintenance report", bytes(range(256)) * 40
    dovecot.seed(mailbox, [message("Weekly maintenance", (MALAYALAM_NAME, report), ("track.jpg", photo))])
    summary = make_connector().sync_documents(creds(mailbox))
    assert summary.state == "ok"
    assert summary.totals["new"] == 2
    stored = outbox_documents(settings)
    uidvalidity = dovecot.uidvalidity(mailbox)
    pdf = stored[f"{mailbox}@127.0.0.1/INBOX/{uidvalidity}/1/2"]
    assert (pdf["filename"], pdf["bytes"], pdf["size"], pdf["source"]) == (MALAYALAM_NAME, report, len(report), "email")
    assert pdf["version"] == "1"
    extra = pdf["extra"]
    assert extra["subject"] == "Weekly maintenance" and extra["folder"] == "INBOX" and extra["uid"] == 1
    assert extra["from"] == "Track Team <track@kochimetro.org>"
    assert (extra["to"], extra["cc"]) == ("ops@kmrl.co.in", "depot@kmrl.co.in")
    assert extra["message_id"].endswith("@kochimetro.org>") and extra["date"].startswith("Mon, 1 Jan 2024")
    assert pdf["created_at"] == "2024-01-01T10:00:00+05:30"
    assert pdf["source_url"].startswith(f"imap://{mailbox.replace('@', '%40')}@127.0.0.1:")
    assert stored[f"{mailbox}@127.0.0.1/INBOX/{uidvalidity}/1/3"]["bytes"] == photo


def test_fetch_documents_yields_complete_documents_and_moves_nothing(
        dovecot: DovecotServer, mailbox: str, make_connector: Callable[..., EmailConnector],
        settings: Settings) -> None:
    dovecot.seed(mailbox, [message("Fare revenue", ("fares.csv", b"station,amount\nAluva,100\n"))])
    connector = make_connector()
    documents = list(connector.fetch_documents(creds(mailbox)))
    assert [(d.filename, d.read_bytes(), d.size) for d in documents] == [
        ("fares.csv", b"station,amount\nAluva,100\n", 25)]
    assert documents[0].sha256 and documents[0].language
    for document in documents:
        document.close()
    assert connector.state.get_cursor("email", connector.scopes()[0]) is None
    assert outbox_documents(settings) == {}


def test_hints_name_the_mailbox_and_the_sender(
        dovecot: DovecotServer, mailbox: str, make_connector: Callable[..., EmailConnector]) -> None:
    dovecot.seed(mailbox, [message("x", ("a.pdf", b"PDF"), sender="Stores <stores@kochimetro.org>")])
    connector = make_connector(hints={"site": "muttom"})
    with connector.connect(creds(mailbox)):
        (item, checkpoint) = list(connector.list_changes(connector.scopes()[0], None))
    assert isinstance(item, Item) and isinstance(checkpoint, Checkpoint)
    assert item.hints == {"mailbox": mailbox, "sender": "stores@kochimetro.org",
                          "sender_domain": "kochimetro.org", "site": "muttom"}
    assert "a.pdf" in item.text and item.text.startswith("x")


def test_configured_mailbox_hint_steers_the_department(
        dovecot: DovecotServer, mailbox: str, make_connector: Callable[..., EmailConnector]) -> None:
    dovecot.seed(mailbox, [message("Scanned copy", ("scan.pdf", b"%PDF scan"), body="see attached")])
    plain = make_connector()
    (document,) = plain.fetch_documents(creds(mailbox))
    document.close()
    finance = make_connector(hints={"mailbox": "finance@kmrl.co.in"})
    (steered,) = finance.fetch_documents(creds(mailbox))
    steered.close()
    assert steered.department == "Finance" and document.department != "Finance"
    assert any(term.startswith("hint:mailbox=") for term in steered.department_terms)


# -- cursor -----------------------------------------------------------------------------------------

def test_cursor_advances_and_the_next_sync_takes_only_new_mail(
        dovecot: DovecotServer, mailbox: str, make_connector: Callable[..., EmailConnector],
        settings: Settings) -> None:
    dovecot.seed(mailbox, [message(f"m{i}", (f"r{i}.pdf", f"report {i}".encode())) for i in range(3)])
    connector = make_connector(batch_size=2)
    first = connector.sync_documents(creds(mailbox))
    scope = connector.scopes()[0]
    uidvalidity = dovecot.uidvalidity(mailbox)
    assert first.totals["new"] == 3
    assert connector.state.get_cursor("email", scope) == {"uidvalidity": uidvalidity, "last_uid": 3}
    dovecot.append(mailbox, [message("m3", ("r3.pdf", b"report 3")), message("no attachment")])
    second = connector.sync_documents(creds(mailbox))
    assert (second.totals["fetched"], second.totals["new"]) == (1, 1)
    assert connector.state.get_cursor("email", scope) == {"uidvalidity": uidvalidity, "last_uid": 5}
    assert len(outbox_documents(settings)) == 4


def test_messages_without_attachments_still_advance_the_cursor(
        dovecot: DovecotServer, mailbox: str, make_connector: Callable[..., EmailConnector]) -> None:
    dovecot.seed(mailbox, [message(f"note {i}") for i in range(4)])
    connector = make_connector()
    summary = connector.sync_documents(creds(mailbox))
    assert summary.totals["fetched"] == 0
    assert connector.state.get_cursor("email", connector.scopes()[0])["last_uid"] == 4


def test_sync_with_nothing_new_is_one_command_per_folder(
        dovecot: DovecotServer, mailbox: str, make_connector: Callable[..., EmailConnector],
        monkeypatch: pytest.MonkeyPatch) -> None:
    dovecot.seed(mailbox, [message("m", ("a.pdf", b"PDF"))])
    dovecot.create_folder(mailbox, "Archive")
    connector = make_connector(folders=("INBOX", "Archive"))
    connector.sync_documents(creds(mailbox))
    commands = CommandLog(monkeypatch)
    summary = connector.sync_documents(creds(mailbox))
    assert summary.state == "ok" and summary.totals["fetched"] == 0
    per_folder = [c for c in commands.names if c not in ("CAPABILITY", "LOGIN", "LOGOUT")]
    assert per_folder == ["EXAMINE", "EXAMINE"]


def test_run_cut_short_resumes_from_its_cursor(
        dovecot: DovecotServer, mailbox: str, make_connector: Callable[..., EmailConnector],
        settings: Settings) -> None:
    dovecot.seed(mailbox, [message(f"m{i}", (f"r{i}.pdf", f"report {i}".encode())) for i in range(5)])
    connector = make_connector(batch_size=2)
    first = connector.sync_documents(creds(mailbox), deadline=time.monotonic())  # stops after one item
    assert first.state == "partial" and first.totals["new"] == 1
    assert connector.state.get_cursor("email", connector.scopes()[0])["last_uid"] == 1
    rest = connector.sync_documents(creds(mailbox))
    assert rest.state == "ok" and (rest.totals["fetched"], rest.totals["new"]) == (4, 4)
    assert len(outbox_documents(settings)) == 5


def test_uidvalidity_change_rescans_without_uploading_again(
        dovecot: DovecotServer, mailbox: str, make_connector: Callable[..., EmailConnector], hub: Any) -> None:
    dovecot.seed(mailbox, [message(f"m{i}", (f"r{i}.pdf", f"report {i}".encode())) for i in range(3)])
    connector = make_connector(hub=HttpHub(hub.url, hub.token))
    assert connector.sync_documents(creds(mailbox)).totals["new"] == 3
    old = dovecot.uidvalidity(mailbox)
    new = dovecot.reset_uidvalidity(mailbox)
    assert new != old
    summary = connector.sync_documents(creds(mailbox))
    assert (summary.totals["fetched"], summary.totals["new"], summary.totals["duplicate"]) == (3, 0, 3)
    assert set(hub.sim.uploads_per_key.values()) == {1} and len(hub.sim.documents) == 3
    for document in hub.sim.documents.values():  # the new source ids are linked as provenance
        assert any(f"/{new}/" in entry["source_id"] for entry in document.sources)
    scope = connector.scopes()[0]
    assert connector.state.get_cursor("email", scope) == {"uidvalidity": new, "last_uid": 3}


def test_sync_sets_no_seen_flag(dovecot: DovecotServer, mailbox: str,
                                make_connector: Callable[..., EmailConnector]) -> None:
    dovecot.seed(mailbox, [message("m", ("a.pdf", b"PDF")), message("plain")])
    assert make_connector().sync_documents(creds(mailbox)).totals["new"] == 1
    flags = message_flags(dovecot, mailbox)
    assert len(flags) == 2
    assert all(b"\\Seen" not in f for f in flags.values())


def test_empty_message_is_dead_lettered_with_its_uid_and_the_cursor_moves_on(
        dovecot: DovecotServer, mailbox: str, make_connector: Callable[..., EmailConnector]) -> None:
    dovecot.seed(mailbox, [message("before", ("a.pdf", b"A")), b"", message("after", ("b.pdf", b"B"))])
    connector = make_connector()
    summary = connector.sync_documents(creds(mailbox))
    assert (summary.totals["new"], summary.totals["dead_lettered"]) == (2, 1)
    (entry,) = connector.state.list_dead_letters("email")
    assert "UID 2" in entry.reason
    assert connector.state.get_cursor("email", connector.scopes()[0])["last_uid"] == 3


def fragile_parse(raw: bytes, **kw: Any) -> Any:
    """The real parser, except that it raises on a message containing "poison"."""
    from connectors.email_mime import parse_message

    if b"poison" in raw:
        raise ValueError("cannot read this")
    return parse_message(raw, **kw)


def test_message_the_walker_cannot_read_is_dead_lettered(
        dovecot: DovecotServer, mailbox: str, make_connector: Callable[..., EmailConnector],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Parsing runs in a pool child, which imports the parser by name: a module-level function.
    monkeypatch.setattr(EmailConnector, "parse", staticmethod(fragile_parse))
    dovecot.seed(mailbox, [message("poison", ("x.pdf", b"X")), message("fine", ("y.pdf", b"Y"))])
    connector = make_connector()
    summary = connector.sync_documents(creds(mailbox))
    assert (summary.totals["new"], summary.totals["dead_lettered"]) == (1, 1)
    (entry,) = connector.state.list_dead_letters("email")
    assert "UID 1" in entry.reason and "cannot read this" in entry.reason
    assert connector.state.get_cursor("email", connector.scopes()[0])["last_uid"] == 2


def crashing_parse(raw: bytes, **kw: Any) -> Any:
    """The real parser, except that it kills its process on a message containing "poison"."""
    import os
    import signal

    from connectors.email_mime import parse_message

    if b"poison" in raw:
        os.kill(os.getpid(), signal.SIGKILL)
    return parse_message(raw, **kw)


def test_message_that_kills_its_pool_child_is_dead_lettered_alone(
        dovecot: DovecotServer, mailbox: str, make_connector: Callable[..., EmailConnector],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(EmailConnector, "parse", staticmethod(crashing_parse))
    dovecot.seed(mailbox, [message("fine", ("a.pdf", b"A")), message("poison", ("x.pdf", b"X")),
                           message("after", ("y.pdf", b"Y"))])
    connector = make_connector(parse_in_pool=True)
    summary = connector.sync_documents(creds(mailbox))
    assert (summary.totals["new"], summary.totals["dead_lettered"]) == (2, 1)
    (entry,) = connector.state.list_dead_letters("email")
    assert "UID 2" in entry.reason and "died: killed by SIGKILL" in entry.reason
    assert connector.state.get_cursor("email", connector.scopes()[0])["last_uid"] == 3


def test_dovecot_restart_mid_fetch_loses_nothing(
        dovecot: DovecotServer, mailbox: str, make_connector: Callable[..., EmailConnector], hub: Any) -> None:
    dovecot.seed(mailbox, [message(f"m{i}", (f"r{i}.pdf", f"report {i}".encode())) for i in range(6)])

    class Interrupted(EmailConnector):
        batches = 0

        def _read_batch(self, *args: Any, **kwargs: Any) -> Any:
            Interrupted.batches += 1
            if Interrupted.batches == 2:
                dovecot.kill()  # the server dies between two batches of one run
            return super()._read_batch(*args, **kwargs)

    connector = Interrupted("127.0.0.1", dovecot.imaps_port, ssl_ca_file=dovecot.ca_path, batch_size=2,
                            settings=make_connector().settings, hub=HttpHub(hub.url, hub.token))
    try:
        first = connector.sync_documents(creds(mailbox))
    finally:
        dovecot.start()
    assert first.state == "error"
    assert any(word in first.scopes[0].error for word in ("dropped", "reach", "timed out"))
    assert first.totals["new"] == 2
    second = connector.sync_documents(creds(mailbox))
    assert second.state == "ok" and second.totals["new"] == 4
    assert len(hub.sim.documents) == 6 and set(hub.sim.uploads_per_key.values()) == {1}


# -- TLS and credentials -----------------------------------------------------------------------------

def test_wrong_ca_fails_with_a_clear_tls_error(dovecot: DovecotServer, mailbox: str, tmp_path: Path,
                                              make_connector: Callable[..., EmailConnector]) -> None:
    other_ca = CertAuthority(str(tmp_path / "other-ca"))
    connector = make_connector(ssl_ca_file=other_ca.ca_path)
    summary = connector.sync_documents(creds(mailbox))
    assert summary.state == "config_error"
    error = summary.scopes[0].error
    assert "TLS certificate" in error and "could not be verified" in error and "EMAIL_SSL_CA_FILE" in error
    health = connector.health_check(creds(mailbox))
    assert (health.ok, health.state) == (False, "config_error") and "TLS certificate" in health.detail


def test_system_trust_store_does_not_accept_a_private_ca(
        dovecot: DovecotServer, mailbox: str, make_connector: Callable[..., EmailConnector]) -> None:
    summary = make_connector(ssl_ca_file=None).sync_documents(creds(mailbox))
    assert summary.state == "config_error" and "could not be verified" in summary.scopes[0].error


def test_tls_to_the_plain_port_is_a_config_error(
        dovecot: DovecotServer, mailbox: str, make_connector: Callable[..., EmailConnector]) -> None:
    summary = make_connector(port=dovecot.imap_port).sync_documents(creds(mailbox))
    assert summary.state == "config_error" and "IMAPS port" in summary.scopes[0].error


def test_wrong_password_is_auth_failed_and_tried_once(
        dovecot: DovecotServer, mailbox: str, make_connector: Callable[..., EmailConnector],
        monkeypatch: pytest.MonkeyPatch) -> None:
    connector = make_connector()
    commands = CommandLog(monkeypatch)
    summary = connector.sync_documents({"email": mailbox, "password": "not-the-password"})
    assert summary.state == "auth_failed"
    assert commands.names.count("LOGIN") == 1
    assert "not-the-password" not in summary.scopes[0].error
    status = connector.state.get_status("email", connector.scopes()[0])
    assert status["state"] == "auth_failed"
    health = connector.health_check({"email": mailbox, "password": "not-the-password"})
    assert (health.ok, health.state) == (False, "auth_failed")


@pytest.mark.parametrize(("server_says", "expected"), [
    ("[AUTHENTICATIONFAILED] Authentication failed.", AuthError),
    ("[UNAVAILABLE] Temporary authentication failure.", TransientError),
])
def test_login_refusal_is_classified_by_its_response_code(server_says: str, expected: type[Exception]) -> None:
    account = EmailAccount("imap.kmrl.co.in", "ops@kmrl.co.in")
    with pytest.raises(expected, match=r"ops@kmrl\.co\.in"):
        with classified(account, "logging in"):
            raise LoginError(server_says)


def test_starttls_on_the_plain_port(dovecot: DovecotServer, mailbox: str,
                                    make_connector: Callable[..., EmailConnector]) -> None:
    dovecot.seed(mailbox, [message("m", ("a.pdf", b"PDF"))])
    connector = make_connector(port=dovecot.imap_port, use_ssl=False, starttls=True)
    assert connector.sync_documents(creds(mailbox)).totals["new"] == 1


def test_plain_imap_needs_an_explicit_allowance(dovecot: DovecotServer, mailbox: str,
                                                make_connector: Callable[..., EmailConnector]) -> None:
    with pytest.raises(ConfigError, match="unencrypted"):
        make_connector(port=dovecot.imap_port, use_ssl=False)
    dovecot.seed(mailbox, [message("m", ("a.pdf", b"PDF"))])
    connector = make_connector(port=dovecot.imap_port, use_ssl=False, allow_plaintext=True)
    assert connector.sync_documents(creds(mailbox)).totals["new"] == 1


def test_contradictory_or_incomplete_settings_are_config_errors(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="not both"):
        EmailConnector("imap.kmrl.co.in", 993, use_ssl=True, starttls=True, settings=settings)
    with pytest.raises(ConfigError, match="does not exist"):
        EmailConnector("imap.kmrl.co.in", ssl_ca_file="/nonexistent/ca.pem", settings=settings)
    connector = EmailConnector("imap.kmrl.co.in", settings=settings)
    summary = connector.sync_documents({"email": "", "password": ""})
    assert summary.state == "config_error" and "EMAIL_USER" in summary.scopes[0].error


def test_health_check_examines_every_folder(dovecot: DovecotServer, mailbox: str,
                                            make_connector: Callable[..., EmailConnector]) -> None:
    dovecot.create_folder(mailbox, "Finance/Invoices")
    healthy = make_connector(folders=("INBOX", "Finance/Invoices")).health_check(creds(mailbox))
    assert (healthy.ok, healthy.state) == (True, "healthy") and "Finance/Invoices 0 messages" in healthy.detail
    missing = make_connector(folders=("INBOX", "Nope")).health_check(creds(mailbox))
    assert (missing.ok, missing.state) == (False, "config_error") and "Nope" in missing.detail


# -- folders and accounts ------------------------------------------------------------------------

def test_each_folder_is_its_own_scope_with_its_own_cursor(
        dovecot: DovecotServer, mailbox: str, make_connector: Callable[..., EmailConnector]) -> None:
    dovecot.seed(mailbox, [message("i", ("inbox.pdf", b"I"))])
    dovecot.seed(mailbox, [message(f"f{i}", (f"invoice{i}.pdf", f"F{i}".encode())) for i in range(2)],
                 folder="Finance/Invoices")
    connector = make_connector(folders=("INBOX", "Finance/Invoices"))
    summary = connector.sync_documents(creds(mailbox))
    assert connector.scopes() == [f"{mailbox}@127.0.0.1/INBOX", f"{mailbox}@127.0.0.1/Finance/Invoices"]
    assert [s.counts["new"] for s in summary.scopes] == [1, 2]
    assert [connector.state.get_cursor("email", s)["last_uid"] for s in connector.scopes()] == [1, 2]


def test_accounts_file_and_email_env_make_one_connector_over_every_mailbox(
        dovecot: DovecotServer, mailbox: str, settings: Settings, tmp_path: Path) -> None:
    finance = f"f{uuid.uuid4().hex[:8]}@kmrl.test"
    dovecot.add_user(finance, "finance-secret")
    dovecot.seed(mailbox, [message("ops", ("ops.pdf", b"OPS"))])
    dovecot.seed(finance, [message("inv", ("invoice.pdf", b"INV"))])
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(f"""
[[account]]
name = "finance"
host = "127.0.0.1"
port = {dovecot.imaps_port}
user = "{finance}"
password_env = "KMRL_FINANCE_IMAP_PASSWORD"
folders = ["INBOX"]
ssl_ca_file = "{dovecot.ca_path}"
hints = {{ mailbox = "finance@kmrl.co.in" }}
""", encoding="utf-8")
    environ = {"EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": str(dovecot.imaps_port), "EMAIL_USER": mailbox,
               "EMAIL_PASSWORD": "pw-" + mailbox, "EMAIL_SSL_CA_FILE": dovecot.ca_path,
               "EMAIL_ACCOUNTS_FILE": str(accounts), "KMRL_FINANCE_IMAP_PASSWORD": "finance-secret",
               "EMAIL_ALLOWED_EXTENSIONS": "pdf,xlsx", "EMAIL_HINTS": "site=muttom"}
    configured = Settings(**{**settings.__dict__, "environ": environ})
    connector = EmailConnector.from_settings(configured)
    summary = connector.sync_documents()
    assert summary.state == "ok"
    assert {s.scope: s.counts["new"] for s in summary.scopes} == {
        f"{mailbox}@127.0.0.1/INBOX": 1, f"{finance}@127.0.0.1/INBOX": 1}
    assert connector.allowed_extensions == {"pdf", "xlsx"}
    assert connector.health_check().ok


def test_accounts_file_errors_are_config_errors(tmp_path: Path, settings: Settings) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[account]]\nhost = "h"\nuser = "u"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="password_env"):
        EmailConnector.from_settings(Settings(**{**settings.__dict__, "environ": {"EMAIL_ACCOUNTS_FILE": str(bad)}}))
    with pytest.raises(ConfigError, match="not configured"):
        EmailConnector.from_settings(Settings(**{**settings.__dict__, "environ": {}}))


def test_missing_password_variable_fails_only_that_account(
        dovecot: DovecotServer, mailbox: str, settings: Settings) -> None:
    dovecot.seed(mailbox, [message("ops", ("ops.pdf", b"OPS"))])
    other = EmailAccount("127.0.0.1", "nobody@kmrl.test", dovecot.imaps_port, "KMRL_UNSET_PASSWORD",
                         ssl_ca_file=dovecot.ca_path)
    connector = EmailConnector("127.0.0.1", dovecot.imaps_port, ssl_ca_file=dovecot.ca_path, accounts=[other],
                               settings=settings)
    summary = connector.sync_documents(creds(mailbox))
    states = {s.scope: (s.state, s.error) for s in summary.scopes}
    assert states[f"{mailbox}@127.0.0.1/INBOX"][0] == "ok"
    assert states["nobody@kmrl.test@127.0.0.1/INBOX"][0] == "config_error"
    assert "KMRL_UNSET_PASSWORD" in states["nobody@kmrl.test@127.0.0.1/INBOX"][1]


# -- filters ---------------------------------------------------------------------------------------

def test_filtered_attachments_are_counted_and_logged_with_their_reason(
        dovecot: DovecotServer, mailbox: str, make_connector: Callable[..., EmailConnector],
        settings: Settings) -> None:
    dovecot.seed(mailbox, [message("mixed bag", ("report.pdf", b"%PDF " * 10), ("tiny.pdf", b"%P"),
                                   ("big.pdf", b"%PDF" * 600_000), ("minutes.docx", b"PK" * 100),
                                   ("empty.pdf", b""))])
    connector = make_connector(allowed_extensions=[".PDF"], min_size=10, max_attachment_mb=1)
    summary = connector.sync_documents(creds(mailbox))
    assert (summary.totals["fetched"], summary.totals["new"], summary.totals["skipped"]) == (5, 1, 4)
    audit = [json.loads(line) for line in Path(settings.audit_log).read_text().splitlines()]
    reasons = {entry["filename"]: entry["reason"] for entry in audit if entry.get("decision") == "skipped"}
    assert reasons["tiny.pdf"] == "too-small:2<10"
    assert reasons["big.pdf"].startswith("too-large:2400000>1048576")
    assert reasons["minutes.docx"] == "extension-not-allowed:docx"
    assert reasons["empty.pdf"] == "empty"
    assert connector.state.get_cursor("email", connector.scopes()[0])["last_uid"] == 1


# -- the corpus ------------------------------------------------------------------------------------

def test_every_corpus_message_goes_through_the_connector(
        dovecot: DovecotServer, mailbox: str, make_connector: Callable[..., EmailConnector],
        settings: Settings) -> None:
    files = corpus_files()
    dovecot.seed(mailbox, [path.read_bytes() for path in files])
    connector = make_connector()
    summary = connector.sync_documents(creds(mailbox))
    expected = [entry for path in files for entry in CORPUS_ATTACHMENTS[path.name]]
    assert summary.state == "ok"
    assert summary.totals["failed"] == 0
    assert summary.totals["fetched"] == len(expected)
    assert summary.totals["skipped"] == sum(1 for _path, _name, size in expected if size == 0)
    stored = outbox_documents(settings)
    uidvalidity = dovecot.uidvalidity(mailbox)
    checked = 0
    for uid, path in enumerate(files, 1):
        # IMAP stores CRLF line endings, so an unencoded (7bit) body grows by one byte per line:
        # sizes come from the walker over the CRLF form; sections and names from our table.
        served = {a.part_path: a for a in iter_attachments(crlf(path.read_bytes()))}
        for part_path, name, _size in CORPUS_ATTACHMENTS[path.name]:
            source_id = f"{mailbox}@127.0.0.1/INBOX/{uidvalidity}/{uid}/{part_path}"
            if source_id in stored:  # absent: empty (skipped) or the same bytes seen before (linked)
                document = stored[source_id]
                assert document["size"] == served[part_path].size == len(document["bytes"])
                assert document["extra"]["part_path"] == part_path
                if name:
                    assert document["filename"] == sanitize_filename(name)
                checked += 1
    assert checked == summary.totals["new"]
    assert connector.state.get_cursor("email", connector.scopes()[0])["last_uid"] == len(files)
    assert CORPUS.is_dir()


# -- hostile mail: no message pins the folder ------------------------------------------------------

def uuencoded_flood(blocks: int) -> bytes:
    """One text/plain message whose body is ``blocks`` tiny uuencoded files (each an empty file)."""
    head = (b"From: Flood <flood@example.net>\r\nTo: ops@kmrl.co.in\r\nSubject: many files\r\n"
            b"Date: Mon, 1 Jan 2024 09:00:00 +0530\r\nMessage-ID: <flood@example.net>\r\n"
            b"Content-Type: text/plain; charset=us-ascii\r\n\r\nHello\r\n")
    return head + b"".join(b"begin 644 f%d.txt\r\n`\r\nend\r\n" % i for i in range(blocks))


def test_uuencode_flood_is_bounded_and_the_invoice_after_it_is_ingested(
        dovecot: DovecotServer, mailbox: str, make_connector: Callable[..., EmailConnector],
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """50,000 uuencoded files in one text part, then an invoice: one sync takes the invoice.

    MAX_PARTS is lowered so the pipeline's per-item work (Redis round trips for each skipped
    file) stays small; tests/test_mime.py shows the walker honours the real limit."""
    monkeypatch.setattr(EmailConnector, "max_parts", 300)  # applied in the pool child that parses
    invoice = b"%PDF-1.7 invoice 4711 for track maintenance"
    dovecot.seed(mailbox, [uuencoded_flood(50_000), message("Invoice 4711", ("invoice-4711.pdf", invoice))])
    connector = make_connector()
    first = connector.sync_documents(creds(mailbox))
    scope = first.scopes[0].scope
    assert first.state == "ok"
    # The flood's files count against MAX_PARTS like MIME parts (its body part is one of them).
    assert first.totals["fetched"] == 299 + 1
    assert (first.totals["new"], first.totals["skipped"]) == (1, 299)
    uidvalidity = dovecot.uidvalidity(mailbox)
    stored = outbox_documents(settings)
    assert stored[f"{mailbox}@127.0.0.1/INBOX/{uidvalidity}/2/2"]["bytes"] == invoice
    assert connector.state.get_cursor("email", scope) == {"uidvalidity": uidvalidity, "last_uid": 2}
    again = connector.sync_documents(creds(mailbox))
    assert again.state == "ok" and again.totals["fetched"] == 0


def test_message_whose_only_attachment_is_skipped_moves_the_cursor(
        dovecot: DovecotServer, mailbox: str, make_connector: Callable[..., EmailConnector]) -> None:
    dovecot.seed(mailbox, [message("tool", ("setup.exe", b"MZ" + bytes(200)))])
    connector = make_connector()
    summary = connector.sync_documents(creds(mailbox))
    assert (summary.state, summary.totals["fetched"], summary.totals["skipped"]) == ("ok", 1, 1)
    assert connector.state.get_cursor("email", connector.scopes()[0])["last_uid"] == 1
    assert connector.sync_documents(creds(mailbox)).totals["fetched"] == 0


def test_runs_cut_short_inside_one_message_still_get_past_it(
        dovecot: DovecotServer, mailbox: str, make_connector: Callable[..., EmailConnector],
        settings: Settings) -> None:
    """Each run ends after its first item (deadline already passed): a message with more items than
    one run handles must still be passed, a few of its items per run, never restarted."""
    programs = [(f"tool{i}.exe", b"MZ" + bytes([i]) * 50) for i in range(4)]
    dovecot.seed(mailbox, [message("tools", *programs), message("Invoice 12", ("invoice-12.pdf", b"%PDF 12"))])
    connector = make_connector()
    runs = []
    for _ in range(10):
        summary = connector.sync_documents(creds(mailbox), deadline=time.monotonic())
        runs.append(summary.totals["fetched"])
        if summary.state == "ok" and summary.totals["fetched"] == 0:
            break
    assert sum(runs) == 5, runs  # four skipped programs and the invoice, each seen once
    assert len(outbox_documents(settings)) == 1
    cursor = connector.state.get_cursor("email", connector.scopes()[0])
    assert cursor == {"uidvalidity": dovecot.uidvalidity(mailbox), "last_uid": 2}


def test_every_item_of_a_message_carries_a_safe_cursor_and_shared_text_is_built_once(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """3,000 named files in one message: each item says how far the message is done, and the text
    all of them share is built once (it was rebuilt per item from every name: quadratic)."""
    import connectors.email_connector as module
    from connectors.email_imap import FetchedMessage
    from connectors.email_mime import parse_message

    merged = [0]
    real = module.merged_text

    def counted(parts: list[str | None], **kwargs: Any) -> str:
        merged[0] += sum(len(p or "") for p in parts)
        return real(parts, **kwargs)

    monkeypatch.setattr(module, "merged_text", counted)
    raw = (b"From: a@kmrl.co.in\nSubject: scans\nContent-Type: text/plain\n\nscans attached\n"
           + b"".join(b"begin 644 scan-%04d.pdf\n#0V1&\n`\nend\n" % i for i in range(3_000)))
    connector = EmailConnector("imap.kmrl.co.in", settings=settings)
    account = connector._accounts[0]
    items = list(connector._changes(account, "INBOX", 42, FetchedMessage(7, parse_message(raw))))
    assert len(items) == 3_000
    assert merged[0] <= 2 * len(raw)
    assert [i.cursor_after for i in items[:2]] == [
        {"uidvalidity": 42, "last_uid": 6, "uid": 7, "parts_done": 1},
        {"uidvalidity": 42, "last_uid": 6, "uid": 7, "parts_done": 2}]
    assert items[-1].cursor_after == {"uidvalidity": 42, "last_uid": 7}
    assert all(i.text == items[0].text and "scan-0000.pdf" in i.text for i in items)
    resumed = list(connector._changes(account, "INBOX", 42, FetchedMessage(7, parse_message(raw)), 2_998))
    assert [i.filename for i in resumed] == ["scan-2998.pdf", "scan-2999.pdf"]
