"""A small IMAP reader and writer over one logged-in connection, for connections that wait for hours.

imaplib reads through a buffered file that a socket timeout leaves unusable, and imapclient's
``idle_check`` polls the raw socket, so bytes already decrypted by TLS or buffered in that file
wait unseen until the server writes again. A watcher waits on its connection with timeouts all
day, so it reads the socket itself: ``ImapWire`` keeps its own buffer, reads the socket only when
that buffer holds no complete response, and a timeout loses nothing (the TLS socket keeps a
partial record, our buffer a partial response).

A response is one line, or several when it carries literals (``{n}`` then CRLF and n bytes, RFC
3501 4.3; also ``{n+}``, RFC 7888): ``Response.text`` keeps the ``{n}`` markers and
``Response.literals`` holds the bytes, in order. ``tokens()`` parses the parts a watcher reads
(atoms, numbers, quoted strings, literals, parenthesised and bracketed lists).

The connection comes from ``connectors.email_imap.ImapSession`` (TLS verified, STARTTLS, login,
failures classified), so the password goes where the email connector sends it and nowhere else.
"""

from __future__ import annotations

import itertools
import re
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Union

from imapclient import imap_utf7

from connectors.email_imap import ImapSession
from utils.errors import TransientError

#: A response larger than this (line and literals together) ends the connection: nothing a watcher
#: asks for comes near it, so it is a broken or hostile server.
MAX_RESPONSE_BYTES = 1024 * 1024
#: Bytes asked of the socket per read.
READ_CHUNK = 64 * 1024
#: Seconds a command may take to be written before the connection counts as dead.
WRITE_TIMEOUT = 30.0
#: TCP keepalive: probes after this many idle seconds, every KEEPALIVE_INTERVAL, KEEPALIVE_PROBES of
#: them; a peer gone without a word (a cut cable, a NAT that forgot us) fails the read in about two
#: minutes instead of the system's two hours.
KEEPALIVE_IDLE = 60  # seconds
KEEPALIVE_INTERVAL = 20  # seconds
KEEPALIVE_PROBES = 3

_LITERAL = re.compile(rb"\{(\d{1,9})\+?\}$")

Token = Union[bytes, "list[Token]"]


class ConnectionDropped(TransientError):
    """The server closed the connection, or the socket failed."""


class ProtocolError(TransientError):
    """The server sent something that is not IMAP (or far more than asked for)."""


@dataclass(frozen=True)
class Response:
    """One complete server response.

    tag: ``*`` (untagged), ``+`` (continuation) or the tag of the command it completes.
    text: the rest of the response, literals replaced by their ``{n}`` markers.
    literals: the bytes of each literal, in order.
    """

    tag: str
    text: bytes
    literals: tuple[bytes, ...] = ()

    def tokens(self) -> list[Token]:
        """``text`` parsed into atoms, strings, literals and nested lists (``(...)`` and ``[...]``);
        ProtocolError when it does not parse."""
        return _Tokenizer(self.text, self.literals).parse()


class _Tokenizer:
    def __init__(self, text: bytes, literals: tuple[bytes, ...]) -> None:
        self.text, self.pos = text, 0
        self.literals = iter(literals)

    def parse(self) -> list[Token]:
        tokens = self._sequence(None)
        if self.pos < len(self.text):
            raise ProtocolError(f"unbalanced response: {self.text[:80]!r}")
        return tokens

    def _sequence(self, closer: bytes | None) -> list[Token]:
        out: list[Token] = []
        text = self.text
        while self.pos < len(text):
            char = text[self.pos:self.pos + 1]
            if char == b" ":
                self.pos += 1
            elif char in (b"(", b"["):
                self.pos += 1
                out.append(self._sequence(b")" if char == b"(" else b"]"))
            elif char in (b")", b"]"):
                if char != closer:
                    raise ProtocolError(f"unbalanced response: {text[:80]!r}")
                self.pos += 1
                return out
            elif char == b'"':
                out.append(self._quoted())
            elif char == b"{" and (match := re.match(rb"\{(\d{1,9})\+?\}", text[self.pos:])):
                self.pos += match.end()
                literal = next(self.literals, None)
                if literal is None or len(literal) != int(match.group(1)):
                    raise ProtocolError("a literal marker without its literal")
                out.append(literal)
            else:
                end = self.pos
                while end < len(text) and text[end:end + 1] not in (b" ", b"(", b")", b"[", b"]", b'"'):
                    end += 1
                out.append(text[self.pos:end])
                self.pos = end
        if closer is not None:
            raise ProtocolError(f"unbalanced response: {text[:80]!r}")
        return out

    def _quoted(self) -> bytes:
        text, out = self.text, bytearray()
        self.pos += 1
        while self.pos < len(text):
            char = text[self.pos:self.pos + 1]
            if char == b"\\" and self.pos + 1 < len(text):
                out += text[self.pos + 1:self.pos + 2]
                self.pos += 2
            elif char == b'"':
                self.pos += 1
                return bytes(out)
            else:
                out += char
                self.pos += 1
        raise ProtocolError(f"unterminated quoted string: {text[:80]!r}")


def quoted_mailbox(name: str) -> bytes:
    """``name`` as an IMAP quoted string, in modified UTF-7 (RFC 3501 5.1.3)."""
    encoded = imap_utf7.encode(name)
    return b'"' + encoded.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def mailbox_name(token: Token) -> str:
    """A mailbox name token (atom, quoted string or literal) decoded from modified UTF-7."""
    if not isinstance(token, bytes):
        raise ProtocolError("a mailbox name that is a list")
    return str(imap_utf7.decode(token))


class ImapWire:
    """Commands out and responses in on one connection; one thread uses it (``close`` may come from
    another, and makes a blocked ``read`` raise ConnectionDropped).

    sock: the connected, logged-in socket (TLS or not).
    leftover: bytes already read from it by whoever logged in, not yet handled.
    """

    def __init__(self, sock: socket.socket, *, leftover: bytes = b"", label: str = "") -> None:
        self._sock = sock
        self._buffer = bytearray(leftover)
        self._tags = itertools.count(1)
        self.label = label
        self.closed = False

    @classmethod
    def take_over(cls, session: ImapSession) -> ImapWire:
        """The connection of a logged-in ``session``; the session's own client must not be used
        again (``session.close(logout=False)`` still closes the socket)."""
        imap = session.client._imap
        sock: socket.socket = imap.sock
        leftover = b""
        sock.settimeout(0.0)
        try:
            # Whatever imaplib's buffered file read past the login response (normally nothing): peek
            # returns what it holds without a read, or tries one read that cannot wait.
            leftover = bytes(imap.file.peek(1))
        except (OSError, ValueError):
            leftover = b""
        _keepalive(sock)
        return cls(sock, leftover=leftover, label=session.account.label)

    # -- writing ----------------------------------------------------------------------------------

    def send(self, command: bytes) -> str:
        """Sends ``TAG command``; returns the tag."""
        tag = f"W{next(self._tags)}"
        self.send_raw(tag.encode() + b" " + command + b"\r\n")
        return tag

    def send_raw(self, data: bytes) -> None:
        """Sends ``data`` as it is (``DONE\\r\\n`` ends an IDLE)."""
        try:
            self._sock.settimeout(WRITE_TIMEOUT)
            self._sock.sendall(data)
        except (OSError, ssl.SSLError) as exc:
            raise ConnectionDropped(f"writing to the IMAP server failed: {exc}") from exc

    # -- reading ----------------------------------------------------------------------------------

    def read(self, timeout: float) -> Response | None:
        """The next complete response, waiting at most ``timeout`` seconds; None when none came."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            response = self._complete()
            if response is not None:
                return response
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._fill(remaining)

    def _fill(self, timeout: float) -> None:
        if self.closed:
            raise ConnectionDropped("the connection was closed")
        try:
            self._sock.settimeout(max(timeout, 0.001))
            chunk = self._sock.recv(READ_CHUNK)
        except TimeoutError:
            return
        except ssl.SSLWantReadError:
            return
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConnectionDropped(f"reading from the IMAP server failed: {exc}") from exc
        if not chunk:
            raise ConnectionDropped("the IMAP server closed the connection")
        self._buffer += chunk
        if len(self._buffer) > MAX_RESPONSE_BYTES:
            raise ProtocolError(f"a response over {MAX_RESPONSE_BYTES} bytes")

    def _complete(self) -> Response | None:
        """Takes one complete response off the buffer, or None when the buffer holds only part of one."""
        buffer = self._buffer
        pos = 0
        text = bytearray()
        literals: list[bytes] = []
        while True:
            end = buffer.find(b"\r\n", pos)
            if end < 0:
                return None
            segment = bytes(buffer[pos:end])
            text += segment
            match = _LITERAL.search(segment)
            if match is None:
                del buffer[:end + 2]
                break
            size = int(match.group(1))
            if size > MAX_RESPONSE_BYTES:
                raise ProtocolError(f"a literal of {size} bytes")
            if len(buffer) < end + 2 + size:
                return None
            literals.append(bytes(buffer[end + 2:end + 2 + size]))
            pos = end + 2 + size
        tag, _, rest = bytes(text).partition(b" ")
        if not tag:
            raise ProtocolError(f"a response without a tag: {bytes(text)[:80]!r}")
        return Response(tag.decode("ascii", "replace"), rest, tuple(literals))

    # -- commands ---------------------------------------------------------------------------------

    def command(self, command: bytes, *, timeout: float,
                untagged: list[Response] | None = None) -> Response:
        """Sends ``command`` and reads until its tagged response, which it returns whatever its
        status; the untagged responses read meanwhile are appended to ``untagged``. A BYE or no
        answer within ``timeout`` seconds raises ConnectionDropped."""
        tag = self.send(command)
        deadline = time.monotonic() + timeout
        while True:
            response = self.read(deadline - time.monotonic())
            if response is None:
                raise ConnectionDropped(f"no answer to {command.split(b' ', 1)[0].decode()} within {timeout:.0f} s")
            if response.tag == tag:
                return response
            if is_bye(response):
                raise ConnectionDropped(f"the server ended the session: {response.text[:200].decode(errors='replace')}")
            if untagged is not None and response.tag == "*":
                untagged.append(response)

    def close(self) -> None:
        """Shuts the socket down (a ``read`` blocked in another thread returns at once)."""
        self.closed = True
        try:
            socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
        except OSError:
            pass


def _keepalive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                          ("TCP_KEEPCNT", KEEPALIVE_PROBES)):
        if hasattr(socket, option):  # Linux; elsewhere the system's defaults apply
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def is_bye(response: Response) -> bool:
    return response.tag == "*" and response.text[:3].upper() == b"BYE"


def status_of(response: Response) -> bytes:
    """OK, NO or BAD of a tagged response (upper case)."""
    return response.text.split(b" ", 1)[0].upper()
