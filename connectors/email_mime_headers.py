"""Decoding MIME header values from raw bytes: charsets, RFC 2047 encoded words, RFC 2231 parameters.

The MIME walker (connectors/email_mime.py) keeps headers as bytes until the very end so that a raw 8-bit
filename can be decoded with the best guess (UTF-8, then the part's charset, then Windows-1252 /
Latin-1) instead of the stdlib's U+FFFD replacement. Nothing here raises on malformed input: a
value that cannot be decoded exactly is decoded as well as it can be.
"""

from __future__ import annotations

import binascii
import codecs
import re
from collections.abc import Iterable

#: Charset labels mail software writes that Python does not know, or knows as a narrower codec.
_CHARSET_ALIASES = {
    "gb2312": "gb18030",  # GB2312 mail is routinely GBK/GB18030 in practice
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "iso-8859-8-i": "iso8859_8",
    "iso-8859-6-i": "iso8859_6",
    "windows-874": "cp874",
    "x-sjis": "shift_jis",
    "ks_c_5601-1987": "cp949",
    "unicode-1-1-utf-7": "utf-7",
    "x-unknown": "",
    "unknown-8bit": "",
    "unknown": "",
    "x-user-defined": "",
    "default": "",
}
_codec_cache: dict[str, str] = {}


def codec_name(charset: str | bytes | None) -> str:
    """The Python codec for a MIME charset label, or "" when there is no usable text codec."""
    if not charset:
        return ""
    if isinstance(charset, bytes):
        charset = charset.decode("latin-1")
    label = charset.strip().strip('"').lower()
    cached = _codec_cache.get(label)
    if cached is not None:
        return cached
    name = _CHARSET_ALIASES.get(label, label)
    if name:
        try:
            info = codecs.lookup(name)
            # bytes.decode() refuses non-text codecs (base64, rot13, ...) anyway; drop them here.
            name = info.name if getattr(info, "_is_text_encoding", True) else ""
        except (LookupError, ValueError):
            name = ""
    if len(_codec_cache) < 512:  # charset labels come from mail: do not let them grow the cache
        _codec_cache[label] = name
    return name


def decode_text(data: bytes, charsets: Iterable[str | bytes | None] = ()) -> str:
    """``data`` as text: the first of ``charsets`` (then UTF-8) that decodes it strictly.

    Falls back to Windows-1252 (what "Latin-1" means in practice: printable characters where
    ISO 8859-1 has C1 controls) and finally ISO 8859-1, which decodes any byte string.
    """
    if data.isascii() and not any(_is_stateful(label) for label in charsets):
        return data.decode("ascii")
    tried = set()
    for label in (*charsets, "utf-8", "cp1252"):
        name = codec_name(label)
        if not name or name in tried or name == "ascii":
            continue
        tried.add(name)
        try:
            return data.decode(name)
        except (UnicodeError, LookupError, ValueError, TypeError):
            if name == "utf-8":
                prefix = _utf8_cut_short(data)
                if prefix is not None:
                    return prefix
            continue
    return data.decode("latin-1")


def decode_declared(data: bytes, charset: str | None) -> str:
    """Body text in its declared charset; a body that does not decode strictly in it (nor as
    UTF-8) keeps the declared reading with U+FFFD for the bad bytes, which language detection
    copes with better than a whole body misread as Windows-1252."""
    name = codec_name(charset)
    if not name:
        return decode_text(data)
    if data.isascii() and not _is_stateful(name):
        return data.decode("ascii")
    for candidate in (name, "utf-8"):
        try:
            return data.decode(candidate)
        except (UnicodeError, LookupError, ValueError, TypeError):
            continue
    try:
        return data.decode(name, "replace")
    except (UnicodeError, LookupError, ValueError, TypeError):
        return data.decode("utf-8", "replace")


def _utf8_cut_short(data: bytes) -> str | None:
    """The text of UTF-8 ``data`` whose only flaw is a character cut off at the end (a name
    truncated to a byte limit by the sender), without that partial character; else None."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        text = decoder.decode(data, final=False)
    except UnicodeDecodeError:
        return None
    return text if text else None


def _is_stateful(label: str | bytes | None) -> bool:
    """True for charsets whose text may be pure 7-bit ASCII bytes yet not mean ASCII."""
    return codec_name(label).startswith(("utf_16", "utf-16", "utf_32", "utf-32", "utf-7", "iso2022", "hz"))


def decode_raw_header(data: bytes, charset: str | bytes | None = None) -> str:
    """A raw header value (possibly 8-bit) as text: UTF-8, then ``charset``, then Latin-1.

    7-bit ISO-2022-JP (escape sequences, as old Japanese mailers send headers) is recognised.
    """
    if data.isascii():
        if b"\x1b" in data:
            return decode_text(data, ("iso2022_jp_2", charset))
        return data.decode("ascii")
    return decode_text(data, ("utf-8", charset))


# An RFC 2047 encoded word; the charset may carry an RFC 2231 language suffix (*en).
_ENCODED_WORD = re.compile(r"=\?([^?\s*]*)(?:\*[^?\s]*)?\?([bBqQ])\?([^?]*?)\?=")
_Q_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")


def _decode_b(text: str) -> bytes:
    raw = re.sub(r"[^A-Za-z0-9+/]", "", text).encode("ascii")
    raw = raw[: len(raw) - len(raw) % 4 if len(raw) % 4 == 1 else len(raw)]
    raw += b"=" * (-len(raw) % 4)
    try:
        return binascii.a2b_base64(raw)
    except (binascii.Error, ValueError):
        return b""


def _decode_q(text: str) -> bytes:
    raw = text.replace("_", " ").encode("latin-1", "replace")
    return _Q_HEX.sub(lambda m: bytes((int(m.group(1), 16),)), raw)


def decode_encoded_words(value: str) -> str:
    """Decodes RFC 2047 encoded words anywhere in ``value`` (also inside quotes and parameters).

    Whitespace between adjacent encoded words is dropped, as RFC 2047 says; adjacent words in the
    same charset are joined as bytes before decoding, so a multi-byte character split across two
    words (common with long Malayalam, Japanese or Cyrillic names) comes out whole.
    """
    if "=?" not in value:
        return value
    # (is_word, charset, bytes of a word or the literal text between words)
    tokens: list[tuple[bool, str, bytes | str]] = []
    pos = 0
    for match in _ENCODED_WORD.finditer(value):
        if match.start() > pos:
            tokens.append((False, "", value[pos : match.start()]))
        charset, kind, text = match.group(1), match.group(2), match.group(3)
        data = _decode_b(text) if kind in "bB" else _decode_q(text)
        tokens.append((True, charset.lower(), data))
        pos = match.end()
    if pos < len(value):
        tokens.append((False, "", value[pos:]))

    out: list[str] = []
    pending = bytearray()
    pending_charset = ""
    last = len(tokens) - 1
    for i, (is_word, charset, chunk) in enumerate(tokens):
        if not is_word:
            assert isinstance(chunk, str)
            if chunk.isspace() and 0 < i < last and tokens[i - 1][0] and tokens[i + 1][0]:
                continue
            if pending:
                out.append(decode_text(bytes(pending), (pending_charset,)))
                pending.clear()
            out.append(chunk)
            continue
        assert isinstance(chunk, bytes)
        if pending and charset != pending_charset:
            out.append(decode_text(bytes(pending), (pending_charset,)))
            pending.clear()
        pending_charset = charset
        pending.extend(chunk)
    if pending:
        out.append(decode_text(bytes(pending), (pending_charset,)))
    return "".join(out)


# Parameters (Content-Type, Content-Disposition), parsed from bytes.

def split_header_value(value: bytes) -> tuple[bytes, list[tuple[bytes, bytes, bool]]]:
    """Splits ``type/subtype; a=1; b="x; y"`` into the main value and raw parameters.

    Returns (main value, [(lowercased name, raw value bytes, was_quoted)]). Quoted values have
    their backslash escapes removed; an unquoted value runs to the next ``;`` (so unquoted names
    with spaces survive), except that an unquoted encoded word is read whole even if it contains
    ``;``. Never raises.
    """
    value = value.replace(b"\r", b"").replace(b"\n", b"")
    semi = value.find(b";")
    if semi < 0:
        return value.strip(), []
    main = value[:semi].strip()
    params: list[tuple[bytes, bytes, bool]] = []
    pos = semi + 1
    n = len(value)
    # The next "=" is looked up again only once pos has passed it: searching afresh for every
    # bare token read the rest of the value once per token (quadratic on "a;a;a;...").
    eq = -2
    while pos < n:
        while pos < n and value[pos] in b" \t;":
            pos += 1
        if pos >= n:
            break
        if eq != -1 and eq < pos:
            eq = value.find(b"=", pos)
        semi = value.find(b";", pos)
        if eq < 0 or (0 <= semi < eq):
            # a bare token without "=": not a parameter we can use
            pos = n if semi < 0 else semi + 1
            continue
        name = value[pos:eq].strip().lower()
        pos = eq + 1
        while pos < n and value[pos] in b" \t":
            pos += 1
        if pos < n and value[pos] == 0x22:  # '"'
            close = value.find(b'"', pos + 1)
            if close >= 0 and b"\\" not in value[pos + 1 : close]:
                params.append((name, value[pos + 1 : close], True))
                semi = value.find(b";", close + 1)
                pos = n if semi < 0 else semi + 1
                continue
            buf = bytearray()
            pos += 1
            while pos < n:
                ch = value[pos]
                if ch == 0x5C and pos + 1 < n:  # backslash escape
                    buf.append(value[pos + 1])
                    pos += 2
                    continue
                if ch == 0x22:
                    pos += 1
                    break
                buf.append(ch)
                pos += 1
            params.append((name, bytes(buf), True))
            semi = value.find(b";", pos)
            pos = n if semi < 0 else semi + 1
            continue
        end = value.find(b";", pos)
        if value.startswith(b"=?", pos):
            word_end = value.find(b"?=", pos + 2)
            # skip to the end of the last of possibly several adjacent encoded words (the next ";"
            # is looked up again only once passed, as for "=" above)
            next_semi = -2
            while word_end >= 0:
                nxt = value.find(b"?=", word_end + 2)
                if next_semi != -1 and next_semi < word_end + 2:
                    next_semi = value.find(b";", word_end + 2)
                if nxt < 0 or (0 <= next_semi < nxt):
                    break
                word_end = nxt
            if word_end >= 0:
                end = value.find(b";", word_end + 2)
        if end < 0:
            end = n
        params.append((name, value[pos:end].strip(), False))
        pos = end + 1
    return main, params


_PCT = re.compile(rb"%([0-9A-Fa-f]{2})")


def _pct_decode(data: bytes) -> bytes:
    return _PCT.sub(lambda m: bytes((int(m.group(1), 16),)), data)


def _strip_quotes(value: bytes) -> bytes:
    if len(value) >= 2 and value[:1] == b'"' and value[-1:] == b'"':
        return value[1:-1]
    return value


class Params:
    """The decoded parameters of one header: RFC 2231 continuations joined, charsets applied.

    ``get(name)`` prefers the extended (``name*``) form over the plain one (RFC 6266);
    ``raw_charset`` is the part's charset, used for raw 8-bit values.
    """

    def __init__(self, raw: list[tuple[bytes, bytes, bool]], part_charset: str = "") -> None:
        self._plain: dict[str, bytes] = {}
        self._segments: dict[str, dict[int, tuple[bytes, bool]]] = {}
        self.part_charset = part_charset
        for name_b, val, _quoted in raw:
            name = name_b.decode("latin-1").strip()
            if "*" not in name:
                self._plain.setdefault(name, val)
                continue
            base, _, rest = name.partition("*")
            extended = rest.endswith("*") or rest == ""
            index_text = rest.rstrip("*")
            try:
                index = int(index_text) if index_text else 0
            except ValueError:
                continue
            if index > 1000:  # RFC 2231 continuations are a handful; ignore absurd indices
                continue
            self._segments.setdefault(base, {}).setdefault(index, (val, extended))

    def has(self, name: str) -> bool:
        return name in self._plain or name in self._segments

    def plain_bytes(self, name: str) -> bytes | None:
        """The plain (non-RFC 2231) raw value, for ASCII parameters such as ``boundary``."""
        value = self._plain.get(name)
        if value is None and name in self._segments:
            segs = self._segments[name]
            value = b"".join(segs[i][0] for i in sorted(segs))
        return value

    def extended(self, name: str) -> str | None:
        """The RFC 2231 value (``name*``, ``name*0*``, ...), decoded, or None when absent."""
        segs = self._segments.get(name)
        if not segs:
            return None
        charset = ""
        data = bytearray()
        for i, index in enumerate(sorted(segs)):
            value, extended = segs[index]
            if extended:
                if i == 0:
                    parts = value.split(b"'", 2)
                    if len(parts) == 3:
                        charset = parts[0].decode("latin-1")
                        value = parts[2]
                data.extend(_pct_decode(value))
            else:
                data.extend(_strip_quotes(value))
        text = decode_text(bytes(data), (charset, self.part_charset))
        # Some mailers put an RFC 2047 word inside an RFC 2231 value; decode it too.
        return decode_encoded_words(text)

    def text(self, name: str) -> str | None:
        """The parameter as text, extended form first; None when absent."""
        ext = self.extended(name)
        if ext is not None:
            return ext
        raw = self._plain.get(name)
        if raw is None:
            return None
        return decode_encoded_words(decode_raw_header(raw, self.part_charset))
