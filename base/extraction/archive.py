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


class BoundedZip:
    """The members of one ZIP file, read under a budget of inflated bytes.

    ``max_expanded_bytes`` bounds each member and the sum of all members read; ``names`` lists the
    members; ``chunks(name)`` yields a member's bytes. Raises ``ExtractionCut`` at a bound,
    ``ArchiveError`` for a file that is no ZIP archive or lacks the member asked for.
    """

    def __init__(self, path: str, *, max_expanded_bytes: int) -> None:
        self.path = path
        self.max_expanded_bytes = max_expanded_bytes
        self.expanded = 0
        #: Why the archive is read from its local headers (None when the central directory is sound).
        self.damage: str | None = None
        self._handle = open(path, "rb")  # noqa: SIM115 - closed by close() / the context manager
        self._zip: zipfile.ZipFile | None = None
        self._local: dict[str, tuple[int, int, int, int]] = {}
        try:
            listed = listed_members(self._handle)
            if listed is not None and listed > MAX_MEMBERS:
                raise ExtractionCut(f"the archive lists {listed} members (more than {MAX_MEMBERS})")
            if listed is None:
                self.damage = "the ZIP central directory is missing (a truncated file?)"
            else:
                self._handle.seek(0)
                try:
                    self._zip = zipfile.ZipFile(self._handle)
                except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, struct.error) as exc:
                    self.damage = f"the ZIP central directory is unreadable ({exc})"
            if self._zip is None:
                self._local = self._scan_local_headers()
                if not self._local:
                    raise ArchiveError(f"not a ZIP archive: {self.damage}")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> BoundedZip:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        self._handle.close()

    @property
    def names(self) -> list[str]:
        if self._zip is not None:
            return self._zip.namelist()
        return list(self._local)

    def __contains__(self, name: str) -> bool:
        if self._zip is not None:
            try:
                self._zip.getinfo(name)
            except KeyError:
                return False
            return True
        return name in self._local

    def chunks(self, name: str) -> Iterator[bytes]:
        """The inflated bytes of member ``name``, CHUNK at a time, each counted against the budget."""
        if name not in self:
            raise ArchiveError(f"the archive has no member {name!r}")
        produced = 0
        compressed = 1
        source = self._zip_chunks(name) if self._zip is not None else self._local_chunks(name)
        if self._zip is not None:
            compressed = max(1, self._zip.getinfo(name).compress_size)
        else:
            compressed = max(1, self._local[name][2])
        for chunk in source:
            produced += len(chunk)
            self.expanded += len(chunk)
            if produced > self.max_expanded_bytes or self.expanded > self.max_expanded_bytes:
                raise ExtractionCut(
                    f"the archive expands past {self.max_expanded_bytes} bytes (a decompression bomb?)")
            if produced > RATIO_GRACE and produced > MAX_RATIO * compressed:
                raise ExtractionCut(f"member {name} inflates more than {MAX_RATIO}:1 (a decompression bomb?)")
            yield chunk

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

    def _zip_chunks(self, name: str) -> Iterator[bytes]:
        assert self._zip is not None
        try:
            with self._zip.open(name) as member:
                while chunk := member.read(CHUNK):
                    yield chunk
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
            raise ArchiveError(f"member {name} is damaged: {exc}") from exc

    def _scan_local_headers(self) -> dict[str, tuple[int, int, int, int]]:
        """name -> (data offset, method, compressed size, flags) for every local header found in order
        from the start (where the central directory cannot be trusted)."""
        found: dict[str, tuple[int, int, int, int]] = {}
        handle = self._handle
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        offset = 0
        while offset + _LOCAL_HEADER.size <= size and len(found) < MAX_MEMBERS:
            handle.seek(offset)
            header = handle.read(_LOCAL_HEADER.size)
            (signature, _version, flags, method, _time, _date, _crc, compressed, _size, name_len,
             extra_len) = _LOCAL_HEADER.unpack(header)
            if signature != _LOCAL_SIGNATURE or name_len > MAX_NAME:
                break
            name = handle.read(name_len).decode("utf-8" if flags & 0x800 else "cp437", "replace")
            data_at = offset + _LOCAL_HEADER.size + name_len + extra_len
            found.setdefault(name, (data_at, method, compressed, flags))
            if flags & 0x08 and compressed == 0:
                # Sizes follow the data (a data descriptor): find the end by inflating the member.
                end = self._deflate_end(data_at) if method == zipfile.ZIP_DEFLATED else None
                if end is None:
                    break
                offset = end
                # Skip the data descriptor: optional signature, CRC, two sizes (32-bit).
                handle.seek(offset)
                descriptor = handle.read(16)
                offset += 16 if descriptor[:4] == b"PK\x07\x08" else 12
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

    def _local_chunks(self, name: str) -> Iterator[bytes]:
        data_at, method, compressed, flags = self._local[name]
        handle = self._handle
        handle.seek(data_at)
        known_size = not (flags & 0x08 and compressed == 0)
        if method == zipfile.ZIP_STORED:
            left = compressed if known_size else 0
            while left > 0:
                block = handle.read(min(CHUNK, left))
                if not block:
                    raise ArchiveError(f"member {name} is cut short (truncated file)")
                left -= len(block)
                yield block
            return
        if method != zipfile.ZIP_DEFLATED:
            raise ArchiveError(f"member {name} uses compression method {method}, which is not read")
        inflater = zlib.decompressobj(-15)
        remaining: int | None = compressed if known_size else None
        position = data_at
        while not inflater.eof:
            handle.seek(position)
            block = handle.read(CHUNK if remaining is None else min(CHUNK, remaining))
            if not block:
                raise ArchiveError(f"member {name} is cut short (truncated file)")
            position += len(block)
            if remaining is not None:
                remaining -= len(block)
            try:
                out = inflater.decompress(block, CHUNK)
                while True:
                    if out:
                        yield out
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
