"""Reading the members of a ZIP container (DOCX, XLSX, PPTX, ODF) without trusting what it says of itself.

A ZIP header's sizes are the file's own claims: a decompression bomb claims little and expands to
gigabytes. ``BoundedZip`` counts the bytes it actually inflates, member by member and in all, and
raises ``ExtractionCut`` when a member or the document passes ``max_expanded_bytes``, when a member
inflates at an absurd ratio, or when the archive lists more members than any office file has. Callers
read members as a stream of chunks (``chunks(name)``), so no member is ever whole in memory.

A file whose central directory is missing (a truncated upload) is still read: its members are found
by their local headers from the start of the file, so the text before the cut is kept.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from base.extraction import ExtractionCut, Job

#: Members an archive may list; office files have tens to a few thousand (one per image, slide, sheet).
MAX_MEMBERS = 20_000
#: Bytes inflated per read.
CHUNK = 64 * 1024  # bytes
#: A member may inflate to this many times its compressed size at most once past RATIO_GRACE.
#: Deflate tops out near 1032:1; a spreadsheet of a million repeated cells measured 1:60 to 1:130.
MAX_RATIO = 400
#: Inflated bytes of a member before the ratio is judged (tiny members compress at any ratio).
RATIO_GRACE = 4 * 1024 * 1024  # bytes
#: Bytes of a member's name in a local header at most (the format allows 64 KiB).
MAX_NAME = 4096  # bytes

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_EOCD_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"


class ArchiveError(Exception):
    """The container is not a readable ZIP archive, or a member it needs is missing."""


def listed_members(handle: BinaryIO) -> int | None:
    """How many members the end-of-central-directory record claims (None when it is missing).

    Read before ``zipfile`` builds an object per member, so a directory of millions of entries is
    refused without being loaded.
    """
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    tail_size = min(size, 22 + 65535)
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    at = tail.rfind(_EOCD_SIGNATURE)
    if at < 0 or len(tail) - at < 22:
        return None
    (total,) = struct.unpack_from("<H", tail, at + 10)
    if total == 0xFFFF and at >= 20 and tail[at - 20:at - 16] == _ZIP64_LOCATOR:
        (zip64_offset,) = struct.unpack_from("<Q", tail, at - 20 + 8)
        handle.seek(zip64_offset)
        record = handle.read(56)
        if len(record) == 56 and record[:4] == b"PK\x06\x06":
            (total,) = struct.unpack_from("<Q", record, 32)
    return int(total)


class _Member:
    """Where a member's data is and what the archive claims of it."""

    __slots__ = ("compressed", "crc", "data_at", "flags", "header_at", "method")

    def __init__(self, *, header_at: int, method: int, compressed: int, flags: int, crc: int | None,
                 data_at: int | None = None) -> None:
        self.header_at = header_at
        self.method = method
        self.compressed = compressed
        self.flags = flags
        self.crc = crc
        self.data_at = data_at


class BoundedZip:
    """The members of one ZIP file, read under a budget of inflated bytes.

    ``max_expanded_bytes`` bounds each member and the sum of all members read; ``names`` lists the
    members; ``chunks(name)`` yields a member's bytes, inflated here (zlib, raw deflate) so that the
    compressed bytes consumed are known and the ratio is judged as the member is read, and checked
    against its CRC at its end. Raises ``ExtractionCut`` at a bound, ``ArchiveError`` for a file that
    is no ZIP archive, a damaged or encrypted member, or a member that is not there.
    """

    def __init__(self, path: str, *, max_expanded_bytes: int) -> None:
        self.path = path
        self.max_expanded_bytes = max_expanded_bytes
        self.expanded = 0
        #: Why the archive is read from its local headers (None when the central directory is sound).
        self.damage: str | None = None
        self._handle = open(path, "rb")  # noqa: SIM115 - closed by close() / the context manager
        self._members: dict[str, _Member] = {}
        try:
            listed = listed_members(self._handle)
            if listed is not None and listed > MAX_MEMBERS:
                raise ExtractionCut(f"the archive lists {listed} members (more than {MAX_MEMBERS})")
            if listed is None:
                self.damage = "the ZIP central directory is missing (a truncated file?)"
            else:
                self._handle.seek(0)
                try:
                    with zipfile.ZipFile(self._handle) as directory:
                        for info in directory.infolist():
                            self._members.setdefault(info.filename, _Member(
                                header_at=info.header_offset, method=info.compress_type,
                                compressed=info.compress_size, flags=info.flag_bits, crc=info.CRC))
                except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, struct.error) as exc:
                    self.damage = f"the ZIP central directory is unreadable ({exc})"
                    self._members = {}
            if self.damage is not None:
                self._members = self._scan_local_headers()
                if not self._members:
                    raise ArchiveError(f"not a ZIP archive: {self.damage}")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> BoundedZip:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._handle.close()

    @property
    def names(self) -> list[str]:
        return list(self._members)

    def __contains__(self, name: str) -> bool:
        return name in self._members

    def chunks(self, name: str) -> Iterator[bytes]:
        """The inflated bytes of member ``name``, CHUNK at a time, each counted against the budget."""
        member = self._members.get(name)
        if member is None:
            raise ArchiveError(f"the archive has no member {name!r}")
        if member.flags & 0x01:
            raise ArchiveError(f"member {name} is encrypted")
        produced = 0
        crc = 0
        for chunk, consumed in self._inflate(name, member):
            produced += len(chunk)
            self.expanded += len(chunk)
            if produced > self.max_expanded_bytes or self.expanded > self.max_expanded_bytes:
                raise ExtractionCut(
                    f"the archive expands past {self.max_expanded_bytes} bytes (a decompression bomb?)")
            if produced > RATIO_GRACE and produced > MAX_RATIO * max(consumed, 1):
                raise ExtractionCut(f"member {name} inflates more than {MAX_RATIO}:1 (a decompression bomb?)")
            crc = zlib.crc32(chunk, crc)
            yield chunk
        if member.crc is not None and crc != member.crc:
            raise ArchiveError(f"member {name} is damaged (its CRC does not match)")

    def read(self, name: str, *, limit: int) -> bytes:
        """A whole member, for the small ones (relationships, manifests); ``limit`` bytes at most."""
        parts: list[bytes] = []
        size = 0
        for chunk in self.chunks(name):
            size += len(chunk)
            if size > limit:
                raise ExtractionCut(f"member {name} is larger than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def _data_at(self, name: str, member: _Member) -> int:
        if member.data_at is None:
            self._handle.seek(member.header_at)
            header = self._handle.read(_LOCAL_HEADER.size)
            if len(header) < _LOCAL_HEADER.size or header[:4] != _LOCAL_SIGNATURE:
                raise ArchiveError(f"member {name} has no local header where the directory says")
            name_len, extra_len = _LOCAL_HEADER.unpack(header)[-2:]
            member.data_at = member.header_at + _LOCAL_HEADER.size + name_len + extra_len
        return member.data_at

    def _scan_local_headers(self) -> dict[str, _Member]:
        """Every member found by its local header, in order from the start (where the central
        directory cannot be trusted)."""
        found: dict[str, _Member] = {}
        handle = self._handle
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        offset = 0
        while offset + _LOCAL_HEADER.size <= size and len(found) < MAX_MEMBERS:
            handle.seek(offset)
            header = handle.read(_LOCAL_HEADER.size)
            (signature, _version, flags, method, _time, _date, crc, compressed, _size, name_len,
             extra_len) = _LOCAL_HEADER.unpack(header)
            if signature != _LOCAL_SIGNATURE or name_len > MAX_NAME:
                break
            name = handle.read(name_len).decode("utf-8" if flags & 0x800 else "cp437", "replace")
            data_at = offset + _LOCAL_HEADER.size + name_len + extra_len
            sizes_follow = bool(flags & 0x08)
            found.setdefault(name, _Member(header_at=offset, method=method, compressed=compressed, flags=flags,
                                           crc=None if sizes_follow else crc, data_at=data_at))
            if sizes_follow and compressed == 0:
                # Sizes follow the data (a data descriptor): find the end by inflating the member.
                end = self._deflate_end(data_at) if method == zipfile.ZIP_DEFLATED else None
                if end is None:
                    # Cut inside this member: read it to the end of the file, as far as it goes.
                    found[name].compressed = size - data_at
                    break
                found[name].compressed = end - data_at
                # Skip the data descriptor: optional signature, CRC, two sizes (32-bit).
                handle.seek(end)
                descriptor = handle.read(16)
                offset = end + (16 if descriptor[:4] == b"PK\x07\x08" else 12)
            else:
                offset = data_at + compressed
        return found

    def _deflate_end(self, start: int) -> int | None:
        """Where the deflate stream starting at ``start`` ends (inflating it, under the budget)."""
        inflater = zlib.decompressobj(-15)
        self._handle.seek(start)
        consumed = 0
        inflated = 0
        while not inflater.eof:
            block = self._handle.read(CHUNK)
            if not block:
                return None
            inflated += len(inflater.decompress(block, CHUNK * 16))
            while inflater.unconsumed_tail and inflated <= self.max_expanded_bytes:
                inflated += len(inflater.decompress(inflater.unconsumed_tail, CHUNK * 16))
            if inflated > self.max_expanded_bytes:
                raise ExtractionCut(
                    f"the archive expands past {self.max_expanded_bytes} bytes (a decompression bomb?)")
            consumed += len(block) - len(inflater.unused_data)
        return start + consumed

    def _inflate(self, name: str, member: _Member) -> Iterator[tuple[bytes, int]]:
        """(inflated chunk, compressed bytes consumed so far) of one member."""
        handle = self._handle
        position = self._data_at(name, member)
        left = member.compressed
        consumed = 0
        if member.method == zipfile.ZIP_STORED:
            while left > 0:
                handle.seek(position)
                block = handle.read(min(CHUNK, left))
                if not block:
                    raise ArchiveError(f"member {name} is cut short (truncated file)")
                position += len(block)
                left -= len(block)
                consumed += len(block)
                yield block, consumed
            return
        if member.method != zipfile.ZIP_DEFLATED:
            raise ArchiveError(f"member {name} uses compression method {member.method}, which is not read")
        inflater = zlib.decompressobj(-15)
        while not inflater.eof:
            # Re-seek each time: the caller may read another member between two chunks of this one.
            handle.seek(position)
            block = handle.read(min(CHUNK, left)) if left > 0 else b""
            if not block:
                raise ArchiveError(f"member {name} is cut short (truncated file)")
            position += len(block)
            left -= len(block)
            consumed += len(block)
            try:
                out = inflater.decompress(block, CHUNK)
                while True:
                    if out:
                        yield out, consumed - len(inflater.unconsumed_tail)
                    if not inflater.unconsumed_tail:
                        break
                    out = inflater.decompress(inflater.unconsumed_tail, CHUNK)
            except zlib.error as exc:
                raise ArchiveError(f"member {name} is damaged: {exc}") from exc


def open_package(job: Job) -> BoundedZip:
    """The job's file as a ``BoundedZip`` under its limits; a damaged central directory is noted on the
    job (the document is then read from its local headers, as far as it goes)."""
    package = BoundedZip(job.path, max_expanded_bytes=job.limits.max_expanded_bytes)
    if package.damage:
        job.notes.append(package.damage)
    return package
