"""Writes OLE compound files (MS-CFB, version 3) for tests: the container of Outlook .msg files.

No library on the registries writes a new compound file (olefile only reads, or rewrites a stream in
place), so tests build them here to the specification: 512-byte sectors, a FAT, a mini stream of
64-byte sectors with its mini FAT for streams under 4096 bytes, and a directory whose siblings form
a binary search tree in the CFB order (shorter names first, then by upper-cased name), all nodes
black, which MS-CFB 2.6.4 allows.

``compound_file({"stream": b"...", "storage": {"inner": b"..."}})`` returns the file's bytes.
``outlook_message(...)`` lays out the streams of an Outlook message (MS-OXMSG) in one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

SECTOR = 512
MINI_SECTOR = 64
MINI_CUTOFF = 4096
FREE, END, FAT_SECTOR, NO_STREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF


@dataclass
class _Entry:
    name: str
    kind: int  # 1 storage, 2 stream, 5 root
    data: bytes = b""
    children: list[_Entry] = field(default_factory=list)
    left: int = NO_STREAM
    right: int = NO_STREAM
    child: int = NO_STREAM
    start: int = END
    size: int = 0


def _order(entry: _Entry) -> tuple[int, str]:
    return len(entry.name), entry.name.upper()


def _entries(tree: dict[str, object], name: str, kind: int) -> _Entry:
    node = _Entry(name, kind)
    for child_name, value in tree.items():
        if isinstance(value, dict):
            node.children.append(_entries(value, child_name, 1))
        else:
            assert isinstance(value, bytes)
            node.children.append(_Entry(child_name, 2, data=value))
    node.children.sort(key=_order)
    return node


def _flatten(node: _Entry, table: list[_Entry]) -> None:
    for child in node.children:
        table.append(child)
    for child in node.children:
        _flatten(child, table)


def _link(node: _Entry, index: dict[int, int]) -> None:
    def balanced(children: list[_Entry]) -> int:
        if not children:
            return NO_STREAM
        middle = len(children) // 2
        root = children[middle]
        root.left = balanced(children[:middle])
        root.right = balanced(children[middle + 1:])
        return index[id(root)]

    node.child = balanced(node.children)
    for child in node.children:
        _link(child, index)


def compound_file(tree: dict[str, object]) -> bytes:
    root = _entries(tree, "Root Entry", 5)
    table = [root]
    _flatten(root, table)
    index = {id(entry): number for number, entry in enumerate(table)}
    _link(root, index)

    # The mini stream: every small stream, 64-byte sector by sector, chained in the mini FAT.
    mini = bytearray()
    mini_fat: list[int] = []
    big: list[_Entry] = []
    for entry in table[1:]:
        if entry.kind != 2:
            continue
        entry.size = len(entry.data)
        if entry.size == 0:
            entry.start = END
        elif entry.size < MINI_CUTOFF:
            first = len(mini_fat)
            count = -(-entry.size // MINI_SECTOR)
            mini_fat.extend(range(first + 1, first + count))
            mini_fat.append(END)
            entry.start = first
            mini += entry.data.ljust(count * MINI_SECTOR, b"\x00")
        else:
            big.append(entry)

    sectors: list[bytes] = []
    fat: list[int] = []

    def place(data: bytes, marker: int | None = None) -> int:
        count = max(1, -(-len(data) // SECTOR))
        first = len(sectors)
        for number in range(count):
            sectors.append(data[number * SECTOR:(number + 1) * SECTOR].ljust(SECTOR, b"\x00"))
            fat.append(marker if marker is not None else (first + number + 1 if number < count - 1 else END))
        return first

    for entry in big:
        entry.start = place(entry.data)
    root.start, root.size = (place(bytes(mini)), len(mini)) if mini else (END, 0)
    mini_fat_bytes = struct.pack(f"<{len(mini_fat)}I", *mini_fat)
    mini_fat_bytes += struct.pack("<I", FREE) * ((-len(mini_fat)) % (SECTOR // 4))
    mini_fat_start = place(mini_fat_bytes) if mini_fat else END
    mini_fat_sectors = len(mini_fat_bytes) // SECTOR if mini_fat else 0

    directory = bytearray()
    for entry in table:
        encoded = entry.name.encode("utf-16-le")
        directory += struct.pack(
            "<64sHBBIII16sIQQIQ", encoded.ljust(64, b"\x00"), len(encoded) + 2, entry.kind, 1, entry.left,
            entry.right, entry.child, b"\x00" * 16, 0, 0, 0, entry.start, entry.size)
    directory += (b"\x00" * 64 + struct.pack("<HBBIII", 0, 0, 0, NO_STREAM, NO_STREAM, NO_STREAM)
                  + b"\x00" * 48) * ((-len(table)) % 4)
    directory_start = place(bytes(directory))

    # FAT sectors describe themselves too: add them until their count covers every sector.
    fat_count = 1
    while fat_count * (SECTOR // 4) < len(sectors) + fat_count:
        fat_count += 1
    assert fat_count <= 109, "more FAT sectors than the header's DIFAT holds"
    fat_start = len(sectors)
    fat.extend([FAT_SECTOR] * fat_count)
    fat_bytes = struct.pack(f"<{len(fat)}I", *fat) + struct.pack("<I", FREE) * (fat_count * 128 - len(fat))
    for number in range(fat_count):
        sectors.append(fat_bytes[number * SECTOR:(number + 1) * SECTOR])

    difat = [fat_start + number for number in range(fat_count)] + [FREE] * (109 - fat_count)
    header = struct.pack(
        "<8s16sHHHHH6sIIIIIIIII", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b"\x00" * 16, 0x3E, 3, 0xFFFE, 9, 6,
        b"\x00" * 6, 0, fat_count, directory_start, 0, MINI_CUTOFF, mini_fat_start, mini_fat_sectors, END, 0)
    header += struct.pack("<109I", *difat)
    assert len(header) == SECTOR
    return header + b"".join(sectors)


def _properties(header: bytes, properties: list[tuple[int, int, bytes]]) -> bytes:
    """A __properties_version1.0 stream: ``header`` then 16-byte entries (tag, flags, 8-byte value)."""
    body = b"".join(struct.pack("<II", tag, 0x06) + value.ljust(8, b"\x00") for tag, _flags, value in properties)
    return header + body


def _string_stream(tag_id: int, text: str, *, unicode: bool = True, code_page: str = "cp1252") -> tuple[str, bytes]:
    if unicode:
        return f"__substg1.0_{tag_id:04X}001F", text.encode("utf-16-le")
    return f"__substg1.0_{tag_id:04X}001E", text.encode(code_page)


def outlook_message(*, subject: str, body: str | None = None, html: bytes | None = None,
                    attachments: list[tuple[str, bytes]] = (), unicode: bool = True,  # type: ignore[assignment]
                    code_page: int = 1252) -> bytes:
    """The bytes of an Outlook message (MS-OXMSG): a compound file whose top level holds the message's
    property streams, a name-to-id map storage, and one storage per attachment."""
    codec = f"cp{code_page}"
    streams: dict[str, object] = {}
    variable: list[tuple[int, int, bytes]] = []

    def add_string(target: dict[str, object], props: list[tuple[int, int, bytes]], tag_id: int, text: str) -> None:
        name, data = _string_stream(tag_id, text, unicode=unicode, code_page=codec)
        target[name] = data + (b"\x00\x00" if unicode else b"\x00")
        props.append((int(name[-8:], 16), 6, struct.pack("<I", len(target[name]))))  # type: ignore[arg-type]

    add_string(streams, variable, 0x001A, "IPM.Note")
    add_string(streams, variable, 0x0037, subject)
    if body is not None:
        add_string(streams, variable, 0x1000, body)
    if html is not None:
        streams["__substg1.0_10130102"] = html
        variable.append((0x10130102, 6, struct.pack("<I", len(html))))
    fixed = [(0x3FFD0003, 6, struct.pack("<i", code_page))]
    for number, (filename, data) in enumerate(attachments):
        storage: dict[str, object] = {}
        props: list[tuple[int, int, bytes]] = []
        add_string(storage, props, 0x3707, filename)
        add_string(storage, props, 0x3704, filename[:8])
        storage["__substg1.0_37010102"] = data
        props.append((0x37010102, 6, struct.pack("<I", len(data))))
        props.append((0x37050003, 6, struct.pack("<i", 1)))  # PR_ATTACH_METHOD: by value
        storage["__properties_version1.0"] = _properties(b"\x00" * 8, props)
        streams[f"__attach_version1.0_#{number:08X}"] = storage
    header = struct.pack("<8sIIII8s", b"\x00" * 8, 0, len(attachments), 0, len(attachments), b"\x00" * 8)
    streams["__properties_version1.0"] = _properties(header, fixed + variable)
    streams["__nameid_version1.0"] = {"__substg1.0_00020102": b"", "__substg1.0_00030102": b"",
                                      "__substg1.0_00040102": b""}
    return compound_file(streams)
