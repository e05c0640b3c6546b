"""What the Knowledge Hub simulator received: documents, their sources, and counts, on disk and in memory.

``HubStore`` is the simulator's state without HTTP: blobs under ``<data_dir>/blobs/<sha256>``, uploads
spooled in ``<data_dir>/incoming`` (same file system, so storing is a rename), and optionally an
``index.json`` written atomically after every change. Every method is safe to call from many threads.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any


@dataclass
class HubDocument:
    """One document the Hub stored.

    id: the Hub's document id. sha256, size: of the stored bytes. path: where the bytes are.
    metadata: the metadata of the upload that stored it, with the fields of later enrichment updates.
    text_path, text_bytes: where its text part is kept and its size (None / 0: it came without one).
    enrichment_updates: how many enrichment updates it received. sources: every source item known to
    carry this content (dicts with source, source_id, version, via ("upload" or "provenance"), deleted,
    and the fields of its last metadata update: filename, title, source_url, modified_at, extra).
    metadata_updates: how many metadata updates (renames, moves) it received.
    superseded / superseded_by: a later upload named this one as its previous_sha256.
    deleted: every source item of this document was deleted.
    """

    id: str
    sha256: str
    size: int
    path: str
    metadata: dict[str, Any]
    sources: list[dict[str, Any]] = field(default_factory=list)
    superseded: bool = False
    superseded_by: str | None = None
    deleted: bool = False
    stored_at: float = field(default_factory=time.time)
    text_path: str | None = None
    text_bytes: int = 0
    enrichment_updates: int = 0
    metadata_updates: int = 0

    def text(self) -> str | None:
        """The stored text, or None when the document has none."""
        return Path(self.text_path).read_text(encoding="utf-8") if self.text_path else None

    def has_source(self, source: str, source_id: str) -> dict[str, Any] | None:
        """The source entry for (source, source_id), or None."""
        for entry in self.sources:
            if entry["source"] == source and entry["source_id"] == source_id:
                return entry
        return None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class HashingSpool:
    """A file part streamed to a temp file, hashed (sha256) and counted as it is written.

    File-like enough for werkzeug's multipart parser (write, seek, read, flush, close).
    """

    def __init__(self, directory: Path) -> None:
        fd, name = tempfile.mkstemp(dir=directory, prefix="upload-", suffix=".part")
        self.path = Path(name)
        self.file: IO[bytes] = os.fdopen(fd, "w+b")
        self._hash = hashlib.sha256()
        self.size = 0

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self.file.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def read(self, size: int = -1) -> bytes:
        return self.file.read(size)

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    def discard(self) -> None:
        """Closes and removes the temp file (nothing to remove once it was stored)."""
        self.file.close()
        self.path.unlink(missing_ok=True)


def source_entry(metadata: dict[str, Any], *, via: str) -> dict[str, Any]:
    """The record of one source item carrying a document, from upload or provenance metadata."""
    return {"source": str(metadata.get("source")), "source_id": str(metadata.get("source_id")),
            "version": metadata.get("version"), "via": via, "deleted": False}


class HubStore:
    """Documents and counts of one simulator.

    data_dir: where ``blobs/``, ``incoming/`` and ``index.json`` live.
    persist: write ``index.json`` after every change, and load it when present at start.
    """

    def __init__(self, data_dir: Path, *, persist: bool = False) -> None:
        self.data_dir = data_dir
        self.blob_dir = data_dir / "blobs"
        self.text_dir = data_dir / "texts"
        self.incoming_dir = data_dir / "incoming"
        self.index_path = data_dir / "index.json"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.text_dir.mkdir(parents=True, exist_ok=True)
        self.incoming_dir.mkdir(parents=True, exist_ok=True)
        self.persist = persist
        self.lock = threading.RLock()
        self.documents: dict[str, HubDocument] = {}
        self.uploads_per_key: dict[str, int] = {}
        self.stored_per_key: dict[str, int] = {}
        self.deletions: list[dict[str, Any]] = []
        self.provenance: list[dict[str, Any]] = []
        self.metadata_updates: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self._by_sha256: dict[str, str] = {}
        self._next_seq = 1
        if persist and self.index_path.exists():
            self._load()

    def new_spool(self) -> HashingSpool:
        """A temp file for an incoming upload, on the blobs' file system."""
        return HashingSpool(self.incoming_dir)

    def count_upload(self, key: str) -> None:
        """Counts one upload request received with Idempotency-Key ``key``."""
        with self.lock:
            self.uploads_per_key[key] = self.uploads_per_key.get(key, 0) + 1
            self.save()

    def record_request(self, entry: dict[str, Any]) -> None:
        """Appends one line to the request log (method, endpoint, key, status, fault)."""
        with self.lock:
            self.requests.append(entry)

    def by_sha256(self, sha256: str) -> HubDocument | None:
        """The stored document with that content, or None."""
        with self.lock:
            doc_id = self._by_sha256.get(sha256)
            return self.documents.get(doc_id) if doc_id else None

    def get(self, doc_id: str) -> HubDocument | None:
        with self.lock:
            return self.documents.get(doc_id)

    def store(self, sha256: str, metadata: dict[str, Any], spool: HashingSpool,
              text: HashingSpool | None = None) -> tuple[HubDocument, bool]:
        """Stores the spooled bytes (and the spooled ``text`` part, already checked as UTF-8) once per
        sha256: (document, True) the first time, (document, False) after, leaving the first's text.

        A repeat from another source item adds that item to the document's sources. A first store whose
        metadata names a known ``previous_sha256`` marks that document superseded by this one.
        """
        entry = source_entry(metadata, via="upload")
        with self.lock:
            existing = self.by_sha256(sha256)
            if existing is not None:
                if existing.has_source(entry["source"], entry["source_id"]) is None:
                    existing.sources.append(entry)
                    self.save()
                return existing, False
            spool.close()
            blob = self.blob_dir / sha256
            os.replace(spool.path, blob)
            doc = HubDocument(id=f"doc-{self._next_seq:06d}", sha256=sha256, size=spool.size, path=str(blob),
                              metadata=metadata, sources=[entry])
            if text is not None:
                text.close()
                text_path = self.text_dir / f"{doc.id}.txt"
                os.replace(text.path, text_path)
                doc.text_path, doc.text_bytes = str(text_path), text.size
            self._next_seq += 1
            self.documents[doc.id] = doc
            self._by_sha256[sha256] = doc.id
            self.stored_per_key[sha256] = self.stored_per_key.get(sha256, 0) + 1
            previous = str(metadata.get("previous_sha256") or "").lower()
            older = self.by_sha256(previous) if previous and previous != sha256 else None
            if older is not None:
                older.superseded = True
                older.superseded_by = doc.id
            self.save()
            return doc, True

    def update_enrichment(self, doc: HubDocument, fields: dict[str, Any], text: str | None) -> None:
        """Replaces ``doc``'s enrichment fields and, unless ``text`` is None, its text ("" removes it)."""
        with self.lock:
            doc.metadata.update(fields)
            doc.enrichment_updates += 1
            if text is not None:
                text_path = self.text_dir / f"{doc.id}.txt"
                if text:
                    data = text.encode("utf-8")
                    tmp = text_path.with_name(f".{text_path.name}.{uuid.uuid4().hex}.tmp")
                    tmp.write_bytes(data)
                    os.replace(tmp, text_path)
                    doc.text_path, doc.text_bytes = str(text_path), len(data)
                else:
                    text_path.unlink(missing_ok=True)
                    doc.text_path, doc.text_bytes = None, 0
            self.save()

    def update_metadata(self, doc: HubDocument, source: str, source_id: str, fields: dict[str, Any]) -> bool:
        """Replaces ``fields`` (METADATA_FIELDS) of source item (source, source_id) of ``doc``, and of the
        document's own metadata when it was stored from that item; False (nothing changed) when that
        item is not a live source of ``doc``. The same update again leaves the same state."""
        with self.lock:
            entry = doc.has_source(source, source_id)
            if entry is None or entry["deleted"]:
                return False
            entry.update(fields)
            if (doc.metadata.get("source"), doc.metadata.get("source_id")) == (source, source_id):
                doc.metadata.update(fields)
            doc.metadata_updates += 1
            self.metadata_updates.append({"document_id": doc.id, "source": source, "source_id": source_id,
                                          "fields": dict(fields), "at": time.time()})
            self.save()
            return True

    def link(self, doc: HubDocument, metadata: dict[str, Any]) -> int:
        """Records provenance: 201 when (source, source_id) is new for ``doc`` (or was deleted), else 200."""
        entry = source_entry(metadata, via="provenance")
        with self.lock:
            known = doc.has_source(entry["source"], entry["source_id"])
            if known is not None and not known["deleted"]:
                status = 200
            else:
                if known is not None:
                    doc.sources.remove(known)
                doc.sources.append(entry)
                doc.deleted = False
                status = 201
            self.provenance.append({"document_id": doc.id, "source": entry["source"],
                                    "source_id": entry["source_id"], "status": status, "metadata": metadata})
            self.save()
            return status

    def delete(self, source: str, source_id: str) -> list[str]:
        """Marks that source item deleted wherever it is recorded; returns the ids of the documents hit.

        A document is ``deleted`` once every one of its source items is.
        """
        with self.lock:
            hit: list[str] = []
            for doc in self.documents.values():
                entry = doc.has_source(source, source_id)
                if entry is not None:
                    entry["deleted"] = True
                    doc.deleted = all(e["deleted"] for e in doc.sources)
                    hit.append(doc.id)
            self.deletions.append({"source": source, "source_id": source_id, "status": 204 if hit else 404,
                                   "document_ids": hit, "at": time.time()})
            self.save()
            return hit

    def reset(self) -> None:
        """Forgets every document and count and removes the stored bytes."""
        with self.lock:
            self.documents.clear()
            self.uploads_per_key.clear()
            self.stored_per_key.clear()
            self.deletions.clear()
            self.provenance.clear()
            self.metadata_updates.clear()
            self.requests.clear()
            self._by_sha256.clear()
            self._next_seq = 1
            for blob in [*self.blob_dir.iterdir(), *self.text_dir.iterdir()]:
                blob.unlink(missing_ok=True)
            self.save()

    def snapshot(self) -> dict[str, Any]:
        """Everything received, JSON-ready and consistent (taken under the lock)."""
        with self.lock:
            return {
                "documents": {doc_id: doc.to_json() for doc_id, doc in self.documents.items()},
                "uploads_per_key": dict(self.uploads_per_key),
                "stored_per_key": dict(self.stored_per_key),
                "deletions": list(self.deletions),
                "provenance": list(self.provenance),
                "metadata_updates": list(self.metadata_updates),
                "requests": list(self.requests),
            }

    def save(self) -> None:
        """Writes index.json atomically (temp file, then rename); does nothing unless ``persist`` is on."""
        if not self.persist:
            return
        with self.lock:
            snapshot = self.snapshot()
            snapshot["next_seq"] = self._next_seq
            tmp = self.index_path.with_name(f".index-{uuid.uuid4().hex}.tmp")
            tmp.write_text(json.dumps(snapshot), encoding="utf-8")
            os.replace(tmp, self.index_path)

    def _load(self) -> None:
        data = json.loads(self.index_path.read_text(encoding="utf-8"))
        self._next_seq = int(data.get("next_seq", 1))
        for doc_id, raw in data.get("documents", {}).items():
            doc = HubDocument(**raw)
            self.documents[doc_id] = doc
            self._by_sha256[doc.sha256] = doc_id
        self.uploads_per_key.update(data.get("uploads_per_key", {}))
        self.stored_per_key.update(data.get("stored_per_key", {}))
        self.deletions.extend(data.get("deletions", []))
        self.provenance.extend(data.get("provenance", []))
        self.metadata_updates.extend(data.get("metadata_updates", []))
        self.requests.extend(data.get("requests", []))
