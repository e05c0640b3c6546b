"""IMAP accounts and sessions for the email connector: TLS, login, and failures in our classes.

``EmailAccount`` is one mailbox (host, user, where its password comes from, folders, hints);
``load_accounts`` reads several from a TOML file (EMAIL_ACCOUNTS_FILE, see
config/email_accounts.example.toml). ``ImapSession`` is one logged-in connection: certificate
verification on by default (system store or the account's CA file), STARTTLS as an option, plain
IMAP only when explicitly allowed. Every failure comes out as ``AuthError`` (the server refused the
login: not retried), ``ConfigError`` (a certificate that does not verify, a wrong port, a folder
that does not exist) or ``TransientError`` (unreachable, timed out, connection dropped). No
message carries the password.
"""

from __future__ import annotations

import imaplib
import os
import queue
import socket
import ssl
import threading
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from imapclient import IMAPClient
from imapclient.exceptions import CapabilityError, IMAPClientAbortError, IMAPClientError, LoginError

from connectors.email_mime import ParsedMessage
from utils.errors import AuthError, ConfigError, TransientError
from utils.logging import get_logger

log = get_logger(__name__)

#: IMAPS port (implicit TLS).
IMAPS_PORT = 993
#: IMAP port (plain, or upgraded with STARTTLS).
IMAP_PORT = 143

#: RFC 5530 response codes of a login that failed for a reason other than the credentials.
_TEMPORARY_LOGIN_CODES = ("[UNAVAILABLE]", "[SERVERBUG]", "[INUSE]", "[LIMIT]")

_ACCOUNT_KEYS = {"name", "host", "port", "user", "password_env", "folders", "hints", "use_ssl", "starttls",
                 "allow_plaintext", "ssl_ca_file"}


@dataclass(frozen=True)
class EmailAccount:
    """One mailbox.

    host / port: the IMAP server (port default: 993, or 143 with STARTTLS / plain).
    user: the login; "" for the default account, whose login comes from the credentials.
    password_env: the NAME of the environment variable holding the password ("" for the default
        account, whose password comes from the credentials).
    folders: the folders synced, each its own scope.
    hints: source facts for the department classifier (e.g. {"department": "finance"}).
    use_ssl / starttls / allow_plaintext: implicit TLS (default), STARTTLS on a plain port, or plain
        IMAP, which sends the password in clear and so must be allowed explicitly.
    ssl_ca_file: a CA bundle to verify the server with, instead of the system store.
    """

    host: str
    user: str = ""
    port: int = 0
    password_env: str = ""
    folders: tuple[str, ...] = ("INBOX",)
    hints: Mapping[str, str] = field(default_factory=dict)
    use_ssl: bool = True
    starttls: bool = False
    allow_plaintext: bool = False
    ssl_ca_file: str | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError(f"email account {self.label!r} has no IMAP host")
        if self.use_ssl and self.starttls:
            raise ConfigError(f"email account {self.label!r}: choose implicit TLS (use_ssl, port 993) or "
                              "STARTTLS (port 143), not both")
        if not self.use_ssl and not self.starttls and not self.allow_plaintext:
            raise ConfigError(f"email account {self.label!r}: plain IMAP would send the password unencrypted; "
                              "use TLS, STARTTLS, or allow plaintext explicitly (EMAIL_ALLOW_PLAINTEXT=1)")
        if not self.folders:
            raise ConfigError(f"email account {self.label!r} has no folders to sync")
        if self.ssl_ca_file and not os.path.isfile(self.ssl_ca_file):
            raise ConfigError(f"email account {self.label!r}: CA file {self.ssl_ca_file} does not exist")

    @property
    def label(self) -> str:
        return self.name or (f"{self.user}@{self.host}" if self.user else self.host)

    @property
    def effective_port(self) -> int:
        return self.port or (IMAPS_PORT if self.use_ssl else IMAP_PORT)

    def with_user(self, user: str) -> EmailAccount:
        return EmailAccount(self.host, user, self.port, self.password_env, self.folders, dict(self.hints),
                            self.use_ssl, self.starttls, self.allow_plaintext, self.ssl_ca_file, self.name)


def _bool(value: Any, key: str, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{where}: {key} must be true or false, not {value!r}")


def load_accounts(path: str) -> list[EmailAccount]:
    """The ``[[account]]`` tables of a TOML file; ConfigError naming the problem when it is wrong."""
    if not os.path.isfile(path):
        raise ConfigError(f"EMAIL_ACCOUNTS_FILE {path} does not exist")
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"EMAIL_ACCOUNTS_FILE {path} is not valid TOML: {exc}") from exc
    unknown_top = set(data) - {"account"}
    if unknown_top:
        raise ConfigError(f"{path}: unknown tables {', '.join(sorted(unknown_top))} (expected [[account]])")
    accounts: list[EmailAccount] = []
    for index, raw in enumerate(data.get("account", [])):
        where = f"{path} account {index + 1}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} is not a table")
        unknown = set(raw) - _ACCOUNT_KEYS
        if unknown:
            raise ConfigError(f"{where} has unknown keys: {', '.join(sorted(unknown))}")
        for key in ("host", "user", "password_env"):
            if not isinstance(raw.get(key), str) or not raw[key].strip():
                raise ConfigError(f"{where} needs {key}")
        folders = raw.get("folders", ["INBOX"])
        if isinstance(folders, str):
            folders = [folders]
        hints = raw.get("hints", {})
        if not isinstance(hints, dict):
            raise ConfigError(f"{where}: hints must be a table")
        try:
            port = int(raw.get("port", 0))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: port must be a number") from exc
        accounts.append(EmailAccount(
            host=raw["host"].strip(), user=raw["user"].strip(), port=port, password_env=raw["password_env"].strip(),
            folders=tuple(str(f) for f in folders), hints={str(k): str(v) for k, v in hints.items()},
            use_ssl=_bool(raw.get("use_ssl", True), "use_ssl", where),
            starttls=_bool(raw.get("starttls", False), "starttls", where),
            allow_plaintext=_bool(raw.get("allow_plaintext", False), "allow_plaintext", where),
            ssl_ca_file=str(raw["ssl_ca_file"]) if raw.get("ssl_ca_file") else None,
            name=str(raw.get("name") or ""),
        ))
    labels = [(a.user.lower(), a.host.lower()) for a in accounts]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{path} lists the same user and host twice")
    return accounts


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """A client context that verifies the certificate and host name (system store or ``ca_file``)."""
    try:
        return ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the CA file {ca_file}: {exc}") from exc


@contextmanager
def classified(account: EmailAccount, doing: str) -> Iterator[None]:
    """Turns whatever imaplib, imapclient, ssl and socket raise into our failure classes."""
    where = f"{account.host}:{account.effective_port}"
    try:
        yield
    except LoginError as exc:
        text = _server_text(exc)
        if any(code in text.upper() for code in _TEMPORARY_LOGIN_CODES):
            # RFC 5530: the server cannot check credentials right now; they may well be right.
            raise TransientError(f"IMAP server {where} could not log in {account.user} now: {text}") from exc
        raise AuthError(f"IMAP login of {account.user} at {where} was refused: {text}") from exc
    except ssl.SSLCertVerificationError as exc:
        raise ConfigError(
            f"TLS certificate of {where} could not be verified ({exc.verify_message or exc.reason}); "
            "if the server uses a private CA, set EMAIL_SSL_CA_FILE (or ssl_ca_file) to it") from exc
    except ssl.SSLError as exc:
        if exc.reason in ("WRONG_VERSION_NUMBER", "UNSUPPORTED_PROTOCOL", "RECORD_LAYER_FAILURE", "HTTP_REQUEST"):
            raise ConfigError(f"TLS handshake with {where} failed ({exc.reason}): is this an IMAPS port? "
                              "For port 143 use STARTTLS (EMAIL_STARTTLS=1, EMAIL_USE_SSL=0)") from exc
        raise TransientError(f"TLS error with {where} while {doing}: {exc.reason or exc}") from exc
    except CapabilityError as exc:
        raise ConfigError(f"{where} does not support what we need while {doing}: {exc}") from exc
    except (IMAPClientAbortError, imaplib.IMAP4.abort) as exc:
        raise TransientError(f"IMAP connection to {where} dropped while {doing}: {exc}") from exc
    except TimeoutError as exc:
        raise TransientError(f"IMAP server {where} timed out while {doing}") from exc
    except socket.gaierror as exc:
        raise TransientError(f"cannot resolve IMAP host {account.host}: {exc}") from exc
    except OSError as exc:
        raise TransientError(f"cannot reach IMAP server {where} while {doing}: {exc}") from exc
    except (IMAPClientError, imaplib.IMAP4.error) as exc:
        raise TransientError(f"IMAP server {where} refused {doing}: {_server_text(exc)}") from exc


def _server_text(exc: BaseException) -> str:
    text = str(exc)
    for prefix in ("b'", 'b"'):
        if text.startswith(prefix) and text.endswith(text[1]):
            text = text[2:-1]
    return text[:300]


class ImapSession:
    """One logged-in IMAP connection to ``account``. ``close()`` logs out (errors ignored)."""

    def __init__(self, account: EmailAccount, password: str, *, timeout: float) -> None:
        self.account = account
        with classified(account, "connecting"):
            if account.use_ssl:
                client = IMAPClient(account.host, port=account.effective_port, ssl=True,
                                    ssl_context=tls_context(account.ssl_ca_file), timeout=timeout)
            else:
                client = IMAPClient(account.host, port=account.effective_port, ssl=False, timeout=timeout)
        self.client = client
        try:
            with classified(account, "starting TLS"):
                if account.starttls:
                    client.starttls(tls_context(account.ssl_ca_file))
            with classified(account, "logging in"):
                client.login(account.user, password)
        except BaseException:
            self.close(logout=False)
            raise
        log.info("imap_logged_in", account=account.label, host=account.host, port=account.effective_port,
                 tls="implicit" if account.use_ssl else ("starttls" if account.starttls else "none"))

    def examine(self, folder: str) -> Mapping[bytes, Any]:
        """SELECT ``folder`` read-only (EXAMINE): nothing we do can set ``\\Seen``."""
        with classified(self.account, f"opening folder {folder}"):
            try:
                return self.client.select_folder(folder, readonly=True)
            except (IMAPClientAbortError, imaplib.IMAP4.abort):
                raise
            except (IMAPClientError, imaplib.IMAP4.error) as exc:
                text = _server_text(exc)
                if "NONEXISTENT" in text.upper() or "doesn't exist" in text or "not exist" in text.lower():
                    raise ConfigError(f"folder {folder!r} does not exist in {self.account.label}") from exc
                raise

    def close(self, *, logout: bool = True) -> None:
        client = getattr(self, "client", None)
        if client is None:
            return
        try:
            if logout:
                client.logout()
            else:
                client.shutdown()
        except Exception:  # noqa: BLE001 - the connection may already be gone; nothing to do about it
            try:
                client.shutdown()
            except Exception:  # noqa: BLE001
                log.debug("imap_close_failed", account=self.account.label)


@dataclass
class FetchedMessage:
    """One message read from the server: parsed, or None with the reason it could not be."""

    uid: int
    parsed: ParsedMessage | None
    problem: str = ""


T = TypeVar("T")
_DONE = object()


class Prefetch(Generic[T]):
    """Runs ``produce()`` in a thread, ``depth`` values ahead of the consumer.

    Iterating yields its values in order and re-raises its exception, if any, in the consumer.
    ``close()`` stops the thread after the value it is producing and waits for it (up to
    ``timeout`` seconds); it returns False when the thread is still busy (e.g. a fetch that hangs),
    so the caller knows not to reuse what the thread was using. Values wait in a bounded queue:
    memory holds at most ``depth`` + 2 values (queued, being produced, being consumed).
    """

    def __init__(self, produce: Callable[[], Iterator[T]], *, depth: int = 1) -> None:
        self._produce = produce
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="email-prefetch", daemon=True)
        self._thread.start()

    def _put(self, kind: str, value: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for value in self._produce():
                if not self._put("value", value):
                    return
            self._put("done", _DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self._put("error", exc)

    def __iter__(self) -> Iterator[T]:
        while True:
            kind, value = self._queue.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value

    def close(self, *, timeout: float) -> bool:
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout)
        return not self._thread.is_alive()
