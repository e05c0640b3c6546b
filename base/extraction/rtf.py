"""RTF: the document's text, by a small tokenizer over the memory-mapped file (no recursion).

Read as an RTF reader would: ``\\uN`` characters (negative N as 16-bit, surrogate pairs joined) with
their ``\\ucN`` fallback characters skipped; ``\\'hh`` bytes decoded in the code page of the current
font's ``\\fcharset`` or else the document's ``\\ansicpg`` (multi-byte code pages such as 932 kept
whole); ``\\par``, ``\\line``, ``\\row`` and ``\\page`` as line breaks, ``\\tab`` and ``\\cell`` as tabs.
Destinations that hold no text (font and colour tables, style sheet, document info, pictures,
objects, field instructions, and every ``{\\*...}`` group) are skipped; ``\\binN`` data is jumped over.
Groups nested deeper than ``MAX_DEPTH`` share the state at that depth, so a file of 100,000 nested
braces costs no more memory than a flat one.
"""

from __future__ import annotations

import mmap
import re

from base.extraction import TEXT_LAYER, Job

#: Open groups whose state is kept; deeper ones are counted only.
MAX_DEPTH = 512
#: Characters gathered before they go to the sink (and the time is checked).
FLUSH_CHARS = 32 * 1024
#: Bytes of the file read between two checks of the time.
TIME_CHECK_BYTES = 1024 * 1024

_TOKEN = re.compile(
    rb"\\([a-zA-Z]{1,32})(-?\d{1,10})? ?"  # 1, 2: control word and parameter (one space is its delimiter)
    rb"|\\'([0-9a-fA-F]{2})"  # 3: a byte in the current code page
    rb"|\\([^a-zA-Z'])"  # 4: control symbol
    rb"|([{}])"  # 5: group
    rb"|[\r\n]+"  # line ends in the file are not text
    rb"|([^\\{}\r\n]+)",  # 6: literal text
    re.DOTALL)

#: A run of \uN escapes each followed by one literal fallback character: how writers put non-ASCII
#: text under \uc1 (the default). Taken in one match instead of one token per escape.
_UNICODE_RUN = re.compile(rb"(?:\\u-?\d{1,6} ?[^\\{}\r\n])+")
_UNICODE_VALUE = re.compile(rb"\\u(-?\d{1,6})")

#: Destinations whose content is not the document's text.
_SKIPPED = frozenset({
    "fonttbl", "colortbl", "stylesheet", "info", "pict", "object", "objdata", "fldinst", "themedata",
    "colorschememapping", "datastore", "latentstyles", "listtable", "listoverridetable", "revtbl", "rsidtbl",
    "generator", "xmlnstbl", "filetbl", "pgdsctbl", "bkmkstart", "bkmkend", "nonshppict", "shppict", "sp",
    "sn", "sv", "falt", "panose", "leveltext", "levelnumbers", "listtext", "pntext", "pntxta", "pntxtb",
    "ftnsep", "ftnsepc", "aftnsep", "aftnsepc", "docvar", "userprops", "template", "mmathPr", "wgrffmtfilter",
    "protusertbl", "xe", "tc", "txe", "private", "atnid", "atnauthor", "annotation",
})
#: \fcharset values -> Python codecs (0 and 1 mean the document's \ansicpg; 2 is the Symbol font).
_CHARSETS = {77: "mac_roman", 128: "cp932", 129: "cp949", 130: "johab", 134: "gbk", 136: "big5", 161: "cp1253",
             162: "cp1254", 163: "cp1258", 177: "cp1255", 178: "cp1256", 186: "cp1257", 204: "cp1251",
             222: "cp874", 238: "cp1250", 254: "cp437", 255: "cp850"}
_WORDS = {"par": "\n", "line": "\n", "row": "\n", "sect": "\n", "page": "\n", "tab": "\t", "cell": "\t",
          "nestcell": "\t", "emdash": "\u2014", "endash": "\u2013", "bullet": "\u2022", "lquote": "\u2018",
          "rquote": "\u2019", "ldblquote": "\u201c", "rdblquote": "\u201d", "emspace": " ", "enspace": " ",
          "qmspace": " "}
_SYMBOLS = {b"\\": "\\", b"{": "{", b"}": "}", b"~": "\u00a0", b"_": "\u2011", b"\n": "\n", b"\r": "\n",
            b"\t": "\t"}


def _codec(code_page: int) -> str | None:
    name = f"cp{code_page}"
    try:
        "".encode(name)
    except LookupError:
        return None
    return name


class _Reader:
    """One pass over the tokens; ``state`` is (skipping, uc, codec) of the innermost kept group."""

    def __init__(self, data: mmap.mmap | bytes, job: Job) -> None:
        self.data = data
        self.job = job
        self.document_codec = "cp1252"
        self.fonts: dict[int, str | None] = {}
        self.font_being_defined = -1
        self.in_fonttbl = 0  # depth of the fonttbl group, 0 outside it
        self.stack: list[tuple[bool, int, str | None]] = []
        self.skipping = False
        self.uc = 1
        self.codec: str | None = None
        self.overflow = 0
        self.fallback = 0  # fallback characters still to skip after a \uN
        self.bytes_pending = bytearray()
        self.units_pending: list[str] = []  # \uN code units, joined when a run ends (surrogate pairs)
        self.out: list[str] = []
        self.out_chars = 0
        self.full = False

    def emit(self, text: str) -> None:
        self.flush_pending()
        self.out.append(text)
        self.out_chars += len(text)
        if self.out_chars >= FLUSH_CHARS:
            self.flush()

    def flush_pending(self) -> None:
        if self.bytes_pending:
            data = bytes(self.bytes_pending)
            self.bytes_pending.clear()
            self.out.append(data.decode(self.codec or self.document_codec, "replace"))
            self.out_chars += len(self.out[-1])
        if self.units_pending:
            joined = "".join(self.units_pending)
            self.units_pending.clear()
            self.out.append(joined.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace"))
            self.out_chars += len(self.out[-1])

    def flush(self) -> None:
        self.flush_pending()
        if self.out and not self.job.sink.write("".join(self.out)):
            self.full = True
        self.out.clear()
        self.out_chars = 0
        self.job.check_time()

    def run(self) -> None:
        data, size, position = self.data, len(self.data), 0
        group_start = False
        next_check = TIME_CHECK_BYTES
        while position < size and not self.full:
            if position >= next_check:
                # Skipped destinations (pictures, objects) write nothing, so time is checked by bytes too.
                self.job.check_time()
                next_check = position + TIME_CHECK_BYTES
            if self.uc == 1 and not self.fallback and data[position:position + 2] == b"\\u":
                run = _UNICODE_RUN.match(data, position)
                if run is not None:
                    position = run.end()
                    group_start = False
                    if not self.skipping:
                        if self.bytes_pending:
                            self.flush_pending()
                        self.units_pending.extend(chr(int(value) % 65536)
                                                  for value in _UNICODE_VALUE.findall(run.group()))
                        if len(self.units_pending) >= FLUSH_CHARS:
                            self.emit("")
                    continue
            match = _TOKEN.match(data, position)
            if match is None:
                position += 1  # a lone backslash at the very end
                continue
            position = match.end()
            word, symbol, literal = match.group(1), match.group(4), match.group(6)
            if word is not None:
                name = word.decode("ascii")
                parameter = match.group(2)
                value = int(parameter) if parameter is not None else None
                if name == "bin" and value:
                    position += max(value, 0)
                    continue
                self.control_word(name, value, group_start)
                group_start = False
            elif match.group(3) is not None:
                group_start = False
                if self.fallback:
                    self.fallback -= 1
                elif not self.skipping:
                    if self.units_pending:
                        self.flush_pending()
                    self.bytes_pending.append(int(match.group(3), 16))
            elif match.group(5) is not None:
                self.fallback = 0
                if match.group(5) == b"{":
                    self.open_group()
                    group_start = True
                else:
                    self.close_group()
                    group_start = False
            elif symbol is not None:
                if symbol == b"*" and group_start and not self.overflow:
                    self.skipping = True
                    continue
                group_start = False
                if self.fallback:
                    self.fallback -= 1
                elif not self.skipping and symbol in _SYMBOLS:
                    self.emit(_SYMBOLS[symbol])
            elif literal is not None:
                group_start = False
                if self.fallback:
                    skipped = min(self.fallback, len(literal))
                    self.fallback -= skipped
                    literal = literal[skipped:]
                if literal and not self.skipping:
                    self.emit(literal.decode(self.codec or self.document_codec, "replace"))
        self.flush()

    def open_group(self) -> None:
        if len(self.stack) >= MAX_DEPTH:
            self.overflow += 1
            return
        self.stack.append((self.skipping, self.uc, self.codec))

    def close_group(self) -> None:
        if self.overflow:
            self.overflow -= 1
            return
        if self.in_fonttbl and len(self.stack) < self.in_fonttbl:
            self.in_fonttbl = 0
        if self.stack:
            self.flush_pending()
            self.skipping, self.uc, self.codec = self.stack.pop()
        if self.in_fonttbl and len(self.stack) < self.in_fonttbl:
            self.in_fonttbl = 0

    def control_word(self, name: str, value: int | None, group_start: bool) -> None:
        if group_start and name in _SKIPPED and not self.overflow:
            self.skipping = True
            if name == "fonttbl":
                self.in_fonttbl = len(self.stack)
            return
        if self.in_fonttbl:
            if name == "f" and value is not None:
                self.font_being_defined = value
            elif name == "fcharset" and value is not None:
                self.fonts[self.font_being_defined] = _CHARSETS.get(value)
            elif name == "cpg" and value is not None:
                self.fonts[self.font_being_defined] = _codec(value)
            return
        if name == "u" and value is not None:
            self.fallback = 0
            if not self.skipping:
                if self.bytes_pending:
                    self.flush_pending()
                self.units_pending.append(chr(value % 65536))
            self.fallback = self.uc
            return
        self.fallback = 0
        if name == "uc" and value is not None:
            self.uc = max(0, value)
        elif name == "ansicpg" and value is not None:
            self.document_codec = _codec(value) or self.document_codec
        elif name == "f" and value is not None:
            self.flush_pending()
            self.codec = self.fonts.get(value)
        elif name == "plain":
            self.flush_pending()
            self.codec = None
        elif not self.skipping and name in _WORDS:
            self.emit(_WORDS[name])


def extract_rtf(job: Job) -> None:
    """The text of an RTF file (see the module docstring)."""
    job.method = TEXT_LAYER
    with open(job.path, "rb") as handle:
        try:
            data: mmap.mmap | bytes = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            data = b""
        try:
            reader = _Reader(data, job)
            reader.run()
            if reader.full:
                job.sink.truncated = True
        finally:
            if isinstance(data, mmap.mmap):
                data.close()
