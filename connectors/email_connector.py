"""EmailConnector: attachments of IMAP mailboxes (one or several accounts), through the pipeline.

Facts: ../shared/reference/imap-testing.md. A scope is one folder of one account, written
``<user>@<host>/<folder>`` (e.g. ``finance@kmrl.co.in@imap.kmrl.co.in/INBOX``). Per folder:

1. ``EXAMINE`` (read-only SELECT, so nothing is ever marked ``\\Seen``). Its UIDVALIDITY and
   UIDNEXT decide everything: when UIDNEXT shows no UID above the cursor, that is the whole run
   of the folder (one command); when UIDVALIDITY differs from the cursor's, the folder was rebuilt
   and is read again from UID 1 (new UIDs mean new source ids; content dedup in the pipeline links
   the bytes already in the Hub instead of uploading them again);
2. ``UID SEARCH UID <last+1>:*``, then ``UID FETCH (RFC822.SIZE)`` to cut the new UIDs into batches
   of at most ``batch_size`` messages and ``batch_bytes`` bytes (memory stays bounded whatever the
   message sizes), then ``UID FETCH (BODY.PEEK[])`` per batch;
3. each message is parsed once (connectors/email_mime.py, at most MAX_PARTS attachments per message),
   several per chunk, in this process or (EMAIL_PARSE_IN_POOL=1) in the process pool (base/pool.py);
   each attachment becomes an ``Item`` whose bytes are already in memory. Every item carries the
   cursor that is safe after it: the last item of a message ``{"uidvalidity": V, "last_uid":
   UID}``, any earlier one ``{"uidvalidity": V, "last_uid": UID - 1, "uid": UID, "parts_done":
   n}`` (the first n attachments of message UID are done). A run cut short inside a message with
   many attachments (all skipped, say) resumes after the last one done instead of restarting the
   message, so no message can hold a folder back. A ``Checkpoint`` closes every batch, so
   messages without attachments advance the cursor too.

``source_id`` = ``<user>@<host>/<folder>/<UIDVALIDITY>/<UID>/<part path>``: host, folder,
UIDVALIDITY, UID and part path, plus the login, because two mailboxes on one server can have the
same folder name and (created in the same second) the same UIDVALIDITY. ``version`` = the UID: an
IMAP message never changes under its (UIDVALIDITY, UID), so the version of a source id never
changes either; it is the UID rather than a constant so the Hub's metadata can name the message.

Filters (allowed extensions, minimum size, maximum attachment size, empty files) go through the
pipeline's skip mechanism: the attachment is yielded, and the pipeline counts it as skipped,
logs ``document_skipped`` with the reason and writes the audit line, without reading it.
"""

from __future__ import annotations

import functools
import mimetypes
import os
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from base.base_connector import BaseConnector
from base.contract import Checkpoint, HealthResult, HealthState, Item, ItemFailure
from base.document import merged_text
from base.pool import pool_for
from config.settings import Settings
from connectors.email_imap import EmailAccount, FetchedMessage, ImapSession, Prefetch, classified, load_accounts
from connectors.email_mime import MAX_PARTS, Attachment, ParsedMessage, parse_message, parse_messages
from utils.credentials_manager import CredentialsManager
from utils.errors import AuthError, ConfigError, ConnectorError, ThrottledError, TransientError
from utils.logging import get_logger, register_secret

log = get_logger(__name__)

#: Messages per ``UID FETCH BODY.PEEK[]`` (EMAIL_BATCH_SIZE).
DEFAULT_BATCH_SIZE = 250
#: Bytes per body batch at most (EMAIL_BATCH_MB); a larger single message is fetched alone.
DEFAULT_BATCH_BYTES = 16 * 1024 * 1024
#: UIDs per ``UID FETCH (RFC822.SIZE)`` command.
SIZE_FETCH_CHUNK = 5000
#: IMAP socket timeout, seconds (EMAIL_TIMEOUT).
DEFAULT_TIMEOUT = 30.0
#: Messages, and their bytes, sent to a pool child for parsing in one round trip: a round trip per
#: small message would cost the pipeline more (pickling, waking the child) than parsing it does.
PARSE_CHUNK_MESSAGES = 32
PARSE_CHUNK_BYTES = 1024 * 1024


def _extension(filename: str) -> str:
    return os.path.splitext(filename)[1].lstrip(".").lower()


@dataclass(frozen=True)
class _MessageFacts:
    """What every item of one message shares: built once per message (a message may carry up to
    MAX_PARTS attachments; rebuilding this per item made a large message quadratic)."""

    text: str
    hints: dict[str, str]
    metadata: dict[str, Any]


class EmailConnector(BaseConnector):
    """Attachments from IMAP folders.

    imap_host / imap_port: the default account's server ("" when only ``accounts`` are used); its
        login and password come from the credentials ``{"email", "password"}``.
    use_ssl (default True), starttls (default False), allow_plaintext (default False),
        ssl_ca_file (default None: the system store): how the default account connects.
    folders: the default account's folders (default ("INBOX",)).
    timeout: IMAP socket timeout, seconds (default 30).
    allowed_extensions: only attachments with these extensions are ingested (default: all).
    min_size: attachments smaller than this many bytes are skipped (default 0; empty files are
        always skipped).
    max_attachment_mb: attachments larger than this are skipped without being read (default:
        the service-wide MAX_DOCUMENT_MB).
    include_inline: also ingest inline images (default False; see connectors/email_mime.py for what counts).
    parse_in_pool: parse messages in the process pool (base/pool.py) instead of in this process
        (default False, EMAIL_PARSE_IN_POOL): a crash, a time or memory overrun of the parser then
        costs one message, and parsing leaves the pipeline's GIL; on two cores the pickling costs
        more than that frees (bench/bench_email.py --compare-pool, BENCHMARKS.md).
    batch_size / batch_bytes: messages and bytes per body fetch (defaults 250 and 16 MiB).
    hints: classifier hints of the default account (e.g. {"department": "finance"}).
    account_name: a label for the default account in logs.
    accounts: more accounts, each with its own server, login, password variable and folders.
    Plus BaseConnector's keyword-only ``state``, ``hub``, ``settings``, ``rules``.
    """

    name = "email"
    #: The MIME parser, run in a pool child: a module-level function, so the child imports it by name.
    parse = staticmethod(parse_message)
    #: Parts read from one message at most (connectors/email_mime.py): decided here, applied in the child.
    max_parts = MAX_PARTS

    def __init__(self, imap_host: str = "", imap_port: int = 993, *, use_ssl: bool = True, starttls: bool = False,
                 allow_plaintext: bool = False, ssl_ca_file: str | None = None,
                 folders: Sequence[str] = ("INBOX",), timeout: float = DEFAULT_TIMEOUT,
                 allowed_extensions: Sequence[str] | None = None, min_size: int = 0,
                 max_attachment_mb: float | None = None, include_inline: bool = False, parse_in_pool: bool = False,
                 batch_size: int = DEFAULT_BATCH_SIZE, batch_bytes: int = DEFAULT_BATCH_BYTES,
                 hints: Mapping[str, str] | None = None, account_name: str | None = None,
                 accounts: Sequence[EmailAccount] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.default_account: EmailAccount | None = None
        if imap_host:
            port = imap_port if imap_port else 0
            if not use_ssl and port == 993:
                port = 143  # 993 is the IMAPS default of the signature; STARTTLS / plain use 143
            self.default_account = EmailAccount(
                host=imap_host, port=port, folders=tuple(folders), hints=dict(hints or {}), use_ssl=use_ssl,
                starttls=starttls, allow_plaintext=allow_plaintext, ssl_ca_file=ssl_ca_file,
                name=account_name or "")
        self.extra_accounts = list(accounts)
        if self.default_account is None and not self.extra_accounts:
            raise ConfigError("email is not configured: set EMAIL_HOST (and EMAIL_USER, EMAIL_PASSWORD) "
                              "or EMAIL_ACCOUNTS_FILE (see env.example)")
        if batch_size < 1 or batch_bytes < 1:
            raise ConfigError("EMAIL_BATCH_SIZE and EMAIL_BATCH_MB must be positive")
        self.timeout = timeout
        self.allowed_extensions = frozenset(
            e.strip().lstrip(".").lower() for e in allowed_extensions or () if e.strip())
        self.min_size = max(0, int(min_size))
        self.include_inline = include_inline
        self.parse_in_pool = parse_in_pool
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        if max_attachment_mb:
            limit = int(max_attachment_mb * 1024 * 1024)
            self.max_document_bytes = min(limit, self.max_document_bytes or limit)
        self._accounts: list[EmailAccount] = []
        self._scopes: dict[str, tuple[EmailAccount, str]] = {}
        self._sessions: dict[str, ImapSession] = {}
        self._passwords: dict[str, str] = {}
        self._resolve_accounts(None)

    # -- configuration ----------------------------------------------------------------------------

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> EmailConnector:
        """ONE connector for every configured account: the EMAIL_* account (when EMAIL_HOST is set)
        plus the accounts of EMAIL_ACCOUNTS_FILE. Each scope names its account, so one connector
        (and one beat entry) covers every mailbox and the scheduler fans out per scope as for any
        other source. See env.example for the variables."""
        read = settings.reader

        def number(name: str, default: float, what: str) -> float:
            # Read as a number, as these always were ("993.0" is port 993); whole counts are truncated below.
            return read.number(name, default, what=what)

        accounts_file = settings.env("EMAIL_ACCOUNTS_FILE")
        hints = {}
        for pair in settings.env_list("EMAIL_HINTS"):
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"EMAIL_HINTS takes key=value pairs, not {pair!r}")
            hints[key.strip()] = value.strip()
        use_ssl = settings.env_bool("EMAIL_USE_SSL", True)
        starttls = settings.env_bool("EMAIL_STARTTLS", False)
        if starttls and "EMAIL_USE_SSL" not in settings.environ:
            use_ssl = False  # EMAIL_STARTTLS=1 alone means STARTTLS on 143
        max_mb = number("EMAIL_MAX_ATTACHMENT_MB", 0, "a number of MB (0: no cap)")
        batch_mb = number("EMAIL_BATCH_MB", DEFAULT_BATCH_BYTES // (1024 * 1024), "a number of MB")
        return cls(
            settings.env("EMAIL_HOST"),
            int(number("EMAIL_PORT", 0, "a TCP port number")) or (993 if use_ssl else 143),
            use_ssl=use_ssl, starttls=starttls,
            allow_plaintext=settings.env_bool("EMAIL_ALLOW_PLAINTEXT", False),
            ssl_ca_file=settings.env("EMAIL_SSL_CA_FILE") or None,
            folders=settings.env_list("EMAIL_FOLDERS", "INBOX"),
            timeout=read.duration("EMAIL_TIMEOUT", DEFAULT_TIMEOUT, unit="seconds"),
            allowed_extensions=settings.env_list("EMAIL_ALLOWED_EXTENSIONS") or None,
            min_size=int(number("EMAIL_MIN_ATTACHMENT_BYTES", 0, "a number of bytes")),
            max_attachment_mb=max_mb or None,
            include_inline=settings.env_bool("EMAIL_INCLUDE_INLINE", False),
            parse_in_pool=settings.env_bool("EMAIL_PARSE_IN_POOL", False),
            batch_size=int(number("EMAIL_BATCH_SIZE", DEFAULT_BATCH_SIZE, "a number of messages")),
            batch_bytes=int(batch_mb * 1024 * 1024),
            hints=hints, account_name=settings.env("EMAIL_ACCOUNT_NAME") or None,
            accounts=load_accounts(accounts_file) if accounts_file else (),
            settings=settings, **kwargs,
        )

    def default_credentials(self) -> Mapping[str, Any]:
        """EMAIL_USER / EMAIL_PASSWORD for the default account; {} when there is none."""
        if self.default_account is None:
            return {}
        return CredentialsManager(self.settings).get_email_credentials()

    def _resolve_accounts(self, credentials: Mapping[str, Any] | None) -> None:
        """The accounts of this run (the default one gets its login from ``credentials``) and the
        scope of each of their folders."""
        accounts = list(self.extra_accounts)
        if self.default_account is not None:
            user = str((credentials or {}).get("email") or (credentials or {}).get("user") or
                       self.settings.env("EMAIL_USER"))
            accounts.insert(0, self.default_account.with_user(user))
        self._accounts = accounts
        self._scopes = {}
        for account in accounts:
            for folder in account.folders:
                self._scopes[self.scope_name(account, folder)] = (account, folder)

    @staticmethod
    def scope_name(account: EmailAccount, folder: str) -> str:
        """``<user>@<host>/<folder>``: short, stable, and unique across accounts."""
        return f"{account.user}@{account.host}/{folder}"

    # -- connection -------------------------------------------------------------------------------

    @contextmanager
    def connect(self, credentials: Mapping[str, Any]) -> Iterator[None]:
        """Keeps the credentials for the run; accounts log in when their first scope runs, and every
        session logs out when the run ends."""
        self.credentials = credentials
        self._resolve_accounts(credentials)
        self._passwords = {}
        if self.default_account is not None:
            password = str(credentials.get("password") or "")
            register_secret(password)
            self._passwords[self._key(self._accounts[0])] = password
        try:
            yield
        finally:
            for session in self._sessions.values():
                session.close()
            self._sessions = {}
            self._passwords = {}

    @staticmethod
    def _key(account: EmailAccount) -> str:
        return f"{account.user}@{account.host}:{account.effective_port}"

    def _password(self, account: EmailAccount) -> str:
        key = self._key(account)
        if key in self._passwords:
            password = self._passwords[key]
        else:
            password = self.settings.env(account.password_env)
            if not password:
                raise ConfigError(f"the password of email account {account.label} is not set: "
                                  f"set the environment variable {account.password_env}")
            register_secret(password)
        if not account.user or not password:
            raise ConfigError("email credentials need an email (login) and a password "
                              "(EMAIL_USER, EMAIL_PASSWORD)")
        return password

    def logins(self, credentials: Mapping[str, Any]) -> list[tuple[EmailAccount, str]]:
        """Every account with its password (the default account's login and password from
        ``credentials``), for a caller that opens its own sessions (the email watcher); ConfigError
        naming the variable when a password is missing."""
        with self.connect(credentials):
            return [(account, self._password(account)) for account in self._accounts]

    def _session(self, account: EmailAccount) -> ImapSession:
        key = self._key(account)
        session = self._sessions.get(key)
        if session is None:
            session = ImapSession(account, self._password(account), timeout=self.timeout)
            self._sessions[key] = session
        return session

    def _drop_session(self, account: EmailAccount) -> None:
        session = self._sessions.pop(self._key(account), None)
        if session is not None:
            session.close(logout=False)

    def scopes(self) -> list[str]:
        return list(self._scopes)

    # -- listing ----------------------------------------------------------------------------------

    def list_changes(self, scope: str, cursor: Any) -> Iterator[Item | ItemFailure | Checkpoint]:
        if scope not in self._scopes:
            raise ConfigError(f"unknown email scope {scope!r}; configured: {', '.join(self._scopes) or 'none'}")
        account, folder = self._scopes[scope]
        try:
            yield from self._folder_changes(account, folder, cursor)
        except TransientError:
            self._drop_session(account)  # a dropped connection is not reused by the next scope
            raise

    def _folder_changes(self, account: EmailAccount, folder: str,
                        cursor: Any) -> Iterator[Item | ItemFailure | Checkpoint]:
        session = self._session(account)
        selected = session.examine(folder)
        uidvalidity = int(selected.get(b"UIDVALIDITY") or 0)
        uidnext = int(selected.get(b"UIDNEXT") or 0)
        last_uid = 0
        resume_uid, parts_done = 0, 0
        if isinstance(cursor, dict) and cursor.get("uidvalidity") == uidvalidity:
            last_uid = int(cursor.get("last_uid") or 0)
            if cursor.get("uid"):  # the last run stopped inside a message
                resume_uid, parts_done = int(cursor["uid"]), int(cursor.get("parts_done") or 0)
        elif cursor:
            log.warning("imap_uidvalidity_changed", account=account.label, folder=folder,
                        old=(cursor or {}).get("uidvalidity") if isinstance(cursor, dict) else None,
                        new=uidvalidity)
        start_cursor = {"uidvalidity": uidvalidity, "last_uid": last_uid}
        if uidnext and uidnext <= last_uid + 1:
            # Nothing above the cursor: EXAMINE was the whole conversation.
            if cursor and cursor != start_cursor:
                yield Checkpoint(start_cursor)  # an emptied, rebuilt folder: remember its UIDVALIDITY
            return
        with classified(account, f"searching {folder}"):
            found = session.client.search(["UID", f"{last_uid + 1}:*"])
        # "n:*" always matches the highest UID, even below n.
        uids = sorted(int(u) for u in found if int(u) > last_uid)
        if not uids:
            if cursor != start_cursor:
                yield Checkpoint(start_cursor)
            return
        log.info("imap_new_messages", account=account.label, folder=folder, count=len(uids),
                 uidvalidity=uidvalidity, after_uid=last_uid)
        # The next batch is fetched in a thread while the pipeline hashes, stores and records this one
        # (its fsyncs and Redis round trips release the GIL); the pool's children parse ahead of it.
        prefetch = Prefetch(lambda: self._read_batches(account, session, folder, uidvalidity, uids))
        try:
            for batch, fetched in prefetch:
                for message in self._parsed(account, folder, fetched):
                    done = parts_done if message.uid == resume_uid else 0
                    if done:
                        log.info("imap_message_resumed", account=account.label, folder=folder, uid=message.uid,
                                 parts_done=done)
                    yield from self._changes(account, folder, uidvalidity, message, done)
                yield Checkpoint({"uidvalidity": uidvalidity, "last_uid": batch[-1]})
        finally:
            if not prefetch.close(timeout=self.timeout + 5):
                self._drop_session(account)  # a fetch still hangs: the connection cannot be reused

    def _batches(self, account: EmailAccount, session: ImapSession, folder: str,
                 uids: list[int]) -> Iterator[list[int]]:
        """Groups of UIDs by count and by size, in UID order."""
        batch: list[int] = []
        batch_bytes = 0
        for start in range(0, len(uids), SIZE_FETCH_CHUNK):
            chunk = uids[start:start + SIZE_FETCH_CHUNK]
            with classified(account, f"reading message sizes in {folder}"):
                sizes = session.client.fetch(chunk, ["RFC822.SIZE"])
            for uid in chunk:
                size = int(sizes.get(uid, {}).get(b"RFC822.SIZE") or 0)
                if batch and (len(batch) >= self.batch_size or batch_bytes + size > self.batch_bytes):
                    yield batch
                    batch, batch_bytes = [], 0
                batch.append(uid)
                batch_bytes += size
        if batch:
            yield batch

    def _read_batches(self, account: EmailAccount, session: ImapSession, folder: str, uidvalidity: int,
                      uids: list[int]) -> Iterator[tuple[list[int], list[tuple[int, bytes | str]]]]:
        """(UIDs, fetched messages) per batch; runs in the prefetch thread, which alone uses the
        session until it is closed."""
        for batch in self._batches(account, session, folder, uids):
            yield batch, self._read_batch(account, session, folder, uidvalidity, batch)

    def _read_batch(self, account: EmailAccount, session: ImapSession, folder: str, uidvalidity: int,
                    batch: list[int]) -> list[tuple[int, bytes | str]]:
        """(UID, raw message) for each message of ``batch`` still on the server, or (UID, why it has no
        content), in UID order."""
        with classified(account, f"fetching {len(batch)} messages from {folder}"):
            fetched = session.client.fetch(batch, ["BODY.PEEK[]"])
        messages: list[tuple[int, bytes | str]] = []
        for uid in batch:
            data = fetched.pop(uid, None)
            if data is None:
                # Expunged between SEARCH and FETCH: there is nothing left to read.
                log.info("imap_message_gone", account=account.label, folder=folder, uid=uid)
                continue
            raw = data.get(b"BODY[]")
            messages.append((uid, raw if isinstance(raw, bytes) and raw else "the server returned no message body"))
        return messages

    def _parsed(self, account: EmailAccount, folder: str,
                fetched: list[tuple[int, bytes | str]]) -> Iterator[FetchedMessage]:
        """The messages of one batch parsed, in UID order, lazily: the pool's children parse the next
        chunks while the pipeline works on this one (base/pool.py; the round trips are made from the
        pipeline's own thread, so they never wait for the GIL behind it). ``fetched`` is emptied,
        and each chunk's raw bytes are freed once parsed."""
        runs: list[list[tuple[int, bytes]] | tuple[int, str]] = []
        size = 0
        for uid, content in fetched:
            if isinstance(content, str):
                runs.append((uid, content))  # ends the chunk: messages stay in UID order
                continue
            last = runs[-1] if runs else None
            if (not isinstance(last, list) or len(last) >= PARSE_CHUNK_MESSAGES
                    or size + len(content) > PARSE_CHUNK_BYTES):
                runs.append([])
                size = 0
            chunk = runs[-1]
            assert isinstance(chunk, list)
            chunk.append((uid, content))
            size += len(content)
        fetched.clear()
        outcomes = self._parse([run for run in runs if isinstance(run, list)])
        try:
            for run in runs:
                if isinstance(run, tuple):
                    yield FetchedMessage(run[0], None, run[1])
                    continue
                for _ in range(len(run)):
                    uid, parsed = next(outcomes)
                    if isinstance(parsed, str):
                        yield FetchedMessage(uid, None, parsed)
                        continue
                    if parsed.defects:
                        log.info("mime_defects", account=account.label, folder=folder, uid=uid,
                                 defects=parsed.defects[:10])
                    yield FetchedMessage(uid, parsed)
        finally:
            outcomes.close()

    def _parse(self, chunks: list[list[tuple[int, bytes]]]) -> Generator[tuple[int, ParsedMessage | str], None, None]:
        """Each (UID, raw message) of ``chunks`` parsed in the process pool, so parsing runs beside the
        pipeline instead of taking turns with it for the GIL (with ``parse_in_pool``;
        otherwise here, the default); a message that cannot be parsed comes back as the reason why. One chunk goes
        to a child per round trip; a chunk whose child crashed, ran out of time or of memory is parsed
        again message by message, so only the message at fault is dead-lettered."""
        parse = functools.partial(parse_messages, include_inline=self.include_inline, max_parts=self.max_parts,
                                  parse=self.parse)
        if not self.parse_in_pool:
            for chunk in chunks:
                yield from zip((uid for uid, _ in chunk), parse([raw for _, raw in chunk]), strict=True)
                chunk.clear()
            return
        pool = pool_for(self.settings)
        outcomes = pool.map(parse, ([raw for _, raw in chunk] for chunk in chunks))
        try:
            for chunk, outcome in zip(chunks, outcomes, strict=True):
                if not isinstance(outcome, ConnectorError):
                    yield from zip((uid for uid, _ in chunk), outcome, strict=True)
                elif len(chunk) == 1:
                    yield chunk[0][0], f"unreadable message ({outcome})"
                else:
                    log.warning("mime_parse_chunk_failed", messages=len(chunk), error=str(outcome))
                    for uid, raw in chunk:
                        try:
                            (parsed,) = pool.run(parse, [raw])
                        except ConnectorError as exc:
                            parsed = f"unreadable message ({exc})"
                        yield uid, parsed
                chunk.clear()
        finally:
            outcomes.close()

    def _changes(self, account: EmailAccount, folder: str, uidvalidity: int, message: FetchedMessage,
                 parts_done: int = 0) -> Iterator[Item | ItemFailure]:
        """The items of one message after its first ``parts_done`` attachments, each carrying the
        cursor that is safe once it is done (module docstring). What all of a message's items
        share (text, hints, headers) is built once per message, not once per item."""
        uid = message.uid
        cursor_after = {"uidvalidity": uidvalidity, "last_uid": uid}
        if message.parsed is None:
            yield ItemFailure(f"{self.scope_name(account, folder)}/{uidvalidity}/{uid}",
                              f"UID {uid}: {message.problem}", version=str(uid),
                              metadata={"folder": folder, "uid": uid}, cursor_after=cursor_after)
            return
        parsed = message.parsed
        attachments = parsed.attachments
        if parts_done >= len(attachments):
            return  # all done before (the batch's checkpoint moves the cursor past it)
        summary = parsed.summary
        names = " ".join(a.filename for a in attachments if a.filename)
        shared = _MessageFacts(
            text=merged_text([summary.subject, summary.body_text, names]),
            hints={k: v for k, v in {"mailbox": account.user, "sender": summary.from_address,
                                     "sender_domain": summary.sender_domain, **dict(account.hints)}.items() if v},
            metadata={"message_id": summary.message_id, "from": summary.from_, "to": summary.to, "cc": summary.cc,
                      "date": summary.date, "subject": summary.subject, "folder": folder, "uid": uid,
                      "uidvalidity": uidvalidity, "mailbox": account.user},
        )
        last = len(attachments) - 1
        for index in range(parts_done, len(attachments)):
            after = cursor_after if index == last else {
                "uidvalidity": uidvalidity, "last_uid": uid - 1, "uid": uid, "parts_done": index + 1}
            yield self._item(account, folder, uidvalidity, uid, parsed, attachments[index], shared, after)

    def _item(self, account: EmailAccount, folder: str, uidvalidity: int, uid: int, parsed: ParsedMessage,
              attachment: Attachment, shared: _MessageFacts, cursor_after: dict[str, int]) -> Item:
        summary = parsed.summary
        filename = attachment.filename or self._fallback_name(attachment)
        metadata: dict[str, Any] = {**shared.metadata, "part_path": attachment.part_path}
        if attachment.origin:
            metadata["origin"] = list(attachment.origin)
        if attachment.defects:
            metadata["defects"] = list(attachment.defects)
        if not attachment.filename:
            metadata["unnamed"] = True
        return Item(
            source_id=f"{self.scope_name(account, folder)}/{uidvalidity}/{uid}/{attachment.part_path}",
            version=str(uid),
            filename=filename,
            open=attachment.open,
            mime_type=attachment.mime_type,
            size=attachment.size,
            title=summary.subject or filename,
            text=shared.text,
            author=summary.from_,
            created_at=summary.date_iso,
            source_url=self._imap_url(account, folder, uidvalidity, uid, attachment.part_path),
            metadata=metadata,
            hints=dict(shared.hints),
            cursor_after=cursor_after,
        )

    @staticmethod
    def _fallback_name(attachment: Attachment) -> str:
        extension = mimetypes.guess_extension(attachment.mime_type, strict=False) or ".bin"
        return f"attachment-{attachment.part_path}{extension}"

    @staticmethod
    def _imap_url(account: EmailAccount, folder: str, uidvalidity: int, uid: int, part_path: str) -> str:
        """RFC 5092 IMAP URL of the MIME section (the container's, for files unpacked from one)."""
        section = part_path.split(".tnef", 1)[0].split(".uu", 1)[0]
        return (f"imap://{quote(account.user, safe='')}@{account.host}:{account.effective_port}/"
                f"{quote(folder, safe='/')};UIDVALIDITY={uidvalidity}/;UID={uid}/;SECTION={section}")

    # -- filters through the pipeline's skip mechanism -------------------------------------------

    def skip_reason(self, filename: str, mime_type: str, size: int | None, hints: Mapping[str, str]) -> str | None:
        """The pipeline's reasons (global size limit, content rules), then this connector's filters."""
        reason = super().skip_reason(filename, mime_type, size, hints)
        if reason:
            return reason
        if self.allowed_extensions and _extension(filename) not in self.allowed_extensions:
            return f"extension-not-allowed:{_extension(filename) or 'none'}"
        if size is not None:
            if size == 0:
                return "empty"
            if size < self.min_size:
                return f"too-small:{size}<{self.min_size}"
        return None

    # -- health -----------------------------------------------------------------------------------

    def health_check(self, credentials: Mapping[str, Any] | None = None) -> HealthResult:
        """Logs in to every account, EXAMINEs each folder, logs out; never raises for classified errors."""
        try:
            creds = credentials if credentials is not None else self.default_credentials()
        except ConfigError as exc:
            return HealthResult(False, exc.state, str(exc))
        results: list[tuple[str, str]] = []
        with self.connect(creds):
            for account in self._accounts:
                try:
                    session = self._session(account)
                    counts = []
                    for folder in account.folders:
                        selected = session.examine(folder)
                        counts.append(f"{folder} {int(selected.get(b'EXISTS') or 0)} messages")
                    results.append((HealthState.HEALTHY, f"{account.label}: logged in; {', '.join(counts)}"))
                except ThrottledError as exc:
                    results.append((HealthState.THROTTLED, f"{account.label}: {exc}"))
                except AuthError as exc:
                    results.append((HealthState.AUTH_FAILED, f"{account.label}: {exc}"))
                except ConfigError as exc:
                    results.append((HealthState.CONFIG_ERROR, f"{account.label}: {exc}"))
                except TransientError as exc:
                    results.append((HealthState.UNREACHABLE, f"{account.label}: {exc}"))
        state = HealthState.worst((s for s, _ in results), default=HealthState.CONFIG_ERROR)
        detail = "; ".join(d for _, d in results) or "no email account configured"
        return HealthResult(state == HealthState.HEALTHY, state, detail)
