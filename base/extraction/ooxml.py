"""The Office Open XML package (DOCX, XLSX, PPTX): its relationships and where its parts are.

A package names its parts through relationships (``_rels/.rels``, ``word/_rels/document.xml.rels``):
the main part is the target of the ``officeDocument`` relationship, headers, sheets and slides are
targets of the main part's. Both the transitional and the strict (ISO 29500) namespaces are read.
"""

from __future__ import annotations

import posixpath

from base.extraction import Job
from base.extraction.archive import BoundedZip
from base.extraction.xmlstream import XmlHandler, parse, split_name

#: Bytes a relationships part may have (they list parts: kilobytes in practice).
MAX_RELS_BYTES = 8 * 1024 * 1024

#: The relationships namespaces (transitional, strict) of ``r:id`` attributes.
R_NAMESPACES = ("http://schemas.openxmlformats.org/officeDocument/2006/relationships",
                "http://purl.oclc.org/ooxml/officeDocument/relationships")
#: Markup compatibility: content under mc:Fallback repeats mc:Choice for older readers.
MC_NAMESPACE = "http://schemas.openxmlformats.org/markup-compatibility/2006"


class Relationship:
    """One relationship: its type's last segment (e.g. 'header', 'worksheet') and the target part."""

    __slots__ = ("kind", "target")

    def __init__(self, kind: str, target: str) -> None:
        self.kind = kind
        self.target = target


class _RelsHandler(XmlHandler):
    def __init__(self, base: str) -> None:
        self.base = base
        self.found: dict[str, Relationship] = {}

    def start(self, name: str, attrs: dict[str, str]) -> None:
        if split_name(name)[1] != "Relationship" or attrs.get("TargetMode") == "External":
            return
        target = attrs.get("Target", "")
        path = target.lstrip("/") if target.startswith("/") else posixpath.join(self.base, target)
        self.found[attrs.get("Id", "")] = Relationship(attrs.get("Type", "").rsplit("/", 1)[-1],
                                                       posixpath.normpath(path))


def relationships(package: BoundedZip, part: str, job: Job) -> dict[str, Relationship]:
    """id -> Relationship of ``part`` (``""`` for the package's own); empty when it has none."""
    folder, _, leaf = part.rpartition("/")
    rels = posixpath.join(folder, "_rels", f"{leaf}.rels")
    if rels not in package:
        return {}
    handler = _RelsHandler(folder)
    parse([package.read(rels, limit=MAX_RELS_BYTES)], handler, job)
    return handler.found


def main_part(package: BoundedZip, job: Job, default: str) -> str:
    """The package's main part (the officeDocument relationship's target), else ``default``."""
    for relation in relationships(package, "", job).values():
        if relation.kind == "officeDocument" and relation.target in package:
            return relation.target
    return default


def r_id(attrs: dict[str, str]) -> str | None:
    """The ``r:id`` attribute of an element, in either namespace."""
    for namespace in R_NAMESPACES:
        value = attrs.get(f"{namespace} id")
        if value is not None:
            return value
    return None
