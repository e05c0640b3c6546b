"""Renames and moves at the source: the same content under a new name or in a new place.

A connector whose items can be renamed or moved without a new ``version`` (a SharePoint file keeps
its cTag when renamed or moved) says where each item is in ``Item.location`` (its path, name
included). The pipeline keeps a digest of it in the item's record (``ItemRecord.location``, the
``loc`` field). When an item comes again with the version recorded but another location, its bytes
are not read again: the Hub gets a metadata update of the document it already holds
(``Hub.update_metadata``, README "The Knowledge Hub contract"), with the new name, title, URL and
extras, and the record takes the new digest. The update is idempotent (the Hub replaces those
fields of that source item), so a retried one or one sent again after a crash changes nothing more
and never makes a second document.

A record written before its connector said where items are (or by a release without this) has no
digest: the first time its item comes again with the same version, the update is sent (the item
was listed because something about it changed, and nothing says it was not its name), and the
record carries the digest from then on.
"""

from __future__ import annotations

import hashlib
from typing import Any

from base.contract import Item
from base.document import sanitize_filename
from base.state import ItemRecord

#: Hex digits of the location's SHA-256 kept in the item record: collisions between two places of
#: one item are out of reach, and the record stays small.
DIGEST_HEX = 20


def location_digest(location: str) -> str:
    """What an item record keeps of ``location`` ("" for none)."""
    if not location:
        return ""
    return hashlib.sha256(location.encode("utf-8", "surrogatepass")).hexdigest()[:DIGEST_HEX]


def relocated(known: ItemRecord | None, item: Item) -> bool:
    """Whether ``item`` sits elsewhere (or under another name) than when ``known`` was recorded, for a
    document the Hub holds. Never for a connector that gives no location, an item never delivered,
    or one held back by a content rule (the Hub has no document of it to update)."""
    if known is None or not item.location or not known.hub_id or known.held:
        return False
    return known.location != location_digest(item.location)


def metadata_update(source: str, scope: str, item: Item, known: ItemRecord) -> dict[str, Any]:
    """The metadata update of the document ``known`` names, for ``item`` where it is now: the fields
    an upload's metadata would carry for them (``base.hub_parts.METADATA_FIELDS``)."""
    return {
        "source": source, "scope": scope, "source_id": item.source_id, "sha256": known.sha256,
        "version": item.version, "filename": sanitize_filename(item.filename), "title": item.title,
        "source_url": item.source_url, "modified_at": item.modified_at, "extra": dict(item.metadata),
    }
