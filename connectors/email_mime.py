"""Every attachment of a raw email, with exact names, in one fast pass over the bytes.

``iter_attachments(raw)`` walks all MIME parts: nested multiparts and forwarded messages
(message/rfc822, any depth), winmail.dat (TNEF) unpacked into its files, uuencoded files inside
text bodies and x-uuencode parts, and a message whose whole body is one attachment.
``message_summary(raw)`` gives the decoded headers and the body text; ``parse_message(raw)`` gives
both from a single pass (what the email connector uses).

Why not the stdlib parser: it is the bottleneck of an IMAP sync (feedparser line splitting and,
with policy.default, the header registry), and it misses uuencoded files, unquoted encoded-word
names, top-level attachment bodies, prefers ``filename`` over ``filename*`` and turns raw 8-bit
names into U+FFFD. This walker reads the message as bytes, splits on boundaries with
``bytes.find`` and decodes headers itself (connectors/email_mime_headers.py).

Guarantees a caller may rely on:
- it never raises on malformed input; defects are recorded (``ParsedMessage.defects``,
  ``Attachment.defects``) and the result is the best it can do;
- ``part_path`` follows IMAP section numbering ("1", "2.1.3"; a forwarded message's parts are
  numbered under its own section); files unpacked from a part get a suffix ("2.tnef1",
  "1.uu1"); paths are stable for the same bytes;
- ``filename`` is the decoded name exactly as sent ("" when the part has none), not sanitised;
- what is not an attachment is still accounted for in ``ParsedMessage.parts`` with its role.

What counts as an attachment: a part with ``Content-Disposition: attachment``; a named part;
any non-text part (an unnamed PDF is still a document). Not attachments: body text; inline
images (``include_inline=False``: images marked inline or referenced from multipart/related
HTML) ; signature parts of signed mail; delivery reports; external-body and partial fragments
(their content is not in the message); containers (multiparts, forwarded messages, winmail.dat,
embedded Outlook messages), whose contents are walked instead.
"""

from __future__ import annotations

import binascii
import html
import mimetypes
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

from connectors.email_mime_headers import (
    Params,
    decode_declared,
    decode_encoded_words,
    decode_raw_header,
    split_header_value,
)
from connectors.email_mime_legacy import decode_uuencode_body, iter_uuencoded, unpack_tnef

#: Deepest nesting of multiparts / forwarded messages we descend into; deeper parts are reported
#: as a defect (hostile input can nest thousands of levels).
MAX_DEPTH = 40
#: Body text kept for language and department detection.
BODY_TEXT_LIMIT = 20_000  # characters
#: HTML read for body text when a message has no plain text (all HTML parts together).
HTML_MARKUP_LIMIT = 4 * BODY_TEXT_LIMIT  # characters
#: Parts counted per message before the rest is reported as a defect (hostile input). Files
#: unpacked from a part (uuencoded blocks in a text body, the files of a winmail.dat) are parts
#: too, so no message yields more than MAX_PARTS attachments.
MAX_PARTS = 10_000

#: Parts that carry a signature of the message, not a document.
SIGNATURE_TYPES = frozenset({
    "application/pkcs7-signature", "application/x-pkcs7-signature", "application/pgp-signature",
})
#: Parts that report on a message (bounces, read receipts) rather than carry a document.
REPORT_TYPES = frozenset({
    "message/delivery-status", "message/global-delivery-status", "message/disposition-notification",
    "message/global-disposition-notification", "text/rfc822-headers", "message/global-headers",
    "message/feedback-report",
})
#: Parts whose content lives outside the message (a URL / FTP reference, or other fragments).
ABSENT_TYPES = frozenset({"message/external-body", "message/partial"})
#: Encapsulated messages: walked like the top-level message.
MESSAGE_TYPES = frozenset({"message/rfc822", "message/global", "message/news"})
TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})


@dataclass(frozen=True)
class Attachment:
    """One attachment: decoded name and content, where it sits, and how it was found.

    ``origin`` lists the wrappings it came out of, outermost first: "rfc822" (a forwarded
    message), "tnef" (winmail.dat), "uuencode". ``disposition`` is "attachment", "inline" or ""
    (none given).
    """

    filename: str
    mime_type: str
    part_path: str
    payload: bytes = field(repr=False)
    disposition: str = "attachment"
    origin: tuple[str, ...] = ()
    content_id: str = ""
    defects: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        """Decoded size in bytes."""
        return len(self.payload)

    def open(self) -> Iterator[bytes]:
        """The content as a stream of chunks (one chunk: the message is already in memory)."""
        if self.payload:
            yield self.payload


@dataclass(frozen=True)
class PartInfo:
    """One MIME part and what the walker made of it.

    ``role``: attachment, inline (skipped inline image), body, container, signature, report,
    absent (external-body / partial), skipped (beyond MAX_DEPTH / MAX_PARTS).
    """

    part_path: str
    mime_type: str
    role: str


@dataclass
class MessageSummary:
    """The headers a caller needs, decoded (RFC 2047, raw 8-bit), and the body text.

    ``body_text``: the text/plain parts (HTML stripped of tags when there is no plain text),
    forwarded messages included, capped at BODY_TEXT_LIMIT characters.
    """

    message_id: str = ""
    from_: str = ""
    from_address: str = ""
    to: str = ""
    cc: str = ""
    date: str = ""
    date_iso: str | None = None
    subject: str = ""
    body_text: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Message-ID": self.message_id, "From": self.from_, "To": self.to, "Cc": self.cc,
            "Date": self.date, "Subject": self.subject,
        }

    @property
    def sender_domain(self) -> str:
        return self.from_address.rpartition("@")[2].lower() if "@" in self.from_address else ""


@dataclass
class ParsedMessage:
    summary: MessageSummary
    attachments: list[Attachment]
    parts: list[PartInfo]
    defects: list[str]


def parse_message(raw: bytes, *, include_inline: bool = False, max_parts: int | None = None) -> ParsedMessage:
    """Summary, attachments and part roles of ``raw`` from one pass. Never raises on bad input.
    ``max_parts``: parts counted before the rest is a defect (default MAX_PARTS)."""
    walker = _Walker(include_inline=include_inline, max_parts=MAX_PARTS if max_parts is None else max_parts)
    try:
        walker.walk_message(bytes(raw), 0, len(raw), "", 0, ())
    except RecursionError:
        walker.defects.append("recursion_limit")
    return ParsedMessage(
        summary=walker.summary(), attachments=walker.attachments, parts=walker.parts, defects=walker.defects
    )


def parse_messages(raws: list[bytes], *, include_inline: bool = False, max_parts: int | None = None,
                   parse: Callable[..., ParsedMessage] = parse_message) -> list[ParsedMessage | str]:
    """``parse`` of each message, in order; for a message it raises on (the walker should not), the
    reason it could not be read instead. Several messages per call: what the email connector sends
    to a pool child in one round trip (base/pool.py)."""
    parsed: list[ParsedMessage | str] = []
    for raw in raws:
        try:
            parsed.append(parse(raw, include_inline=include_inline, max_parts=max_parts))
        except Exception as exc:  # noqa: BLE001 - one unreadable message is dead-lettered, not the others
            parsed.append(f"unreadable message ({type(exc).__name__}: {exc})")
    return parsed


def iter_attachments(raw: bytes, *, include_inline: bool = False) -> Iterator[Attachment]:
    """Every attachment of ``raw`` in part order (see the module docstring for what counts)."""
    yield from parse_message(raw, include_inline=include_inline).attachments


def message_summary(raw: bytes) -> MessageSummary:
    """Message-ID, From, To, Cc, Date, Subject (decoded) and body text of ``raw``."""
    return parse_message(raw).summary


# Header block parsing

Headers = dict[bytes, list[bytes]]


def _blank_line(buf: bytes, start: int, end: int) -> tuple[int, int]:
    """(end of the header block, start of the body): the first empty line, CRLF or bare LF."""
    crlf = buf.find(b"\n\r\n", start, end)
    lf = buf.find(b"\n\n", start, end if crlf < 0 else crlf + 1)
    if lf >= 0:
        return (lf - 1 if lf > start and buf[lf - 1] == 13 else lf), lf + 2
    if crlf >= 0:
        return (crlf - 1 if crlf > start and buf[crlf - 1] == 13 else crlf), crlf + 3
    return end, end


def _parse_headers(buf: bytes, start: int, end: int) -> tuple[Headers, int, bool]:
    """Headers of the entity at ``buf[start:end]`` (first occurrence of each name, with its folded
    continuation lines) and where its body starts. The third value is True when a line that was
    not a header had to be skipped or ended the headers early (a defect).

    A line that is not a header is skipped when a header follows it (a broken fold, an mbox
    "From " line); otherwise the body starts at that line (a missing blank line).
    """
    if buf.startswith(b"\n", start, end):
        return {}, start + 1, False
    if buf.startswith(b"\r\n", start, end):
        return {}, start + 2, False
    block_end, body_start = _blank_line(buf, start, end)
    lines = buf[start:block_end].split(b"\n")
    headers: Headers = {}
    current: list[bytes] | None = None
    defect = False
    offset = start
    last = len(lines) - 1
    for index, line in enumerate(lines):
        line_start = offset
        offset += len(line) + 1
        first = line[:1]
        if first == b" " or first == b"\t":
            if current is not None:
                current.append(line)
            continue
        colon = line.find(b":")
        name = line[:colon].rstrip(b" \t") if colon > 0 else b""
        if name and b" " not in name and b"\t" not in name:
            key = name.lower()
            if key in headers:
                current = None  # the first occurrence wins (as the stdlib's get() does)
            else:
                current = [line[colon + 1 :]]
                headers[key] = current
            continue
        if not line.strip():
            continue  # the text ended without a blank line: nothing after the headers
        defect = True
        current = None
        if index < last and _is_header_line(lines[index + 1]):
            continue
        return headers, line_start, True
    return headers, body_start, defect


def _is_header_line(line: bytes) -> bool:
    colon = line.find(b":")
    if colon <= 0:
        return False
    name = line[:colon].rstrip(b" \t")
    return bool(name) and b" " not in name and b"\t" not in name


def _header(headers: Headers, name: bytes) -> bytes | None:
    lines = headers.get(name)
    if lines is None:
        return None
    if len(lines) == 1:
        return lines[0].strip()
    # Unfolding (RFC 5322 2.2.3): the line breaks go, the whitespace that follows them stays.
    return b"".join(line.rstrip(b"\r") for line in lines).strip()


def _unfolded_text(headers: Headers, name: bytes) -> str:
    value = _header(headers, name)
    if not value:
        return ""
    text = decode_encoded_words(decode_raw_header(value))
    return " ".join(text.split()) if ("\t" in text or "  " in text or "\n" in text) else text


# Transfer encodings

def _decode_base64(data: bytes) -> tuple[bytes, bool]:
    try:
        return binascii.a2b_base64(data), False
    except (binascii.Error, ValueError):
        pass
    # Bad padding or stray characters: keep the alphabet, drop an impossible last char, pad.
    clean = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    if len(clean) % 4 == 1:
        clean = clean[:-1]
    clean += b"=" * (-len(clean) % 4)
    try:
        return binascii.a2b_base64(clean), True
    except (binascii.Error, ValueError):
        return b"", True


def _decode_body(data: bytes, cte: bytes) -> tuple[bytes, str]:
    """(decoded bytes, defect or "")."""
    if not cte:
        return data, ""
    cte = cte.strip().lower()
    if cte == b"base64":
        decoded, bad = _decode_base64(data)
        return decoded, "bad_base64" if bad else ""
    if cte == b"quoted-printable":
        try:
            return binascii.a2b_qp(data), ""
        except (binascii.Error, ValueError):
            return data, "bad_quoted_printable"
    if cte in (b"x-uuencode", b"uuencode", b"x-uue", b"x-uu"):
        decoded, _name = decode_uuencode_body(data)
        return decoded, ""
    return data, ""


# Content-Type

class _ContentType:
    __slots__ = ("mime_type", "params", "valid")

    def __init__(self, value: bytes | None, default: str) -> None:
        if not value:
            self.mime_type, self.params, self.valid = default, Params([]), True
            return
        main, raw_params = split_header_value(value)
        mime = main.decode("latin-1").strip().lower()
        mime = mime.split()[0] if mime else ""
        params = Params(raw_params)
        charset = params.plain_bytes("charset")
        params.part_charset = charset.decode("latin-1").strip().strip('"') if charset else ""
        self.params = params
        kind, slash, sub = mime.partition("/")
        self.valid = bool(slash and kind and sub)
        self.mime_type = mime if self.valid else default
        if mime == "multipart/*":  # seen in the wild: "any multipart" means mixed
            self.mime_type, self.valid = "multipart/mixed", True


def _params_of(value: bytes | None, part_charset: str) -> tuple[str, Params]:
    if value is None:
        return "", Params([], part_charset)
    main, raw = split_header_value(value)
    return main.decode("latin-1").strip().lower(), Params(raw, part_charset)


# Multipart splitting

def _split_multipart(buf: bytes, start: int, end: int, boundary: bytes) -> tuple[list[tuple[int, int]], bool]:
    """Spans of the body parts between ``--boundary`` lines, and whether the close delimiter was
    seen. A delimiter must start a line and be followed only by whitespace ("--" for the close);
    so a longer boundary that merely starts with this one (nested "..._alt") is not taken."""
    delim = b"--" + boundary
    dlen = len(delim)
    spans: list[tuple[int, int]] = []
    part_start = -1
    pos = start
    while True:
        idx = buf.find(delim, pos, end)
        if idx < 0:
            break
        if idx != start and buf[idx - 1] != 10:
            pos = idx + 1
            continue
        after = idx + dlen
        nl = buf.find(b"\n", after, end)
        line_end = end if nl < 0 else nl
        is_close = buf[after : after + 2] == b"--" and after + 2 <= end
        if not is_close and buf[after:line_end].strip(b" \t\r"):
            pos = idx + 1
            continue
        if part_start >= 0:
            part_end = idx
            if part_end > part_start and buf[part_end - 1] == 10:
                part_end -= 1
                if part_end > part_start and buf[part_end - 1] == 13:
                    part_end -= 1
            spans.append((part_start, part_end))
        if is_close:
            return spans, True
        part_start = end if nl < 0 else nl + 1
        pos = part_start
        if len(spans) > MAX_PARTS:
            return spans, False
    if part_start >= 0:
        spans.append((part_start, end))
    return spans, False


# HTML to text (for body text only)

_HTML_HIDDEN_OPEN = re.compile(r"<(script|style|head)\b", re.IGNORECASE)
_HTML_HIDDEN_CLOSE = {name: re.compile(rf"</{name}\s*>", re.IGNORECASE) for name in ("script", "style", "head")}
_HTML_TAG = re.compile(r"<[^>]*>")


def _html_text(markup: str) -> str:
    """The text of HTML ``markup``: script, style and head elements dropped (one left open stays),
    tags removed, entities decoded, whitespace collapsed. Linear in ``len(markup)``: a regex that
    looks for a closing tag (or ``>``) after every opener that has none scans to the end once per
    opener (8 s for 64 KB of ``<script>``)."""
    kept: list[str] = []
    pos = search_from = 0
    closes: dict[str, re.Match[str] | None] = {}  # per element: its next closing tag (None: none left)
    while (opener := _HTML_HIDDEN_OPEN.search(markup, search_from)) is not None:
        name = opener.group(1).lower()
        close = closes.get(name, opener)
        if close is opener or (close is not None and close.start() < opener.end()):
            close = closes[name] = _HTML_HIDDEN_CLOSE[name].search(markup, opener.end())
        if close is None:
            search_from = opener.end()
            continue
        kept += (markup[pos : opener.start()], " ")
        pos = search_from = close.end()
    kept.append(markup[pos:])
    text = "".join(kept)
    # A "<" after the last ">" starts no tag; leaving that tail out of the regex keeps it linear.
    last = text.rfind(">")
    text = _HTML_TAG.sub(" ", text[: last + 1]) + text[last + 1 :]
    return " ".join(html.unescape(text).split())


_ANGLE_ADDRESS = re.compile(r"<\s*([^<>\s@]+@[^<>\s]+?)\s*>")


_ADDRESS_SPLIT = re.compile(r'"(?:[^"\\]|\\.)*"?|<[^>]*>?|\([^)]*\)?|[^,"<(]+|[,"<(]')


def _addresses(value: str) -> tuple[str, list[str]]:
    """(decoded display form, bare addresses) of an address header given as raw text.

    A small parser of its own: splits on commas outside quotes, angle brackets and comments, then
    reads ``name <addr>`` or a bare ``addr``. The stdlib's getaddresses was a third of the
    parse time of a typical message.
    """
    if not value:
        return "", []
    entries: list[list[str]] = [[]]
    for token in _ADDRESS_SPLIT.findall(value):
        if token == ",":
            entries.append([])
        else:
            entries[-1].append(token)
    shown: list[str] = []
    bare: list[str] = []
    for tokens in entries:
        name_parts: list[str] = []
        addr = ""
        for token in tokens:
            if token.startswith("<"):
                addr = token.strip("<> \t")
            elif token.startswith("("):
                continue
            elif token.startswith('"'):
                name_parts.append(token.strip('"').replace('\\"', '"'))
            else:
                name_parts.append(token)
        name = " ".join(" ".join(name_parts).split())
        if not addr and "@" in name and " " not in name:
            addr, name = name, ""
        if not addr and not name:
            continue
        name = decode_encoded_words(name).strip()
        if addr:
            bare.append(addr)
        if name and addr and any(ch in name for ch in ',;<>@"()'):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        shown.append(f"{name} <{addr}>" if name and addr else (name or addr))
    return ", ".join(shown), bare


class _Walker:
    """One walk over one message; collects attachments, part roles, body text and defects."""

    def __init__(self, *, include_inline: bool, max_parts: int = MAX_PARTS) -> None:
        self.include_inline = include_inline
        self.max_parts = max_parts
        self.attachments: list[Attachment] = []
        self.parts: list[PartInfo] = []
        self.defects: list[str] = []
        self.plain: list[str] = []
        self.html: list[str] = []
        self.html_chars = 0
        self.text_chars = 0
        self.extra_text: list[str] = []
        self.top_headers: Headers = {}

    # structure

    def walk_message(self, buf: bytes, start: int, end: int, path: str, depth: int,
                     origin: tuple[str, ...]) -> None:
        """A message (top level or forwarded): headers, then its body numbered under ``path``."""
        headers, body_start, bad = _parse_headers(buf, start, end)
        if bad:
            self.defects.append(f"header_lines:{path or 'top'}")
        if not path and not origin:
            self.top_headers = headers
        leaf_path = f"{path}.1" if path else "1"
        self.walk_entity(buf, headers, body_start, end, leaf_path, path, depth, origin, "")

    def walk_part(self, buf: bytes, start: int, end: int, path: str, depth: int,
                  origin: tuple[str, ...], parent: str) -> None:
        headers, body_start, bad = _parse_headers(buf, start, end)
        if bad:
            self.defects.append(f"header_lines:{path}")
        self.walk_entity(buf, headers, body_start, end, path, path, depth, origin, parent)

    def walk_entity(self, buf: bytes, headers: Headers, body_start: int, end: int, leaf_path: str,
                    prefix: str, depth: int, origin: tuple[str, ...], parent: str) -> None:
        default = "message/rfc822" if parent == "multipart/digest" else "text/plain"
        ctype = _ContentType(_header(headers, b"content-type"), default)
        mime = ctype.mime_type
        if len(self.parts) >= self.max_parts or depth > MAX_DEPTH:
            self.skipped(leaf_path, mime, "too_deep" if depth > MAX_DEPTH else "too_many_parts")
            return
        if mime.startswith("multipart/"):
            boundary = ctype.params.plain_bytes("boundary")
            spans: list[tuple[int, int]] = []
            closed = False
            if boundary:
                spans, closed = _split_multipart(buf, body_start, end, boundary.strip(b'"'))
            if not spans:
                # No boundary found: what is there is read as plain text (as mail clients show it).
                self.defects.append(f"no_parts:{leaf_path}")
                self.leaf(buf, headers, _ContentType(b"text/plain", "text/plain"), body_start, end,
                          leaf_path, origin, parent)
                return
            if not closed:
                self.defects.append(f"unclosed_multipart:{prefix or 'top'}")
            self.parts.append(PartInfo(prefix, mime, "container"))
            for number, (s, e) in enumerate(spans, 1):
                self.walk_part(buf, s, e, f"{prefix}.{number}" if prefix else str(number), depth + 1,
                               origin, mime)
            return
        if mime in MESSAGE_TYPES:
            cte = _header(headers, b"content-transfer-encoding")
            self.parts.append(PartInfo(leaf_path, mime, "container"))
            if cte and cte.strip().lower() in (b"base64", b"quoted-printable"):
                inner, defect = _decode_body(buf[body_start:end], cte)
                if defect:
                    self.defects.append(f"{defect}:{leaf_path}")
                self.walk_message(inner, 0, len(inner), leaf_path, depth + 1, (*origin, "rfc822"))
            else:
                self.walk_message(buf, body_start, end, leaf_path, depth + 1, (*origin, "rfc822"))
            return
        self.leaf(buf, headers, ctype, body_start, end, leaf_path, origin, parent)

    # leaves

    def leaf(self, buf: bytes, headers: Headers, ctype: _ContentType, body_start: int, end: int,
             path: str, origin: tuple[str, ...], parent: str) -> None:
        mime = ctype.mime_type
        charset = ctype.params.part_charset
        disposition, cd_params = _params_of(_header(headers, b"content-disposition"), charset)
        filename = self.filename(cd_params, ctype.params)
        if not ctype.valid and filename:
            mime = guess_mime_type(filename)
        content_id = (_header(headers, b"content-id") or b"").decode("latin-1").strip().strip("<>")
        cte = _header(headers, b"content-transfer-encoding") or b""

        if mime in SIGNATURE_TYPES or (parent == "multipart/signed" and path.rsplit(".", 1)[-1] == "2"):
            # RFC 1847: the second part of multipart/signed is the signature, whatever its type
            self.parts.append(PartInfo(path, mime, "signature"))
            return
        if mime in REPORT_TYPES:
            self.parts.append(PartInfo(path, mime, "report"))
            return
        if mime in ABSENT_TYPES:
            self.parts.append(PartInfo(path, mime, "absent"))
            return

        role = self.role(mime, disposition, filename, content_id, parent)
        if role == "body":
            self.parts.append(PartInfo(path, mime, "body"))
            self.body_part(buf, body_start, end, cte, mime, charset, path, origin)
            return
        if role == "inline" and not self.include_inline:
            self.parts.append(PartInfo(path, mime, "inline"))
            return
        payload, defect = _decode_body(buf[body_start:end], cte)
        defects = (defect,) if defect else ()
        if not filename:
            filename = self.location_name(headers)
        if not filename and cte.strip().lower() in (b"x-uuencode", b"uuencode", b"x-uue", b"x-uu"):
            _data, uu_name = decode_uuencode_body(buf[body_start:end])
            filename = decode_raw_header(uu_name, charset) if uu_name else ""
        if mime in TNEF_TYPES or filename.lower() == "winmail.dat":
            if self.tnef(payload, path, origin):
                self.parts.append(PartInfo(path, mime, "container"))
                return
            defects = (*defects, "tnef_unreadable")
        self.parts.append(PartInfo(path, mime, role))
        self.attachments.append(Attachment(
            filename=filename, mime_type=mime, part_path=path, payload=payload,
            disposition=disposition if disposition in ("attachment", "inline") else "",
            origin=origin, content_id=content_id, defects=defects,
        ))

    @staticmethod
    def role(mime: str, disposition: str, filename: str, content_id: str, parent: str) -> str:
        """attachment / inline / body, by disposition, name and type (module docstring).

        An image is "inline" when the message shows it in place as part of its own rendering:
        inside multipart/related (HTML with cid: images), or marked inline with a Content-ID or
        without any name. A named image a sender placed inline in multipart/mixed (an iPhone
        photo, Apple Mail) is a file the person sent: an attachment.
        """
        if disposition == "attachment":
            return "attachment"
        if mime.startswith("image/"):
            if parent == "multipart/related":
                return "inline"
            if disposition == "inline" and (content_id or not filename):
                return "inline"
            if not disposition and content_id and not filename:
                return "inline"
            return "attachment"
        if filename:
            return "attachment"
        return "body" if mime.startswith("text/") else "attachment"

    @staticmethod
    def filename(cd_params: Params, ct_params: Params) -> str:
        """Content-Disposition filename (``filename*`` first), then Content-Type name (``name*``
        first); "" when neither is there."""
        for params, key in ((cd_params, "filename"), (ct_params, "name")):
            value = params.text(key)
            if value and value.strip():
                return value.strip()
        return ""

    @staticmethod
    def location_name(headers: Headers) -> str:
        """The last segment of Content-Location, used to name an attachment that has no name
        (an MHTML resource); never used to decide that a part is an attachment."""
        location = _header(headers, b"content-location")
        if not location:
            return ""
        text = decode_raw_header(location).strip().strip('"')
        text = text.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        return text if text and "." in text and ":" not in text else ""

    def body_part(self, buf: bytes, start: int, end: int, cte: bytes, mime: str, charset: str,
                  path: str, origin: tuple[str, ...]) -> None:
        data, _defect = _decode_body(buf[start:end], cte)
        if mime == "text/plain" and b"begin " in data:
            data = self.uuencoded(data, charset, path, origin)
        if self.text_chars >= BODY_TEXT_LIMIT or mime not in ("text/plain", "text/html"):
            return
        if mime == "text/html":
            # Markup is mostly tags: it gets four times the text budget, shared by every HTML part
            # (per part, a message of many HTML parts could make the summary read all of them).
            room = HTML_MARKUP_LIMIT - self.html_chars
            if room > 0:
                markup = decode_declared(data[: room * 4 + 4], charset)[:room]
                self.html.append(markup)
                self.html_chars += len(markup)
            return
        # Decode only what the text budget can use (4 bytes per character at most).
        text = decode_declared(data[: (BODY_TEXT_LIMIT - self.text_chars) * 4 + 4], charset)
        text = text.strip()
        if text:
            self.plain.append(text)
            self.text_chars += len(text)

    def uuencoded(self, data: bytes, charset: str, path: str, origin: tuple[str, ...]) -> bytes:
        """Takes the uuencoded files out of body text ``data`` (parts ``<path>.uu1``, ...) and
        returns the text without them.

        One pass over ``data``: the text is joined once from the pieces between the blocks
        (cutting each block out of the whole text in turn copied the text once per block). Each
        file is a part; at MAX_PARTS the first file beyond is listed as skipped and the rest of
        the text is not read.
        """
        kept: list[bytes] = []
        pos = 0
        budget = self.max_parts - len(self.parts)
        for number, uu in enumerate(iter_uuencoded(data), 1):
            name = decode_raw_header(uu.name, charset)
            guessed = guess_mime_type(name)
            if number > budget:
                self.skipped(f"{path}.uu{number}", guessed, "too_many_parts")
                kept.append(data[pos : uu.start])
                return b"".join(kept)
            self.parts.append(PartInfo(f"{path}.uu{number}", guessed, "attachment"))
            self.attachments.append(Attachment(
                filename=name, mime_type=guessed,
                part_path=f"{path}.uu{number}", payload=uu.data, disposition="",
                origin=(*origin, "uuencode"),
            ))
            kept.append(data[pos : uu.start])
            pos = uu.end
        if not kept:
            return data
        kept.append(data[pos:])
        return b"".join(kept)

    def skipped(self, path: str, mime: str, defect: str) -> None:
        """A part not walked (too deep, or beyond MAX_PARTS); the defect is recorded once."""
        self.parts.append(PartInfo(path, mime, "skipped"))
        if defect not in self.defects:
            self.defects.append(defect)

    def tnef(self, payload: bytes, path: str, origin: tuple[str, ...]) -> bool:
        # The container's own entry follows its files: leave room for it.
        content = unpack_tnef(payload, max_files=max(0, self.max_parts - len(self.parts) - 1))
        if content is None:
            return False
        for tnef_file in content.files:
            sub = "".join(f".tnef{n}" for n in tnef_file.path)
            guessed = guess_mime_type(tnef_file.name)
            self.parts.append(PartInfo(f"{path}{sub}", guessed, "attachment"))
            self.attachments.append(Attachment(
                filename=tnef_file.name, mime_type=guessed,
                part_path=f"{path}{sub}", payload=tnef_file.data, disposition="attachment",
                origin=(*origin, "tnef"),
            ))
        if content.truncated:
            self.skipped(f"{path}.tnef{len(content.files) + 1}", "application/octet-stream", "too_many_parts")
        if content.body_text:
            self.extra_text.append(content.body_text)
        return True

    # summary

    def summary(self) -> MessageSummary:
        headers = self.top_headers
        summary = MessageSummary()
        try:
            summary.message_id = _unfolded_text(headers, b"message-id")
            summary.subject = _unfolded_text(headers, b"subject")
            summary.date = _unfolded_text(headers, b"date")
            raw_from = " ".join(decode_raw_header(_header(headers, b"from") or b"").split())
            summary.from_, senders = _addresses(raw_from)
            angle = _ANGLE_ADDRESS.search(raw_from)
            # An unquoted "@" in a display name splits the stdlib's parse; <addr> is the sender.
            summary.from_address = angle.group(1) if angle else (senders[0] if senders else "")
            summary.to = _addresses(" ".join(decode_raw_header(_header(headers, b"to") or b"").split()))[0]
            summary.cc = _addresses(" ".join(decode_raw_header(_header(headers, b"cc") or b"").split()))[0]
            summary.date_iso = _iso_date(summary.date)
        except Exception:  # noqa: BLE001 - a summary is best effort; the attachments still count
            self.defects.append("summary")
        texts = self.plain or [_html_text(h) for h in self.html]
        texts = [t for t in (*texts, *self.extra_text) if t]
        summary.body_text = "\n\n".join(texts)[:BODY_TEXT_LIMIT]
        return summary


_COMPRESSED_TYPES = {"gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz",
                     "compress": "application/x-compress", "br": "application/x-brotli"}


def guess_mime_type(filename: str) -> str:
    """The MIME type a filename suggests (``.xml.gz`` is gzip), application/octet-stream if none."""
    guessed, encoding = mimetypes.guess_type(filename, strict=False)
    if encoding:
        return _COMPRESSED_TYPES.get(encoding, "application/octet-stream")
    return guessed or "application/octet-stream"


_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_COMMON_DATE = re.compile(
    r"(?:[A-Za-z]{3},\s*)?(\d{1,2}) ([A-Za-z]{3}) (\d{4}) (\d{2}):(\d{2})(?::(\d{2}))? ([+-])(\d{2})(\d{2})")


def _iso_date(value: str) -> str | None:
    """RFC 5322 date as ISO 8601 (UTC when the zone is unknown); None when unreadable."""
    if not value:
        return None
    common = _COMMON_DATE.match(value)
    month = _MONTHS.get(common.group(2).lower()) if common else None
    if common and month:
        day, _, year, hour, minute, second, sign, zh, zm = common.groups()
        offset = (int(zh) * 60 + int(zm)) * (-1 if sign == "-" else 1)
        try:
            return datetime(int(year), month, int(day), int(hour), int(minute), min(int(second or 0), 59),
                            tzinfo=timezone(timedelta(minutes=offset))).isoformat()
        except ValueError:
            pass
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.isoformat()
