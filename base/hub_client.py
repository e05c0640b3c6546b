"""The client side of the Knowledge Hub contract (DESIGN.md), and the local outbox that stands in
for the Hub when ``HUB_API_URL`` is unset.

Both implement ``Hub``: ``upload`` (returns the Hub's document id), ``link`` (provenance),
``delete`` and ``health``. Answers are classified once, here:

| answer                         | raised / returned                                   |
|--------------------------------|-----------------------------------------------------|
| 200 / 201 / 409                | success: the document id                            |
| 401 / 403                      | ``AuthError`` (stop the run)                        |
| 400 / 413 / 415 / 422          | ``HubRefused`` (an ``ItemError``: dead-letter)      |
| 408 / 429 / 5xx / no answer    | retried by utils.http, then ``TransientError``      |
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
from typing import IO, Any, Protocol

import requests

from base.document import Document, iter_file_chunks
from config.settings import Settings
from utils.errors import AuthError, ConfigError, ItemError, TransientError
from utils.http import HttpClient, OriginPolicy, ThrottleGate, json_body
from utils.logging import register_secret

#: Upload block size when streaming a multipart body.
UPLOAD_BLOCK = 256 * 1024  # bytes
#: Names in an outbox folder that a document's own file must not take.
_OUTBOX_RESERVED = {"metadata.json", "sources.jsonl"}


class HubRefused(ItemError):
    """The Hub refused this document (400/413/415/422): dead-letter it, keep going."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        super().__init__(f"Hub refused the document ({status}): {reason}")


class HubDocumentMissing(ItemError):
    """A provenance link named a Hub document that the Hub no longer has: upload instead."""


class Hub(Protocol):
    """Where documents go. Implementations are safe to call again with the same content."""

    def upload(self, document: Document) -> str:
        """Stores the document (idempotent by sha256); returns the Hub's document id."""

    def link(self, hub_id: str, metadata: Mapping[str, Any]) -> None:
        """Records that another source item carries the content of document ``hub_id``."""

    def delete(self, source: str, source_id: str) -> None:
        """Tells the Hub that a source item was deleted."""

    def health(self) -> tuple[bool, str]:
        """(ok, detail) from the cheapest real check."""


class _MultipartStream:
    """A multipart/form-data body read block by block: a ``metadata`` JSON part, then the file.

    It has a length, so requests sends ``Content-Length`` and streams it without buffering.
    """

    def __init__(self, metadata: Mapping[str, Any], filename: str, mime_type: str, content: IO[bytes],
                 size: int) -> None:
        self.boundary = uuid.uuid4().hex
        safe_name = filename.replace('"', "_").replace("\r", "").replace("\n", "")
        head = (
            f"--{self.boundary}\r\n"
            'Content-Disposition: form-data; name="metadata"\r\n'
            "Content-Type: application/json; charset=utf-8\r\n\r\n"
        ).encode() + json.dumps(metadata, ensure_ascii=False).encode("utf-8") + (
            f"\r\n--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{safe_name}"\r\n'
            f"Content-Type: {mime_type or 'application/octet-stream'}\r\n\r\n"
        ).encode()
        tail = f"\r\n--{self.boundary}--\r\n".encode()
        self._parts: list[IO[bytes] | bytes] = [head, content, tail]
        self.len = len(head) + size + len(tail)
        self._buffer = b""

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self.len

    def read(self, size: int = -1) -> bytes:
        want = UPLOAD_BLOCK if size is None or size < 0 else size
        while len(self._buffer) < want and self._parts:
            part = self._parts[0]
            if isinstance(part, bytes):
                self._buffer += part
                self._parts.pop(0)
                continue
            block = part.read(want - len(self._buffer))
            if not block:
                self._parts.pop(0)
            else:
                self._buffer += block
        out, self._buffer = self._buffer[:want], self._buffer[want:]
        return out


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
    """

    def __init__(self, base_url: str, token: str, *, timeout: tuple[float, float] = (5.0, 120.0),
                 ca_bundle: str | None = None, gate: ThrottleGate | None = None,
                 client: HttpClient | None = None) -> None:
        self.base_url = base_url.rstrip("/")
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
        if status == 404:
            raise ConfigError(f"the Hub has no {what} endpoint at {self.base_url} (404)")
        raise TransientError(f"the Hub answered {status} to {what}: {_reason(response)}")

    def upload(self, document: Document) -> str:
        metadata = document.hub_metadata()

        def body() -> _MultipartStream:
            # Called for every try and every 307/308 hop: the spool file is read again from its start.
            stream = _MultipartStream(metadata, document.filename, document.mime_type, document.open_content(),
                                      document.size)
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
            # With our token, so a wrong HUB_API_TOKEN shows here and not only at the first upload.
            response = self.client.request("GET", f"{self.base_url}/api/v1/health", retry=False, headers=self._auth,
                                           origins=self._origins)
        except (TransientError, ConfigError) as exc:
            return False, str(exc)
        with response:
            if response.status_code in (401, 403):
                return False, f"the Hub refused our token ({response.status_code}); check HUB_API_TOKEN"
            return response.status_code == 200, f"{self.base_url}/api/v1/health answered {response.status_code}"


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
    """A local folder standing in for the Hub: one folder per sha256 with the file and metadata.json.

    A document folder is written under a temporary name and renamed into place, so a reader never
    sees half a document and a crash leaves no partial one. With ``fsync=True`` (the default) every
    write reaches the disk before it is acknowledged: at once per upload, or, with
    ``group_commit=True``, when ``flush()`` is called for a batch (the pipeline records a batch only
    after its flush, so an acknowledgement still means "on disk"; many files then share one journal
    commit instead of four fsyncs each). Provenance is appended to ``sources.jsonl``; deletions are
    tombstone files in ``_deleted/``. The Hub id of a document is its sha256.
    """

    def __init__(self, directory: str, *, fsync: bool = True, group_commit: bool = False) -> None:
        self.directory = os.path.abspath(directory)
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
                stored_as = json.load(fh)["stored_as"]
            return os.path.getsize(os.path.join(folder, stored_as)) == size
        except (OSError, ValueError, KeyError):
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
            meta = {**document.hub_metadata(), "stored_as": name}
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


def hub_from_settings(settings: Settings, *, gate: ThrottleGate | None = None) -> Hub:
    """``HttpHub`` when ``HUB_API_URL`` is set, else the local ``OutboxHub``."""
    if settings.hub_api_url:
        if not settings.hub_api_token:
            raise ConfigError("HUB_API_URL is set but HUB_API_TOKEN is missing")
        return HttpHub(settings.hub_api_url, settings.hub_api_token,
                       timeout=(settings.hub_connect_timeout, settings.hub_read_timeout),
                       ca_bundle=settings.hub_ca_file or None, gate=gate)
    return OutboxHub(settings.hub_outbox_dir, fsync=settings.hub_fsync, group_commit=settings.ack_batch_size > 1)
