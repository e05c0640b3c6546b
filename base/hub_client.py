"""The client side of the Knowledge Hub contract (DESIGN.md), and the local outbox that stands in
for the Hub when ``HUB_API_URL`` is unset.

Both implement ``Hub``: ``upload`` (returns the Hub's document id), ``link`` (provenance),
``update_enrichment`` (new text and enrichment for a document already stored), ``update_metadata``
(a source item of a stored document renamed or moved at the source), ``delete`` and ``health``.
Answers are classified once, here:

| answer                                    | raised / returned                                    |
|-------------------------------------------|------------------------------------------------------|
| 200 / 201 / 409                           | success: the document id                             |
| 401 / 403                                 | ``AuthError`` (stop the run)                         |
| 400 / 413 / 415 / 422                     | ``HubRefused`` (an ``ItemError``: dead-letter)       |
| 404 (link, enrichment or metadata update) | ``HubDocumentMissing``: the Hub has no such document |
| 408 / 429 / 5xx / no answer               | retried by utils.http, then ``TransientError``       |

An upload carries the document's extracted text as a ``text`` part (base/hub_parts.py) unless
``HUB_TEXT_PART=0``; the outbox keeps it as ``text.txt`` beside the file.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

import requests

from base.document import Document, iter_file_chunks
from base.hub_parts import (
    DEFAULT_TEXT_MAX_BYTES,
    METADATA_FIELDS,
    TEXT_FILENAME,
    MultipartBody,
    TextPart,
    enrichment_body,
    metadata_for_text,
    metadata_update_body,
    text_part,
)
from config.settings import Settings
from utils.errors import AuthError, ConfigError, ItemError, TransientError
from utils.http import HttpClient, OriginPolicy, ThrottleGate, json_body
from utils.logging import register_secret

#: The outbox's log of metadata updates in a document's folder (one JSON line per update).
OUTBOX_METADATA_UPDATES = "metadata_updates.jsonl"
#: Names in an outbox folder that a document's own file must not take.
_OUTBOX_RESERVED = {"metadata.json", "sources.jsonl", OUTBOX_METADATA_UPDATES, TEXT_FILENAME}
#: Where the outbox keeps the text in a folder written before text.txt was reserved, whose file is
#: itself named text.txt.
_OUTBOX_TEXT_FALLBACK = "extracted-text.txt"


class HubRefused(ItemError):
    """The Hub refused this document (400/413/415/422): dead-letter it, keep going.

    ``status`` and ``reason`` are the Hub's answer (the runner compares them across documents)."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"Hub refused the document ({status}): {reason}")


class HubDocumentMissing(ItemError):
    """A provenance link named a Hub document that the Hub no longer has: upload instead."""


class Hub(Protocol):
    """Where documents go. Implementations are safe to call again with the same content."""

    def upload(self, document: Document) -> str:
        """Stores the document (idempotent by sha256); returns the Hub's document id."""

    def link(self, hub_id: str, metadata: Mapping[str, Any]) -> None:
        """Records that another source item carries the content of document ``hub_id``."""

    def update_enrichment(self, hub_id: str, enrichment: Mapping[str, Any], text: str | None) -> None:
        """Replaces the enrichment fields (base.document.ENRICHMENT_FIELDS, as ``Document.enrichment()``
        gives them) of document ``hub_id`` and, unless ``text`` is None, its text ("" means it has
        none). Idempotent. Raises ``HubDocumentMissing`` when there is no such document, ValueError
        for an unknown field."""

    def update_metadata(self, hub_id: str, metadata: Mapping[str, Any]) -> None:
        """Tells the Hub that source item (``metadata``'s source, source_id) of document ``hub_id`` now
        has the name, place and extras in ``metadata`` (``base.hub_parts.METADATA_FIELDS``): a rename or
        a move at the source, the content unchanged. Idempotent; never makes a new document. Raises
        ``HubDocumentMissing`` when the Hub has no such document (or that item is not one of its
        sources), ValueError for an unknown field."""

    def delete(self, source: str, source_id: str) -> None:
        """Tells the Hub that a source item was deleted."""

    def health(self) -> tuple[bool, str]:
        """(ok, detail) from the cheapest real check."""

    def check(self) -> str:
        """The same check, its failure raised as a classified error (AuthError for a refused token)."""


def _reason(response: requests.Response) -> str:
    try:
        body = json_body(response)
    except ValueError:
        return (response.text or "").strip()[:300] or response.reason
    if isinstance(body, dict):
        for key in ("reason", "error", "message", "detail"):
            if body.get(key):
                value = body[key]
                return value if isinstance(value, str) else _json_snippet(value)
    return _json_snippet(body)


def _json_snippet(value: Any) -> str:
    try:
        return json.dumps(value)[:300]
    except RecursionError:  # parsed just under the parser's depth, too deep to write back
        return "(JSON nested too deeply to show)"


class HttpHub:
    """The Knowledge Hub over HTTP.

    base_url: ``HUB_API_URL`` (without ``/api/v1``).
    token: the Bearer token (registered as a secret so logs mask it).
    timeout: (connect, read) seconds.

    Every request carries the token (and an upload the document's sha256 as Idempotency-Key), so
    every request, and each redirect hop, goes only to the origin of ``base_url`` (utils.http's
    origin rule); a 307/308 re-sends the upload from the spool file, a redirect elsewhere is an
    ``OriginNotAllowed`` config error.

    text_part: send a document's extracted text as a ``text`` part (``HUB_TEXT_PART``, default on);
        off, neither uploads nor enrichment updates carry text, for a Hub that does not take it.
    text_max_bytes: cap of that text in UTF-8 bytes (``HUB_TEXT_MAX_BYTES``, default 1 MiB), cut on
        a character boundary; metadata ``extraction.truncated`` is then true.
    uploads_in_flight: how many uploads the pipeline may send at once (``HUB_UPLOADS_IN_FLIGHT``);
        ``upload`` is safe to call from that many threads together.
    """

    def __init__(self, base_url: str, token: str, *, timeout: tuple[float, float] = (5.0, 120.0),
                 ca_bundle: str | None = None, gate: ThrottleGate | None = None,
                 client: HttpClient | None = None, text_part: bool = True,
                 text_max_bytes: int = DEFAULT_TEXT_MAX_BYTES, uploads_in_flight: int = 1) -> None:
        self.base_url = base_url.rstrip("/")
        self.uploads_in_flight = max(1, uploads_in_flight)
        self.text_part = text_part
        self.text_max_bytes = text_max_bytes
        register_secret(token)
        self._auth = {"Authorization": f"Bearer {token}"}
        self._origins = OriginPolicy.of(self.base_url, setting="HUB_API_URL")
        self.client = client or HttpClient("hub", timeout=timeout, ca_bundle=ca_bundle or None, gate=gate)

    def _classify(self, response: requests.Response, what: str) -> None:
        status = response.status_code
        if status in (401, 403):
            raise AuthError(f"the Hub refused our token for {what} ({status}): {_reason(response)}")
        if status in (400, 413, 415, 422):
            raise HubRefused(status, _reason(response))
        if status in (404, 405):
            raise ConfigError(f"the Hub has no {what} endpoint at {self.base_url} ({status})")
        raise TransientError(f"the Hub answered {status} to {what}: {_reason(response)}")

    def upload(self, document: Document) -> str:
        text = text_part(document, self.text_max_bytes) if self.text_part else None
        metadata = metadata_for_text(document.hub_metadata(), text)

        def body() -> MultipartBody:
            # Called for every try and every 307/308 hop: the spool file is read again from its start.
            stream = MultipartBody(metadata, document.filename, document.mime_type, document.open_content(),
                                   document.size, text=text.data if text is not None else None)
            headers["Content-Type"] = stream.content_type
            return stream

        headers = {**self._auth, "Idempotency-Key": document.sha256}
        response = self.client.request("POST", f"{self.base_url}/api/v1/documents", body=body, headers=headers,
                                       origins=self._origins)
        with response:
            if response.status_code in (200, 201, 409):
                return self._document_id(response, document.sha256)
            self._classify(response, "upload")
        raise AssertionError("unreachable")  # pragma: no cover - _classify always raises

    @staticmethod
    def _document_id(response: requests.Response, sha256: str) -> str:
        try:
            body = json_body(response)
        except ValueError:
            body = {}
        doc_id = body.get("id") if isinstance(body, dict) else None
        return str(doc_id) if doc_id else sha256

    def link(self, hub_id: str, metadata: Mapping[str, Any]) -> None:
        response = self.client.request("POST", f"{self.base_url}/api/v1/documents/{hub_id}/sources",
                                       json=dict(metadata), headers=self._auth, origins=self._origins)
        with response:
            if response.status_code in (200, 201, 409):
                return
            if response.status_code == 404:
                raise HubDocumentMissing(f"the Hub has no document {hub_id}")
            self._classify(response, "provenance link")

    def update_enrichment(self, hub_id: str, enrichment: Mapping[str, Any], text: str | None) -> None:
        """``PUT /api/v1/documents/{hub_id}/enrichment`` with a JSON body: the enrichment fields and,
        when ``text`` is not None and the text part is on, ``text`` capped at ``text_max_bytes``.
        200/201/204 success; 404 ``HubDocumentMissing``; others classified as an upload's."""
        body = enrichment_body(enrichment, text if self.text_part else None, self.text_max_bytes)
        self._put_json(hub_id, "enrichment", body, missing=f"the Hub has no document {hub_id}")

    def update_metadata(self, hub_id: str, metadata: Mapping[str, Any]) -> None:
        """``PUT /api/v1/documents/{hub_id}/metadata`` with the JSON body ``metadata_update_body`` makes.
        200/201/204 success; 404 ``HubDocumentMissing``; others classified as an upload's."""
        body = metadata_update_body(metadata)
        self._put_json(hub_id, "metadata", body,
                       missing=f"the Hub has no document {hub_id} from {body['source_id']}")

    def _put_json(self, hub_id: str, part: str, body: Mapping[str, Any], *, missing: str) -> None:
        """``PUT /api/v1/documents/{hub_id}/{part}`` with ``body``: 200/201/204 success; 404
        ``HubDocumentMissing(missing)``; others classified as an upload's."""
        response = self.client.request("PUT", f"{self.base_url}/api/v1/documents/{hub_id}/{part}",
                                       json=body, headers=self._auth, origins=self._origins)
        with response:
            if response.status_code in (200, 201, 204):
                return
            if response.status_code == 404:
                raise HubDocumentMissing(missing)
            self._classify(response, f"{part} update")

    def delete(self, source: str, source_id: str) -> None:
        response = self.client.request("DELETE", f"{self.base_url}/api/v1/documents",
                                       params={"source": source, "source_id": source_id}, headers=self._auth,
                                       origins=self._origins)
        with response:
            if response.status_code in (200, 202, 204, 404):
                return
            self._classify(response, "delete")

    def health(self) -> tuple[bool, str]:
        try:
            return True, self.check()
        except (TransientError, ConfigError) as exc:
            return False, str(exc)

    def check(self) -> str:
        """What the health call proved; raises ``AuthError`` when the Hub refuses HUB_API_TOKEN (the
        scope state ``auth_failed``: not retried, fix the setting), ``TransientError`` when the Hub does
        not answer or answers anything but 200."""
        # With our token, so a wrong HUB_API_TOKEN shows here and not only at the first upload.
        response = self.client.request("GET", f"{self.base_url}/api/v1/health", retry=False, headers=self._auth,
                                       origins=self._origins)
        with response:
            if response.status_code in (401, 403):
                raise AuthError(f"the Hub at {self.base_url} refused HUB_API_TOKEN (HTTP {response.status_code}"
                                f" {_reason(response)}): set the token the Hub issued for this service")
            if response.status_code != 200:
                raise TransientError(f"{self.base_url}/api/v1/health answered {response.status_code}")
            return f"{self.base_url}/api/v1/health answered 200 and took our token"


def _load_syncfs() -> Any:
    """libc's syncfs(2) where there is one (Linux), else None (per-file fsync is used instead)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_syncfs = _load_syncfs()


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class OutboxHub:
    """A local folder standing in for the Hub: one folder per sha256 with the file, metadata.json and,
    when the document has extracted text, ``text.txt`` (UTF-8, capped at ``text_max_bytes`` like
    the Hub's text part; metadata.json names it in ``text_file`` with its size in ``text_bytes``).

    A document folder is written under a temporary name and renamed into place, so a reader never
    sees half a document and a crash leaves no partial one. With ``fsync=True`` (the default) every
    write reaches the disk before it is acknowledged: at once per upload, or, with
    ``group_commit=True``, when ``flush()`` is called for a batch (the pipeline records a batch only
    after its flush, so an acknowledgement still means "on disk"; many files then share one journal
    commit instead of four fsyncs each). Provenance is appended to ``sources.jsonl``; deletions are
    tombstone files in ``_deleted/``. The Hub id of a document is its sha256. ``update_enrichment``
    replaces text.txt, then metadata.json, each by a fsynced temporary file renamed over it.
    """

    def __init__(self, directory: str, *, fsync: bool = True, group_commit: bool = False,
                 text_max_bytes: int = DEFAULT_TEXT_MAX_BYTES, uploads_in_flight: int = 1) -> None:
        self.directory = os.path.abspath(directory)
        #: Writes the pipeline may run at once (``HUB_UPLOADS_IN_FLIGHT``): the file system's work on
        #: one group's folders overlaps the reading of the next; ``upload`` is thread-safe.
        self.uploads_in_flight = max(1, uploads_in_flight)
        self.text_max_bytes = text_max_bytes
        self.fsync = fsync
        self.group_commit = group_commit and fsync
        self._unsynced: list[str] = []
        self._lock = threading.Lock()
        os.makedirs(self.directory, exist_ok=True)

    def path_for(self, sha256: str) -> str:
        return os.path.join(self.directory, sha256)

    def _stored_intact(self, folder: str, size: int) -> bool:
        """True when ``folder`` holds a complete document of ``size`` bytes (a machine crash before a
        flush can leave a renamed folder whose file never reached the disk)."""
        try:
            with open(os.path.join(folder, "metadata.json"), encoding="utf-8") as fh:
                meta = json.load(fh)
            if os.path.getsize(os.path.join(folder, meta["stored_as"])) != size:
                return False
            text_file = meta.get("text_file")
            return not text_file or os.path.getsize(os.path.join(folder, text_file)) == meta.get("text_bytes")
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def upload(self, document: Document) -> str:
        try:
            return self._write(document)
        except OSError as exc:
            # A full or read-only outbox disk fails every document alike: run-level, not this item.
            raise TransientError(f"cannot write to the outbox {self.directory}: {exc.strerror or exc}") from exc

    def _write(self, document: Document) -> str:
        final = self.path_for(document.sha256)
        if os.path.isdir(final):
            if self._stored_intact(final, document.size):
                return document.sha256
            shutil.rmtree(final, ignore_errors=True)
        sync_now = self.fsync and not self.group_commit
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=self.directory)
        try:
            name = document.filename if document.filename not in _OUTBOX_RESERVED else f"file-{document.filename}"
            with open(os.path.join(tmp, name), "wb") as out:
                for chunk in iter_file_chunks(document.open_content()):
                    out.write(chunk)
                if sync_now:
                    out.flush()
                    os.fsync(out.fileno())
            text = text_part(document, self.text_max_bytes)
            meta = {**metadata_for_text(document.hub_metadata(), text), "stored_as": name}
            if text is not None:
                # Before metadata.json, which names it: a folder whose metadata reads is complete.
                self._write_text(tmp, TEXT_FILENAME, text, sync=sync_now)
                meta.update(text_file=TEXT_FILENAME, text_bytes=len(text.data))
            with open(os.path.join(tmp, "metadata.json"), "w", encoding="utf-8") as out:
                # Without indent, json uses its C encoder: five times faster on this hot path.
                out.write(json.dumps(meta, ensure_ascii=False))
                if sync_now:
                    out.flush()
                    os.fsync(out.fileno())
            if sync_now:
                _fsync_dir(tmp)
            try:
                os.rename(tmp, final)
            except OSError:
                if not os.path.isdir(final):  # a concurrent writer did not win the race: a real failure
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
            if sync_now:
                _fsync_dir(self.directory)
            elif self.group_commit:
                with self._lock:
                    self._unsynced.append(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return document.sha256

    @staticmethod
    def _write_text(folder: str, name: str, text: TextPart, *, sync: bool) -> None:
        with open(os.path.join(folder, name), "wb") as out:
            out.write(text.data)
            if sync:
                out.flush()
                os.fsync(out.fileno())

    def flush(self) -> None:
        """Makes every upload since the last flush durable (files, their folders, the outbox folder)."""
        with self._lock:
            folders, self._unsynced = self._unsynced, []
        if not folders:
            return
        try:
            self._fsync_folders(folders)
        except OSError as exc:
            with self._lock:
                self._unsynced[:0] = folders  # not durable yet: a later flush tries again
            raise TransientError(f"cannot flush the outbox {self.directory}: {exc.strerror or exc}") from exc

    def _fsync_folders(self, folders: list[str]) -> None:
        if _syncfs is not None and len(folders) > 1:
            # One syncfs(2) writes every dirty page and inode of the outbox's file system: for a batch
            # it replaces three fsyncs per document with a single journal commit.
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                if _syncfs(fd) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            finally:
                os.close(fd)
            return
        for folder in folders:
            for entry in os.scandir(folder):
                fd = os.open(entry.path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            _fsync_dir(folder)
        _fsync_dir(self.directory)

    def link(self, hub_id: str, metadata: Mapping[str, Any]) -> None:
        folder = self.path_for(hub_id)
        if not os.path.isdir(folder):
            raise HubDocumentMissing(f"the outbox has no document {hub_id}")
        line = json.dumps(dict(metadata), ensure_ascii=False, sort_keys=True) + "\n"
        path = os.path.join(folder, "sources.jsonl")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                if any(_same_source(existing, metadata) for existing in fh):
                    return
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line)
            if self.fsync:
                fh.flush()
                os.fsync(fh.fileno())

    def update_enrichment(self, hub_id: str, enrichment: Mapping[str, Any], text: str | None) -> None:
        """Rewrites the enrichment fields of the folder's metadata.json and, unless ``text`` is None,
        its text.txt ("" removes it). The text is replaced first, then metadata.json (which names
        it), each through a fsynced temporary file renamed over the old one: a reader sees each file
        whole, old or new, and an update cut short by a crash is completed by doing it again.
        ``HubDocumentMissing`` when the outbox has no such document."""
        body = enrichment_body(enrichment, text, self.text_max_bytes)
        folder = self.path_for(hub_id)
        meta = self._stored_metadata(hub_id, folder)
        new_text = body.pop("text", None)
        meta.update(body)
        try:
            if new_text is not None:
                self._replace_text(folder, meta, new_text.encode("utf-8"))
            self._replace_file(folder, "metadata.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))
            if self.fsync:
                _fsync_dir(folder)
        except OSError as exc:
            raise TransientError(f"cannot write to the outbox {folder}: {exc.strerror or exc}") from exc

    def _replace_text(self, folder: str, meta: dict[str, Any], data: bytes) -> None:
        """Writes (or with empty ``data`` removes) the folder's text file, and says so in ``meta``."""
        name = meta.get("text_file") or (TEXT_FILENAME if meta.get("stored_as") != TEXT_FILENAME
                                         else _OUTBOX_TEXT_FALLBACK)
        if not data:
            meta.pop("text_file", None)
            meta.pop("text_bytes", None)
            try:
                os.remove(os.path.join(folder, name))
            except FileNotFoundError:
                pass
            return
        self._replace_file(folder, name, data)
        meta.update(text_file=name, text_bytes=len(data))

    def _replace_file(self, folder: str, name: str, data: bytes) -> None:
        tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as out:
                out.write(data)
                if self.fsync:
                    out.flush()
                    os.fsync(out.fileno())
            os.replace(tmp, os.path.join(folder, name))
        except BaseException:
            try:
                os.remove(tmp)
            except FileNotFoundError:
                pass
            raise

    @staticmethod
    def _stored_metadata(hub_id: str, folder: str) -> dict[str, Any]:
        """The document folder's metadata.json; ``HubDocumentMissing`` when there is none."""
        try:
            with open(os.path.join(folder, "metadata.json"), encoding="utf-8") as fh:
                return dict(json.load(fh))
        except FileNotFoundError:
            raise HubDocumentMissing(f"the outbox has no document {hub_id}") from None
        except (OSError, ValueError) as exc:
            raise TransientError(f"cannot read {folder}/metadata.json: {exc}") from exc

    def update_metadata(self, hub_id: str, metadata: Mapping[str, Any]) -> None:
        """Appends the update to the folder's ``metadata_updates.jsonl`` (unless the last line about
        the same source item says the same: a retry) and, when that item is the one the document was
        stored from, rewrites those fields of ``metadata.json`` (a fsynced temporary file renamed over
        it; ``stored_as`` still names the file as it was written). An update cut short by a crash is
        completed by sending it again. ``HubDocumentMissing`` when the outbox has no such document."""
        body = metadata_update_body(metadata)
        folder = self.path_for(hub_id)
        meta = self._stored_metadata(hub_id, folder)
        try:
            log_path = os.path.join(folder, OUTBOX_METADATA_UPDATES)
            line = json.dumps(body, ensure_ascii=False, sort_keys=True)
            if _last_update_of(log_path, body) != json.loads(line):  # compared as JSON reads it back
                with open(log_path, "a", encoding="utf-8") as fh:
                    fh.write(line + "\n")
                    if self.fsync:
                        fh.flush()
                        os.fsync(fh.fileno())
            if (meta.get("source"), meta.get("source_id")) == (body["source"], body["source_id"]):
                changed = {name: body[name] for name in METADATA_FIELDS if name in body}
                if any(meta.get(name) != value for name, value in changed.items()):
                    meta.update(changed)
                    self._replace_file(folder, "metadata.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))
                    if self.fsync:
                        _fsync_dir(folder)
        except OSError as exc:
            raise TransientError(f"cannot write to the outbox {folder}: {exc.strerror or exc}") from exc

    def delete(self, source: str, source_id: str) -> None:
        import hashlib

        folder = os.path.join(self.directory, "_deleted", source)
        os.makedirs(folder, exist_ok=True)
        name = hashlib.sha1(source_id.encode(), usedforsecurity=False).hexdigest() + ".json"
        tmp = os.path.join(folder, f".{name}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"source": source, "source_id": source_id}, fh, ensure_ascii=False)
            if self.fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, os.path.join(folder, name))

    def check(self) -> str:
        """What the health call proved; raises ``ConfigError`` when the outbox cannot be written."""
        ok, detail = self.health()
        if not ok:
            raise ConfigError(detail)
        return detail

    def health(self) -> tuple[bool, str]:
        try:
            probe = tempfile.NamedTemporaryFile(dir=self.directory, prefix=".health-", delete=True)  # noqa: SIM115
            probe.close()
        except OSError as exc:
            return False, f"outbox {self.directory} is not writable: {exc.strerror}"
        return True, f"outbox {self.directory} is writable"


def _same_source(line: str, metadata: Mapping[str, Any]) -> bool:
    try:
        existing = json.loads(line)
    except ValueError:
        return False
    return bool(existing.get("source") == metadata.get("source") and existing.get("source_id") == metadata.get(
        "source_id"))


def _last_update_of(path: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The last update in the log at ``path`` about the same source item as ``body``, or None."""
    last = None
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash: the update is written again
                if isinstance(entry, dict) and _same_source(line, body):
                    last = entry
    except FileNotFoundError:
        return None
    return last


def hub_from_settings(settings: Settings, *, gate: ThrottleGate | None = None) -> Hub:
    """``HttpHub`` when ``HUB_API_URL`` is set, else the local ``OutboxHub``."""
    if settings.hub_api_url:
        if not settings.hub_api_token:
            raise ConfigError("HUB_API_URL is set but HUB_API_TOKEN is missing")
        return HttpHub(settings.hub_api_url, settings.hub_api_token,
                       timeout=(settings.hub_connect_timeout, settings.hub_read_timeout),
                       ca_bundle=settings.hub_ca_file or None, gate=gate, text_part=settings.hub_text_part,
                       text_max_bytes=settings.hub_text_max_bytes,
                       uploads_in_flight=settings.hub_uploads_in_flight)
    return OutboxHub(settings.hub_outbox_dir, fsync=settings.hub_fsync, group_commit=settings.ack_batch_size > 1,
                     text_max_bytes=settings.hub_text_max_bytes, uploads_in_flight=settings.hub_uploads_in_flight)
