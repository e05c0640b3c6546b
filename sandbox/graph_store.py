"""The state behind the Graph simulator: sites, document libraries (drives), driveItems, and the
change sequence that drives ``root/delta``.

Every mutation stamps the changed item, and each of its ancestor folders (parents first), with the
next number of its drive's change sequence, the way SharePoint's delta feed reports a folder when
something inside it changed. An incremental delta token is then "changes after sequence N", and
paging walks the sequence, so an item changed while a client is paging moves to a later page (it
may be seen twice, never skipped), as the Graph docs warn. A full enumeration walks items in
creation order (parents before children) and its final deltaLink starts from the sequence number
at which it began, so anything changed while it ran is reported again by the next delta.

File content is either ``bytes`` or ``GeneratedContent`` (pseudo-random bytes derived from a seed,
produced on demand), so a 1 GB file costs no memory.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import mimetypes
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import quickxorhash

#: Size of one generated block; content is produced block by block, never whole.
BLOCK_SIZE = 1024 * 1024  # bytes
#: Bytes at the start of each generated block that vary with the block number.
_BLOCK_SALT = 64  # bytes


@dataclass(frozen=True)
class GeneratedContent:
    """Deterministic pseudo-random content of ``size`` bytes derived from ``seed``.

    The same (seed, size) always yields the same bytes; any byte range can be produced without the
    bytes before it beyond one block.
    """

    seed: int
    size: int

    def chunks(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes ``start`` up to ``end`` (exclusive; default the end), one block at most per chunk."""
        end = self.size if end is None else min(end, self.size)
        if start >= end:
            return
        base = hashlib.shake_128(b"base:%d" % self.seed).digest(min(self.size, BLOCK_SIZE))
        block_no = start // BLOCK_SIZE
        while start < end:
            block_start = block_no * BLOCK_SIZE
            block_len = min(BLOCK_SIZE, self.size - block_start)
            salt = hashlib.shake_128(b"block:%d:%d" % (self.seed, block_no)).digest(min(_BLOCK_SALT, block_len))
            block = salt + base[len(salt):block_len]
            lo = start - block_start
            hi = min(end - block_start, block_len)
            yield block[lo:hi]
            start = block_start + hi
            block_no += 1


Content = bytes | GeneratedContent


def content_size(content: Content) -> int:
    """Length of ``content`` in bytes."""
    return content.size if isinstance(content, GeneratedContent) else len(content)


def iter_content(content: Content, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """Bytes ``start`` to ``end`` (exclusive) of ``content`` in chunks of at most ``BLOCK_SIZE``."""
    if isinstance(content, GeneratedContent):
        yield from content.chunks(start, end)
        return
    end = len(content) if end is None else min(end, len(content))
    for pos in range(start, end, BLOCK_SIZE):
        yield content[pos:min(pos + BLOCK_SIZE, end)]


def quick_xor_hash(content: Content) -> str:
    """SharePoint's ``quickXorHash`` of ``content``: base64 of the 20-byte digest."""
    digest = quickxorhash.quickxorhash()
    for chunk in iter_content(content):
        digest.update(chunk)
    return base64.b64encode(digest.digest()).decode("ascii")


def iso_now() -> str:
    """Now in UTC as Graph writes times (``2024-05-02T09:30:00Z``)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def identity(email: str) -> dict[str, Any]:
    """A Graph identitySet for a user known by ``email``."""
    local = email.split("@", 1)[0]
    return {"user": {"email": email, "id": str(uuid.uuid5(uuid.NAMESPACE_URL, email)),
                     "displayName": local.replace(".", " ").title()}}


def _item_id() -> str:
    # SharePoint driveItem ids look like "01" + 32 base32 characters.
    return "01" + base64.b32encode(secrets.token_bytes(20)).decode("ascii")[:32]


@dataclass
class DriveItem:
    """One driveItem (file, folder or the drive's root) and its latest state."""

    id: str
    name: str
    parent_id: str | None
    is_folder: bool
    created_by: dict[str, Any]
    modified_by: dict[str, Any]
    created_at: str
    modified_at: str
    #: Sequence number of the change that created the item (0 until then).
    created_seq: int = 0
    seq: int = 0
    guid: str = field(default_factory=lambda: str(uuid.uuid4()).upper())
    content: Content | None = None
    mime_type: str = ""
    etag_version: int = 1
    ctag_version: int = 1
    deleted: bool = False
    #: Reported instead of the true quickXorHash (fault injection: a corrupt download).
    hash_override: str | None = None
    _hash: str | None = field(default=None, repr=False)
    _hash_of: Content | None = field(default=None, repr=False)

    @property
    def is_root(self) -> bool:
        return self.parent_id is None

    @property
    def etag(self) -> str:
        return f'"{{{self.guid}}},{self.etag_version}"'

    @property
    def ctag(self) -> str:
        return f'"c:{{{self.guid}}},{self.ctag_version}"'

    @property
    def size(self) -> int:
        return content_size(self.content) if self.content is not None else 0

    def quick_xor_hash(self) -> str:
        """The hash Graph reports for this file (computed once per content version)."""
        if self.hash_override is not None:
            return self.hash_override
        if self._hash is None or self._hash_of is not self.content:
            assert self.content is not None
            self._hash = quick_xor_hash(self.content)
            self._hash_of = self.content
        return self._hash


class Drive:
    """A document library: its items by id and its change sequence."""

    def __init__(self, site: Site, name: str, url_name: str, owner: str) -> None:
        self.site = site
        self.name = name
        self.id = "b!" + base64.urlsafe_b64encode(secrets.token_bytes(48)).decode("ascii").rstrip("=")
        self.web_url = f"{site.web_url}/{quote(url_name)}"
        self.created_at = iso_now()
        self.owner = owner
        self.seq = 0
        #: Bumped to invalidate every delta token issued before (a 410 on their next use).
        self.token_epoch = 0
        self.items: dict[str, DriveItem] = {}
        # parent id -> {lowercase name: child id}, live items only (SharePoint names are case-blind).
        self._children: dict[str, dict[str, str]] = {}
        self.root = self._new_item(name="root", parent_id=None, is_folder=True, by=owner)

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _new_item(self, *, name: str, parent_id: str | None, is_folder: bool, by: str) -> DriveItem:
        now = iso_now()
        who = identity(by)
        item = DriveItem(id=_item_id(), name=name, parent_id=parent_id, is_folder=is_folder,
                         created_by=who, modified_by=who, created_at=now, modified_at=now)
        self.items[item.id] = item
        if parent_id is not None:
            self._children.setdefault(parent_id, {})[name.lower()] = item.id
        return item

    def _unlink(self, item: DriveItem) -> None:
        if item.parent_id is not None:
            self._children.get(item.parent_id, {}).pop(item.name.lower(), None)

    def _relink(self, item: DriveItem) -> None:
        if item.parent_id is not None:
            self._children.setdefault(item.parent_id, {})[item.name.lower()] = item.id

    def ancestors(self, item: DriveItem) -> list[DriveItem]:
        """The folders above ``item``, root first."""
        chain: list[DriveItem] = []
        parent_id = item.parent_id
        while parent_id is not None:
            parent = self.items[parent_id]
            chain.append(parent)
            parent_id = parent.parent_id
        return list(reversed(chain))

    def path_of(self, item: DriveItem) -> str:
        """``/drives/{id}/root:/Folder`` for the folder holding ``item`` (Graph's parentReference.path)."""
        names = [a.name for a in self.ancestors(item) if not a.is_root]
        return f"/drives/{self.id}/root:" + "".join("/" + n for n in names)

    def web_url_of(self, item: DriveItem) -> str:
        if item.is_root:
            return self.web_url
        names = [a.name for a in self.ancestors(item) if not a.is_root] + [item.name]
        return self.web_url + "/" + "/".join(quote(n) for n in names)

    def child(self, folder: DriveItem, name: str) -> DriveItem | None:
        child_id = self._children.get(folder.id, {}).get(name.lower())
        return self.items[child_id] if child_id else None

    def children(self, folder: DriveItem) -> list[DriveItem]:
        return [self.items[i] for i in self._children.get(folder.id, {}).values()]

    def touch(self, item: DriveItem, *, by: str, content_changed: bool) -> None:
        """Records a change to ``item``: its ancestors then itself get new sequence numbers."""
        now = iso_now()
        for folder in self.ancestors(item):
            folder.seq = self._next_seq()
            folder.etag_version += 1
            folder.modified_at = now
        if item.seq:
            item.etag_version += 1
            if content_changed:
                item.ctag_version += 1
        item.seq = self._next_seq()
        item.created_seq = item.created_seq or item.seq
        item.modified_at = now
        item.modified_by = identity(by)


class Site:
    """A SharePoint site, addressed by hostname and server-relative path."""

    def __init__(self, hostname: str, path: str, display_name: str) -> None:
        self.hostname = hostname
        self.path = "/" + path.strip("/")
        self.name = self.path.rsplit("/", 1)[-1]
        self.display_name = display_name
        self.id = f"{hostname},{uuid.uuid4()},{uuid.uuid4()}"
        self.web_url = f"https://{hostname}{self.path}"
        self.created_at = iso_now()
        self.drives: list[Drive] = []


@dataclass
class DeltaPage:
    """One page of a delta feed: the items (latest state) and where the feed goes next."""

    items: list[DriveItem]
    #: Sequence number of the last item in the page (the next page starts after it).
    last_seq: int
    #: True when more changes follow (a nextLink); False on the last page (a deltaLink).
    more: bool


class GraphStore:
    """Sites and drives of one SharePoint tenant, safe to use from the server's threads.

    hostname: the tenant's SharePoint host (default ``kmrl.sharepoint.com``).
    Paths given to the mutation methods are drive-relative (``Folder/Sub/file.pdf``).
    """

    def __init__(self, hostname: str = "kmrl.sharepoint.com") -> None:
        self.hostname = hostname
        self.lock = threading.RLock()
        self.sites: dict[str, Site] = {}
        self.drives: dict[str, Drive] = {}
        #: Called with a drive after each change to it (file put, rename, delete, new folder), store
        #: lock held: the subscriptions of the simulator queue their notifications here.
        self.listeners: list[Callable[[Drive], None]] = []

    def _changed(self, drive: Drive) -> None:
        for listener in list(self.listeners):
            listener(drive)

    # -- sites and drives ---------------------------------------------------------------------
    def add_site(self, path: str, display_name: str | None = None) -> Site:
        """Creates the site at server-relative ``path`` (``sites/operations``) or returns it."""
        with self.lock:
            key = "/" + path.strip("/").lower()
            if key not in self.sites:
                name = path.strip("/").rsplit("/", 1)[-1]
                self.sites[key] = Site(self.hostname, path, display_name or name.title())
            return self.sites[key]

    def site_by_path(self, path: str) -> Site | None:
        with self.lock:
            return self.sites.get("/" + path.strip("/").lower())

    def site_by_id(self, site_id: str) -> Site | None:
        with self.lock:
            for site in self.sites.values():
                if site.id.lower() == site_id.lower():
                    return site
            return None

    def add_drive(self, site_path: str, name: str, *, url_name: str | None = None,
                  owner: str = "sharepoint.admin@kmrl.co.in") -> Drive:
        """Creates the document library ``name`` on the site (creating the site too) or returns it.

        ``url_name`` is the library's folder in URLs (SharePoint calls "Documents" "Shared Documents").
        """
        with self.lock:
            site = self.add_site(site_path)
            for drive in site.drives:
                if drive.name == name:
                    return drive
            if url_name is None:
                url_name = "Shared Documents" if name == "Documents" else name
            drive = Drive(site, name, url_name, owner)
            drive.touch(drive.root, by=owner, content_changed=False)
            site.drives.append(drive)
            self.drives[drive.id] = drive
            return drive

    def drive(self, site_path: str, name: str) -> Drive:
        """The library ``name`` of the site at ``site_path``; KeyError when absent."""
        with self.lock:
            site = self.site_by_path(site_path)
            for drive in site.drives if site else []:
                if drive.name == name:
                    return drive
            raise KeyError(f"no library {name!r} on {site_path!r}")

    # -- items ----------------------------------------------------------------------------------
    def find(self, drive: Drive, path: str) -> DriveItem | None:
        """The live item at drive-relative ``path``, or None."""
        with self.lock:
            node = drive.root
            for part in [p for p in path.strip("/").split("/") if p]:
                found = drive.child(node, part)
                if found is None:
                    return None
                node = found
            return node

    def make_folder(self, drive: Drive, path: str, *, by: str = "records@kmrl.co.in") -> DriveItem:
        """Creates the folder at ``path`` and any missing folders above it; returns it."""
        with self.lock:
            node = drive.root
            for part in [p for p in path.strip("/").split("/") if p]:
                found = drive.child(node, part)
                if found is None:
                    found = drive._new_item(name=part, parent_id=node.id, is_folder=True, by=by)
                    drive.touch(found, by=by, content_changed=False)
                    self._changed(drive)
                elif not found.is_folder:
                    raise ValueError(f"{part!r} in {path!r} is a file")
                node = found
            return node

    def put_file(self, drive: Drive, path: str, content: Content, *, mime_type: str | None = None,
                 by: str = "records@kmrl.co.in") -> DriveItem:
        """Creates or overwrites the file at ``path`` (folders above it are created); returns it."""
        with self.lock:
            folder_path, _, name = path.strip("/").rpartition("/")
            if not name:
                raise ValueError("a file needs a name")
            folder = self.make_folder(drive, folder_path, by=by) if folder_path else drive.root
            item = drive.child(folder, name)
            if item is not None and item.is_folder:
                raise ValueError(f"{path!r} is a folder")
            if item is None:
                item = drive._new_item(name=name, parent_id=folder.id, is_folder=False, by=by)
            item.content = content
            item.hash_override = None
            item.mime_type = mime_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
            drive.touch(item, by=by, content_changed=True)
            self._changed(drive)
            return item

    def rename(self, drive: Drive, path: str, new_name: str, *, by: str = "records@kmrl.co.in") -> DriveItem:
        """Renames the item at ``path`` (its eTag changes, its cTag does not)."""
        with self.lock:
            item = self._existing(drive, path)
            drive._unlink(item)
            item.name = new_name
            drive._relink(item)
            drive.touch(item, by=by, content_changed=False)
            self._changed(drive)
            return item

    def move(self, drive: Drive, path: str, folder_path: str, *, by: str = "records@kmrl.co.in") -> DriveItem:
        """Moves the item at ``path`` into the folder at ``folder_path`` ("" for the root; created when
        missing), keeping its name (its eTag changes, its cTag does not)."""
        with self.lock:
            item = self._existing(drive, path)
            if item.is_root:
                raise ValueError("the root cannot be moved")
            node: DriveItem | None = drive.root
            for part in [p for p in folder_path.strip("/").split("/") if p]:  # before any folder is made
                node = drive.child(node, part) if node is not None else None
                if node is item:
                    raise ValueError(f"{path!r} cannot move into itself")
            folder = self.make_folder(drive, folder_path, by=by) if folder_path.strip("/") else drive.root
            if drive.child(folder, item.name) is not None:
                raise ValueError(f"{folder_path!r} already holds {item.name!r}")
            drive._unlink(item)
            item.parent_id = folder.id
            drive._relink(item)
            drive.touch(item, by=by, content_changed=False)
            return item

    def delete(self, drive: Drive, path: str, *, by: str = "records@kmrl.co.in") -> list[DriveItem]:
        """Deletes the item at ``path`` (a folder with everything in it); returns what was deleted."""
        with self.lock:
            item = self._existing(drive, path)
            if item.is_root:
                raise ValueError("the root cannot be deleted")
            gone: list[DriveItem] = []
            stack = [item]
            while stack:
                node = stack.pop()
                stack.extend(drive.children(node))
                gone.append(node)
            # Children first, so a client applying the feed in order sees an empty folder go.
            for node in reversed(gone):
                drive.touch(node, by=by, content_changed=False)
                drive._unlink(node)
                node.deleted = True
            self._changed(drive)
            return gone

    def corrupt_hash(self, drive: Drive, path: str) -> DriveItem:
        """Makes Graph report a wrong quickXorHash for the file at ``path`` (until it changes)."""
        with self.lock:
            item = self._existing(drive, path)
            true_hash = base64.b64decode(item.quick_xor_hash())
            item.hash_override = base64.b64encode(bytes(b ^ 0xFF for b in true_hash)).decode("ascii")
            return item

    def _existing(self, drive: Drive, path: str) -> DriveItem:
        item = self.find(drive, path)
        if item is None:
            raise KeyError(f"no item at {path!r} in {drive.name!r}")
        return item

    # -- delta ----------------------------------------------------------------------------------
    def enumeration_page(self, drive: Drive, *, after: int, top: int) -> DeltaPage:
        """A page of a full enumeration: live items in creation order (parents before children),
        those created after sequence ``after``; ``last_seq`` is the last one's creation number."""
        with self.lock:
            live = sorted((i for i in drive.items.values() if not i.deleted and i.created_seq > after),
                          key=lambda i: i.created_seq)
            page = live[:top]
            more = len(live) > top
            return DeltaPage(items=page, last_seq=page[-1].created_seq if more else drive.seq, more=more)

    def changes_page(self, drive: Drive, *, after: int, top: int) -> DeltaPage:
        """A page of changes after sequence ``after``, each item once in its latest state.

        A deleted item is reported only if it existed at ``after`` (a client cannot have seen one
        created later).
        """
        with self.lock:
            changed = sorted((i for i in drive.items.values()
                              if i.seq > after and (not i.deleted or i.created_seq <= after)),
                             key=lambda i: i.seq)
            page = changed[:top]
            more = len(changed) > top
            return DeltaPage(items=page, last_seq=page[-1].seq if more else drive.seq, more=more)
