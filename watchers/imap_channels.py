"""The three ways one IMAP connection of a watcher notices new mail: NOTIFY, IDLE and polling.

- ``NotifyChannel`` (RFC 5465): ``NOTIFY SET STATUS (mailboxes (f1 f2 ...) (MessageNew
  MessageExpunge))`` on a connection with no mailbox selected. The server answers at once with a
  STATUS of each folder (``STATUS`` indicator) and then sends a STATUS whenever a message arrives in
  one (or leaves it: RFC 5465 5.2 requires both events together). A STATUS whose UIDNEXT grew, or
  whose UIDVALIDITY changed, is new mail. A NOOP every ``keepalive`` seconds keeps the session (and
  any NAT on the way) alive and proves the server still answers. ``* OK [NOTIFICATIONOVERFLOW]``
  means the server stopped notifying: the channel fails, so the watcher reconnects and compares
  every folder with its cursor again. A folder that does not exist yet is named all the same:
  Dovecot watches a NOTIFY mailbox by its name, so mail in a folder created later is seen (a server
  that does not leaves it to the tick until the next reconnect).
- ``IdleChannel`` (RFC 2177): one folder EXAMINEd (read-only), then IDLE; ``* n EXISTS`` above the
  known count is new mail (``* n EXPUNGE`` lowers the count). IDLE is ended (``DONE``) and issued
  again every ``keepalive`` seconds, well before the 29 minutes after which a server may drop it.
- ``PollChannel``: ``STATUS folder (UIDNEXT UIDVALIDITY)`` for each of its folders every
  ``poll_seconds``.

Every channel reports what it sees to a ``FolderWatch`` (the account's watcher): ``sighting``
for a folder's (UIDVALIDITY, UIDNEXT), ``arrived`` for mail known to be new. The first sighting of
a folder on a connection is compared with the folder's cursor, so mail that arrived while no
connection was up is caught at once. A channel raises a TransientError when its connection fails;
``close()`` (from another thread) ends ``run()`` quietly.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Protocol

from utils.errors import ConfigError, TransientError
from utils.logging import get_logger
from watchers.imap_wire import (
    ConnectionDropped,
    ImapWire,
    ProtocolError,
    Response,
    Token,
    is_bye,
    mailbox_name,
    quoted_mailbox,
    status_of,
)

log = get_logger(__name__)

#: The reasons given to ``request_sync`` by each mode.
NOTIFY, IDLE, POLL = "notify", "idle", "poll"
REASONS = {NOTIFY: "imap_notify", IDLE: "imap_idle", POLL: "imap_poll"}

_NUMBERED = re.compile(rb"^(\d+) (EXISTS|EXPUNGE)\b", re.IGNORECASE)


class FolderWatch(Protocol):
    """What a channel reports to (the account's watcher)."""

    def sighting(self, folder: str, uidvalidity: int | None, uidnext: int | None, *, reason: str) -> None:
        """A folder's UIDVALIDITY and UIDNEXT as the server just gave them (None: not given)."""

    def arrived(self, folder: str, *, reason: str) -> None:
        """New mail is known to be in ``folder``."""


def parse_status(response: Response) -> tuple[str, dict[str, int]] | None:
    """(mailbox, {item: number}) of an untagged ``STATUS`` response; None for any other response."""
    if response.tag != "*" or response.text[:7].upper() != b"STATUS ":
        return None
    tokens = response.tokens()
    if len(tokens) < 3 or not isinstance(tokens[2], list):
        raise ProtocolError(f"a STATUS response without its list: {response.text[:120]!r}")
    items: list[Token] = tokens[2]
    values: dict[str, int] = {}
    for name, value in zip(items[::2], items[1::2], strict=False):
        if isinstance(name, bytes) and isinstance(value, bytes) and value.isdigit():
            values[name.decode("ascii", "replace").upper()] = int(value)
    return mailbox_name(tokens[1]), values


def response_code(response: Response) -> tuple[str, int | None] | None:
    """(code, number) of ``* OK [CODE n] ...`` (number None when the code has none); else None."""
    if response.tag != "*" or response.text[:4].upper() != b"OK [":
        return None
    end = response.text.find(b"]")
    if end < 0:
        return None
    parts = response.text[4:end].split(b" ")
    number = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return parts[0].decode("ascii", "replace").upper(), number


def _check(response: Response, what: str) -> None:
    status = status_of(response)
    if status != b"OK":
        text = response.text[:200].decode(errors="replace")
        raise TransientError(f"the IMAP server answered {what} with {text}")


class Channel:
    """One connection watching ``folders``; ``start()`` sets it up (in the caller's thread), ``run()``
    waits for changes until the connection fails (raises) or ``close()`` is called (returns)."""

    kind = ""

    def __init__(self, wire: ImapWire, folders: Sequence[str], watch: FolderWatch, *, timeout: float,
                 keepalive: float) -> None:
        self.wire = wire
        self.folders = list(folders)
        self.watch = watch
        self.timeout = timeout
        self.keepalive = keepalive
        self.reason = REASONS[self.kind]

    def start(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        try:
            self._run()
        except ConnectionDropped:
            if self.wire.closed:
                return  # close() asked for it
            raise

    def _run(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.wire.close()

    def _folder(self, name: str) -> str | None:
        """The configured folder a server-given mailbox name is (INBOX in any case is INBOX)."""
        for folder in self.folders:
            if folder == name or (folder.upper() == "INBOX" and name.upper() == "INBOX"):
                return folder
        return None

    def _common(self, response: Response) -> None:
        """What any channel does with a response it did not ask for."""
        if is_bye(response):
            raise ConnectionDropped(f"the server ended the session: {response.text[:200].decode(errors='replace')}")


class NotifyChannel(Channel):
    """All of an account's folders on one connection, by NOTIFY."""

    kind = NOTIFY

    def start(self) -> None:
        mailboxes = b" ".join(quoted_mailbox(f) for f in self.folders)
        untagged: list[Response] = []
        answer = self.wire.command(b"NOTIFY SET STATUS (mailboxes (" + mailboxes + b") (MessageNew MessageExpunge))",
                                   timeout=self.timeout, untagged=untagged)
        if status_of(answer) != b"OK":
            # A folder that does not exist, or a server that refuses the filter: a setting to fix.
            raise ConfigError(f"NOTIFY was refused: {answer.text[:200].decode(errors='replace')}")
        for response in untagged:
            self._handle(response)

    def _run(self) -> None:
        next_noop = time.monotonic() + self.keepalive
        while True:
            response = self.wire.read(next_noop - time.monotonic())
            if response is None:
                untagged: list[Response] = []
                _check(self.wire.command(b"NOOP", timeout=self.timeout, untagged=untagged), "NOOP")
                for seen in untagged:
                    self._handle(seen)
                next_noop = time.monotonic() + self.keepalive
                continue
            self._handle(response)

    def _handle(self, response: Response) -> None:
        self._common(response)
        code = response_code(response)
        if code is not None and code[0] == "NOTIFICATIONOVERFLOW":
            raise ConnectionDropped("the server stopped notifying (NOTIFICATIONOVERFLOW)")
        status = parse_status(response)
        if status is None:
            return
        folder = self._folder(status[0])
        if folder is None:
            log.debug("imap_notify_other_mailbox", account=self.wire.label, mailbox=status[0])
            return
        values = status[1]
        self.watch.sighting(folder, values.get("UIDVALIDITY"), values.get("UIDNEXT"), reason=self.reason)


class IdleChannel(Channel):
    """One folder, by IDLE, re-issued every ``keepalive`` seconds."""

    kind = IDLE

    def __init__(self, wire: ImapWire, folders: Sequence[str], watch: FolderWatch, *, timeout: float,
                 keepalive: float) -> None:
        if len(folders) != 1:
            raise ValueError("an IDLE channel watches exactly one folder")
        super().__init__(wire, folders, watch, timeout=timeout, keepalive=keepalive)
        self.exists = 0
        #: IDLE commands issued on this connection (the first and each re-issue).
        self.idles = 0
        self._tag = ""

    def start(self) -> None:
        folder = self.folders[0]
        untagged: list[Response] = []
        answer = self.wire.command(b"EXAMINE " + quoted_mailbox(folder), timeout=self.timeout, untagged=untagged)
        if status_of(answer) != b"OK":
            raise ConfigError(f"folder {folder!r} cannot be opened: {answer.text[:200].decode(errors='replace')}")
        uidvalidity = uidnext = None
        for response in untagged:
            code = response_code(response)
            if code is not None and code[0] == "UIDVALIDITY":
                uidvalidity = code[1]
            elif code is not None and code[0] == "UIDNEXT":
                uidnext = code[1]
            match = _NUMBERED.match(response.text) if response.tag == "*" else None
            if match and match.group(2).upper() == b"EXISTS":
                self.exists = int(match.group(1))
        self.watch.sighting(folder, uidvalidity, uidnext, reason=self.reason)
        self._idle()

    def _idle(self) -> None:
        tag = self.wire.send(b"IDLE")
        deadline = time.monotonic() + self.timeout
        while True:
            response = self.wire.read(deadline - time.monotonic())
            if response is None:
                raise ConnectionDropped(f"no answer to IDLE within {self.timeout:.0f} s")
            if response.tag == "+":
                self.idles += 1
                self._tag = tag
                return
            if response.tag == tag:
                raise TransientError(f"IDLE was refused: {response.text[:200].decode(errors='replace')}")
            self._handle(response)

    def _done(self) -> None:
        """Ends the IDLE and reads up to its tagged answer (handling what came meanwhile)."""
        self.wire.send_raw(b"DONE\r\n")
        deadline = time.monotonic() + self.timeout
        while True:
            response = self.wire.read(deadline - time.monotonic())
            if response is None:
                raise ConnectionDropped(f"no answer to DONE within {self.timeout:.0f} s")
            if response.tag == self._tag:
                _check(response, "IDLE")
                return
            self._handle(response)

    def _run(self) -> None:
        reissue_at = time.monotonic() + self.keepalive
        while True:
            response = self.wire.read(reissue_at - time.monotonic())
            if response is None:
                # RFC 2177: a server may drop an IDLE after 30 minutes; end it and start again.
                self._done()
                self._idle()
                reissue_at = time.monotonic() + self.keepalive
                continue
            self._handle(response)

    def _handle(self, response: Response) -> None:
        self._common(response)
        if response.tag != "*":
            return
        match = _NUMBERED.match(response.text)
        if match is None:
            return
        number, what = int(match.group(1)), match.group(2).upper()
        if what == b"EXPUNGE":
            self.exists = max(0, self.exists - 1)
            return
        grew = number > self.exists
        self.exists = number
        if grew:
            self.watch.arrived(self.folders[0], reason=self.reason)


class PollChannel(Channel):
    """Several folders by ``STATUS`` every ``poll_seconds`` on one connection."""

    kind = POLL

    def __init__(self, wire: ImapWire, folders: Sequence[str], watch: FolderWatch, *, timeout: float,
                 keepalive: float, poll_seconds: float) -> None:
        super().__init__(wire, folders, watch, timeout=timeout, keepalive=keepalive)
        self.poll_seconds = poll_seconds
        #: Polling rounds done on this connection.
        self.rounds = 0
        self._refused: set[str] = set()

    def start(self) -> None:
        self._poll()

    def _poll(self) -> None:
        for folder in self.folders:
            untagged: list[Response] = []
            answer = self.wire.command(b"STATUS " + quoted_mailbox(folder) + b" (UIDNEXT UIDVALIDITY)",
                                       timeout=self.timeout, untagged=untagged)
            if status_of(answer) != b"OK":
                # A folder that does not exist (yet): its sync reports that; keep polling it and the others.
                if folder not in self._refused:
                    self._refused.add(folder)
                    log.warning("watcher_folder_refused", account=self.wire.label, folder=folder,
                                answer=answer.text[:200].decode(errors="replace"))
                continue
            self._refused.discard(folder)
            for response in untagged:
                status = parse_status(response)
                if status is not None and self._folder(status[0]) == folder:
                    values = status[1]
                    self.watch.sighting(folder, values.get("UIDVALIDITY"), values.get("UIDNEXT"), reason=self.reason)
        self.rounds += 1

    def _run(self) -> None:
        next_poll = time.monotonic() + self.poll_seconds
        while True:
            response = self.wire.read(next_poll - time.monotonic())
            if response is None:
                self._poll()
                next_poll = time.monotonic() + self.poll_seconds
                continue
            self._common(response)
