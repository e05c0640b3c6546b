"""What the pipeline makes of an ``Item`` (base/contract.py): a ``Document``, its bytes spooled to a
temporary file while hashed, and the filename and text helpers that go with it."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

#: Chunk size used when streaming bytes from a source into a spool file.
CHUNK_SIZE = 1024 * 1024  # bytes
#: A spooled Document keeps at most this much in memory before rolling over to disk.
SPOOL_MEMORY_LIMIT = 1024 * 1024  # bytes
#: Longest filename we hand to the Hub, in UTF-8 bytes (most file systems allow 255).
MAX_FILENAME_BYTES = 200

#: The fields of the Hub metadata that enrichment sets (and a reprocess updates).
ENRICHMENT_FIELDS = ("language", "language_script", "department", "department_confidence", "department_terms",
                     "extraction", "sensitive")


@dataclass
class Document:
    """A complete document: enriched metadata plus its content in a spooled temporary file.

    The content is never held in memory beyond ``SPOOL_MEMORY_LIMIT``; ``open_content()`` returns
    a binary file positioned at the start. Call ``close()`` (or use ``with``) to free the spool.
    """

    source: str
    scope: str
    source_id: str
    version: str
    filename: str
    mime_type: str
    size: int
    sha256: str
    title: str = ""
    text: str = ""
    language: str = "unknown"
    department: str = ""
    department_confidence: float = 0.0
    department_terms: list[str] = field(default_factory=list)
    #: Script the language was written in when it is not the language's own ('Latn' for Malayalam
    #: typed in Latin letters, "Manglish"); empty otherwise.
    language_script: str = ""
    #: What was read out of the content (base/extraction): its text, capped; empty when nothing was.
    content_text: str = ""
    #: The Hub's ``extraction`` metadata: method (text-layer | ocr | none), pages, chars, seconds,
    #: languages, truncated, error. None until the extraction step ran.
    extraction: dict[str, Any] | None = None
    #: Kinds of personal data found in the text and how often each (never the values), e.g.
    #: {"aadhaar": 2, "pan": 1}; empty when none was found.
    sensitive: dict[str, int] = field(default_factory=dict)
    author: str = ""
    created_at: str | None = None
    modified_at: str | None = None
    source_url: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    previous_sha256: str | None = None
    _content: IO[bytes] | None = field(default=None, repr=False)

    def open_content(self) -> IO[bytes]:
        """The content, rewound to its first byte. Raises ValueError once closed."""
        if self._content is None or self._content.closed:
            raise ValueError(f"content of {self.source_id} is closed")
        self._content.seek(0)
        return self._content

    def read_bytes(self) -> bytes:
        """The whole content in memory: for tests and small files only."""
        return self.open_content().read()

    def close(self) -> None:
        """Frees the spool file; the Document keeps its metadata."""
        if self._content is not None:
            self._content.close()

    def __enter__(self) -> Document:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def enrichment(self) -> dict[str, Any]:
        """What the pipeline learnt from the document (language, department and why, extraction,
        sensitive data kinds): the body of the Hub's enrichment update, and a subset of ``hub_metadata``."""
        meta = self.hub_metadata()
        return {key: meta[key] for key in ENRICHMENT_FIELDS if key in meta}

    def hub_metadata(self) -> dict[str, Any]:
        """The ``metadata`` JSON part of the Hub contract."""
        meta: dict[str, Any] = {
            "source": self.source,
            "scope": self.scope,
            "source_id": self.source_id,
            "version": self.version,
            "filename": self.filename,
            "mime_type": self.mime_type,
            "size": self.size,
            "sha256": self.sha256,
            "title": self.title,
            "language": self.language,
            "department": self.department,
            "department_confidence": round(self.department_confidence, 3),
            "department_terms": list(self.department_terms),
            "sensitive": dict(self.sensitive),
            "author": self.author,
            "created_at": self.created_at,
            "modified_at": self.modified_at,
            "source_url": self.source_url,
            "extra": self.metadata,
        }
        if self.language_script:
            meta["language_script"] = self.language_script
        if self.extraction is not None:
            meta["extraction"] = dict(self.extraction)
        if self.previous_sha256:
            meta["previous_sha256"] = self.previous_sha256
        return meta


#: Spool folders this process has made sure exist.
_SPOOL_DIRS_MADE: set[str] = set()


@dataclass
class SpoolResult:
    """A spool file filled from a chunk stream, with its size and SHA-256."""

    file: IO[bytes]
    size: int
    sha256: str


def spool_chunks(
    chunks: Iterable[bytes], *, spool_dir: str | None = None, max_bytes: int | None = None,
    on_progress: Callable[[int], None] | None = None, progress_every: int = CHUNK_SIZE,
) -> SpoolResult:
    """Streams ``chunks`` into a spooled temporary file while hashing them.

    Memory stays bounded by ``SPOOL_MEMORY_LIMIT`` plus one chunk, whatever the total size.
    Raises ``ItemTooLarge`` as soon as more than ``max_bytes`` arrive (the rest is not read).
    ``on_progress(size)`` is called each time another ``progress_every`` bytes have been written
    (``size``: bytes so far); whatever it raises stops the stream. On any exception the spool file
    is closed (and so removed) and the chunk source is closed before the exception goes on.
    """
    from utils.errors import ItemTooLarge

    if spool_dir and spool_dir not in _SPOOL_DIRS_MADE:
        # Once per folder and process: a makedirs per document cost two syscalls on the hot path.
        # The runner's free-space guard recreates a folder removed under a long-lived worker.
        os.makedirs(spool_dir, exist_ok=True)
        _SPOOL_DIRS_MADE.add(spool_dir)
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - handed to the Document
        max_size=SPOOL_MEMORY_LIMIT, dir=spool_dir, prefix="kmrl-spool-"
    )
    digest = hashlib.sha256()
    size = 0
    next_report = progress_every
    try:
        for chunk in chunks:
            if not chunk:
                continue
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise ItemTooLarge(f"larger than the limit of {max_bytes} bytes")
            digest.update(chunk)
            spool.write(chunk)
            if on_progress is not None and size >= next_report:
                next_report = size + progress_every
                on_progress(size)
        spool.flush()
    except BaseException:
        spool.close()
        raise
    finally:
        close = getattr(chunks, "close", None)
        if callable(close):
            close()
    spool.seek(0)
    return SpoolResult(file=spool, size=size, sha256=digest.hexdigest())


def iter_file_chunks(fileobj: IO[bytes], chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Reads a binary file object in chunks until EOF."""
    while True:
        chunk = fileobj.read(chunk_size)
        if not chunk:
            return
        yield chunk


# Characters that change how a name displays or hide differences in it, beyond the format (Cf)
# category that is dropped whole: default-ignorable code points of other categories (combining
# grapheme joiner, Hangul fillers, Khmer inherent vowels, Mongolian and other variation selectors).
# "evil.exe\u00ad" and "evil.exe\ufe0f" both display as "evil.exe" and must be matched as it.
_IGNORABLE = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180e\u180f\u3164\uffa0"
    + "".join(chr(c) for c in range(0xFE00, 0xFE10))
    + "".join(chr(c) for c in range(0xE0100, 0xE01F0))
)
#: ZERO WIDTH NON-JOINER and ZERO WIDTH JOINER: the only format characters a name keeps, and only
#: after a letter or mark of a script that spells words with them (see ``_joiner_script``).
_JOINERS = frozenset("\u200c\u200d")
# Scripts whose words need ZWJ/ZWNJ: Malayalam chillu letters written the Unicode 5.0 way
# (U+0D23 U+0D4D U+200D for the chillu of NNA), ZWNJ to stop a conjunct in Malayalam, Hindi or
# Bengali, ZWJ for the Bengali ya-phala, ZWNJ inside Persian and Urdu words (Arabic script).
_JOINER_SCRIPTS = (
    (0x0600, 0x06FF), (0x0750, 0x077F), (0x08A0, 0x08FF),  # Arabic
    (0x0900, 0x0DFF),  # Devanagari, Bengali, Gurmukhi, Gujarati, Oriya, Tamil, Telugu, Kannada, Malayalam, Sinhala
    (0x1CD0, 0x1CFF), (0xA8E0, 0xA8FF),  # Vedic extensions, Devanagari extended
)
# Windows trims spaces before the extension when it checks for a device name: "nul .txt" is NUL.
_RESERVED_WINDOWS = re.compile(r"^(con|prn|aux|nul|conin\$|conout\$|com[0-9¹²³]|lpt[0-9¹²³])( *\..*)?$",
                               re.IGNORECASE)
_UNSAFE_CHARS = re.compile(r'[<>:"|?*]')


def _joiner_script(ch: str) -> bool:
    """True for a letter or combining mark of a script that uses ZWJ/ZWNJ inside words."""
    if unicodedata.category(ch)[0] not in "LM":
        return False
    code = ord(ch)
    return any(low <= code <= high for low, high in _JOINER_SCRIPTS)


def _visible_chars(name: str) -> str:
    """``name`` without control, format, private-use, unassigned, line/paragraph-separator and other
    invisible characters; ZWJ/ZWNJ stay only right after a letter or mark of a joining script, so
    a joiner can never sit unseen after Latin text (``evil.exe\u200d``) or repeat."""
    kept: list[str] = []
    for ch in name:
        if ch in _JOINERS:
            if kept and _joiner_script(kept[-1]):
                kept.append(ch)
            continue
        if ch in _IGNORABLE:
            continue
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            continue
        kept.append(ch)
    return "".join(kept)


def sanitize_filename(name: str | None, *, default: str = "unnamed") -> str:
    """A filename safe to write on any common file system and to show to a person.

    Strips directory parts (``/`` and ``\\``); control, format (bidi overrides, zero-width and
    soft hyphens, tag characters) and other invisible characters, except ZWJ/ZWNJ inside words of
    the scripts that need them (Malayalam chillu letters, Indic and Persian spellings); characters
    Windows forbids; leading dots and trailing dots/spaces. Prefixes Windows-reserved device names
    (``CON``, ``CONIN$``, ``LPT1.txt``, ...); caps the length at ``MAX_FILENAME_BYTES`` UTF-8 bytes,
    keeping the extension. The result is NFC; sanitising it again changes nothing. Never returns an
    empty string, ``.`` or ``..``. Content rules match on this cleaned name.
    """
    if not name:
        return default
    name = unicodedata.normalize("NFC", str(name))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    # Dropping a character can bring a base letter and a combining mark together, and normalising
    # can reorder marks before a joiner: repeat until nothing changes (each round only shortens it).
    while True:
        visible = unicodedata.normalize("NFC", _visible_chars(name))
        if visible == name:
            break
        name = visible
    name = _UNSAFE_CHARS.sub("_", name)
    # Dots and spaces go together at both ends, so a second pass never changes the result.
    name = re.sub(r"\s+", " ", name).strip(" .")
    if not name:
        return default
    if _RESERVED_WINDOWS.match(name):
        name = "_" + name
    return _cap_length(name)


def _cap_length(name: str) -> str:
    if len(name.encode("utf-8")) <= MAX_FILENAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext.encode("utf-8")) > 16:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    budget = MAX_FILENAME_BYTES - len(suffix.encode("utf-8"))
    encoded = stem.encode("utf-8")[:budget]
    stem = encoded.decode("utf-8", errors="ignore").rstrip(". ")
    return (stem or "unnamed") + suffix


def merged_text(parts: Iterable[str | None], *, limit: int = 20000) -> str:
    """Joins non-empty text parts with newlines, capped at ``limit`` characters (enrichment input)."""
    text = "\n".join(p for p in parts if p)
    return text[:limit]


def flat_hints(hints: Mapping[str, Any]) -> dict[str, str]:
    """Hint values as lowercase strings, dropping empty ones."""
    return {k: str(v).strip().lower() for k, v in hints.items() if v not in (None, "")}
