"""The Knowledge Hub simulator: a real HTTP server implementing DESIGN.md's Hub contract.

Endpoints (all answers JSON; errors are ``{"error": <code>, "reason": <text>}``):

- ``POST /api/v1/documents``: Bearer token, ``Idempotency-Key: <sha256>``, multipart/form-data with a
  ``metadata`` JSON part, an optional ``text`` part (the extracted text, text/plain UTF-8) and a ``file``
  part. The file streams to disk while hashed. 201 ``{"id", "sha256"}`` the first time; the same key again
  answers ``duplicate_status`` (200, or 409) with the same id and the bytes are not stored again. 401 bad
  token, 400 missing key / parts / fields or a text part that is not UTF-8, 415 not multipart or a text
  part that is not text/plain, 413 over ``max_content_length`` or a text part over ``max_text_bytes``,
  422 when the body's sha256 differs from the key or metadata.sha256 (or the size from metadata.size).
  ``previous_sha256`` marks that older document superseded. With ``text_part=False`` the simulator is an
  older, strict Hub: any part but ``metadata`` and ``file`` is refused with 400 ``unknown_part``.
- ``PUT /api/v1/documents/{id}/enrichment``: JSON object of enrichment fields (ENRICHMENT_FIELDS) and
  optionally ``text`` (a string: replaces the text; "" removes it). 200 ``{"id", "status": "updated"}``,
  the same again changes nothing; 404 unknown id, 400 not an object / unknown field / text not a string,
  413 text over ``max_text_bytes``.
- ``PUT /api/v1/documents/{id}/metadata``: JSON object naming a source item (``source``, ``source_id``,
  optionally ``scope`` and ``sha256``) with any of METADATA_FIELDS (its new name, title, URL, extras,
  version, modification time after a rename or move at the source). 200 ``{"id", "status": "updated"}``,
  the same again changes nothing more; the fields replace the source item's, and the document's own
  when it was stored from that item. 404 unknown id, or that item is not a live source of it; 400
  not an object, an unknown field or source/source_id missing; 422 sha256 not this document's.
- ``GET /api/v1/documents/{id}/text``: the stored text (text/plain; charset=utf-8); 404 unknown id or no text.
- ``POST /api/v1/documents/{id}/sources``: JSON metadata: records provenance. 201 new (source, source_id),
  200 already recorded, 404 unknown id, 422 when metadata.sha256 is not this document's.
- ``DELETE /api/v1/documents?source=&source_id=``: 204 when that source item is known, 404 when not.
- ``GET /api/v1/health``: 200 ``{"status": "ok"}`` (token optional; a wrong one gets 401).
- Steering, for tests and the demo: ``GET /_sim/state``, ``POST /_sim/faults`` (one fault object or
  ``{"faults": [...]}``, see sandbox.hub_faults), ``DELETE /_sim/faults``, ``POST /_sim/reset``.

Run it in a thread with ``running_hub()``, or as a process:
``python -m sandbox.hub --port N --token T --data-dir D`` (persists an ``index.json`` beside the blobs;
with ``--memory`` the index stays in memory, as a benchmark wants: no index rewritten per upload).
"""

from __future__ import annotations

import argparse
import hmac
import json
import re
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.formparser import FormDataParser
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from sandbox.hub_faults import Fault, FaultBook
from sandbox.hub_store import HashingSpool, HubDocument, HubStore
from sandbox.servers import ServerThread
from utils.logging import configure_logging

log = structlog.get_logger(__name__)

#: The token ``running_hub`` accepts unless told another (a sandbox value, not a credential).
SANDBOX_TOKEN = "hub-test-token"
#: Largest request body accepted by default, in bytes (10 GiB: the contract has no size cap).
DEFAULT_MAX_CONTENT_LENGTH = 10 * 1024**3
#: Largest non-file form part (the metadata JSON) held in memory, in bytes.
MAX_METADATA_BYTES = 1024 * 1024
#: Most multipart parts in one upload (metadata, text and file, with room for a stray extra).
MAX_FORM_PARTS = 8
#: Largest text part (and enrichment ``text``) accepted by default, in bytes of UTF-8.
DEFAULT_MAX_TEXT_BYTES = 1024 * 1024
#: The parts an upload may carry; an older Hub (``text_part=False``) knows only the first two.
KNOWN_PARTS = ("metadata", "file", "text")
#: The fields an enrichment update may carry (besides ``text``).
ENRICHMENT_FIELDS = ("language", "language_script", "department", "department_confidence", "department_terms",
                     "extraction", "sensitive")
#: The fields a metadata update may replace of a source item (after a rename or move at the source),
#: and those that name the item and the content it expects.
METADATA_FIELDS = ("version", "filename", "title", "source_url", "modified_at", "extra")
METADATA_IDENTITY = ("source", "scope", "source_id", "sha256")
#: How much of an upload's body a ``drop`` fault reads before closing the connection, in bytes.
DROP_AFTER_BYTES = 64 * 1024

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_REQUIRED_UPLOAD_FIELDS = ("source", "source_id", "filename", "sha256")


class _Refusal(Exception):
    """Ends a request with a JSON error answer."""

    def __init__(self, status: int, error: str, reason: str, headers: dict[str, str] | None = None,
                 fault_kind: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason
        self.headers = headers or {}
        self.fault_kind = fault_kind


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    if status == 204:
        return Response(status=204, headers=headers)
    return Response(json.dumps(body), status=status, mimetype="application/json", headers=headers)


def _error(status: int, error: str, reason: str, headers: dict[str, str] | None = None) -> Response:
    return _json(status, {"error": error, "reason": reason}, headers)


class HubSimulator:
    """The Hub contract as a WSGI app (``.app``), with what it received kept for inspection.

    token: the Bearer token it accepts (required).
    data_dir: where uploaded bytes land (``blobs/<sha256>``); None = a temporary folder removed by close().
    max_content_length: largest request body, bytes (default DEFAULT_MAX_CONTENT_LENGTH); beyond: 413.
    duplicate_status: the answer to an upload whose key is already stored: 200 (default) or 409.
    persist: write ``index.json`` in data_dir after every change and load it at start (process mode).
    max_text_bytes: largest text part or enrichment text, bytes of UTF-8 (default 1 MiB); beyond: 413.
    text_part: False makes it an older, strict Hub that refuses an upload with any part but
        ``metadata`` and ``file`` (400 ``unknown_part``, "unknown multipart part: text").

    Inspection (thread-safe to read between requests; ``state()`` takes a consistent snapshot):
    documents: id -> HubDocument. uploads_per_key: sha256 -> upload requests received with that
    Idempotency-Key, whatever their answer (repeats and faulted ones included). stored_per_key: sha256 ->
    times the bytes were stored (1 unless reset). deletions: one dict per DELETE (source, source_id,
    status, document_ids). provenance: one dict per sources POST (document_id, source, source_id, status,
    metadata). requests: one dict per /api/v1 request (method, endpoint, key, status, fault).
    """

    def __init__(self, *, token: str, data_dir: str | Path | None = None,
                 max_content_length: int | None = DEFAULT_MAX_CONTENT_LENGTH, duplicate_status: int = 200,
                 persist: bool = False, max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES,
                 text_part: bool = True) -> None:
        if not token:
            raise ValueError("the Hub simulator needs a token")
        if duplicate_status not in (200, 409):
            raise ValueError("duplicate_status is 200 or 409")
        self._token = token
        self._owned_dir: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._owned_dir = tempfile.TemporaryDirectory(prefix="kmrl-hub-")
            data_dir = self._owned_dir.name
        self.data_dir = Path(data_dir)
        self.store = HubStore(self.data_dir, persist=persist)
        self.max_content_length = max_content_length
        self.duplicate_status = duplicate_status
        self.max_text_bytes = max_text_bytes
        self.text_part = text_part
        self.faults = FaultBook()
        # The store's own containers, so tests read live values (HubStore mutates them under its lock).
        self.documents: dict[str, HubDocument] = self.store.documents
        self.uploads_per_key: dict[str, int] = self.store.uploads_per_key
        self.stored_per_key: dict[str, int] = self.store.stored_per_key
        self.deletions: list[dict[str, Any]] = self.store.deletions
        self.provenance: list[dict[str, Any]] = self.store.provenance
        self.metadata_updates: list[dict[str, Any]] = self.store.metadata_updates
        self.requests: list[dict[str, Any]] = self.store.requests
        self.blob_dir = self.store.blob_dir
        self.incoming_dir = self.store.incoming_dir
        self.index_path = self.store.index_path
        self._url_map = Map([
            Rule("/api/v1/documents", methods=["POST"], endpoint="upload"),
            Rule("/api/v1/documents", methods=["DELETE"], endpoint="delete"),
            Rule("/api/v1/documents/<doc_id>/sources", methods=["POST"], endpoint="sources"),
            Rule("/api/v1/documents/<doc_id>/enrichment", methods=["PUT"], endpoint="enrichment"),
            Rule("/api/v1/documents/<doc_id>/metadata", methods=["PUT"], endpoint="metadata"),
            Rule("/api/v1/documents/<doc_id>/text", methods=["GET"], endpoint="text"),
            Rule("/api/v1/health", methods=["GET"], endpoint="health"),
            Rule("/_sim/state", methods=["GET"], endpoint="sim_state"),
            Rule("/_sim/faults", methods=["POST"], endpoint="sim_faults"),
            Rule("/_sim/faults", methods=["DELETE"], endpoint="sim_clear_faults"),
            Rule("/_sim/reset", methods=["POST"], endpoint="sim_reset"),
        ])

    # ----- Python API for tests -------------------------------------------------------------

    def set_fault(self, kind: str, **options: Any) -> Fault:
        """Activates a fault (see sandbox.hub_faults.Fault for the options); returns it.

        e.g. ``set_fault("error", status=503, count=2)``, ``set_fault("throttle", retry_after=3, seconds=10)``,
        ``set_fault("slow", delay=2, count=1)``, ``set_fault("reject", match="bad.pdf")``,
        ``set_fault("too_large", max_size=1_000_000)``, ``set_fault("drop", count=1)``, ``set_fault("forbidden")``.
        """
        fault = self.faults.add(Fault(kind=kind, **options))
        log.info("hub_fault_set", kind=kind, count=fault.count, seconds=fault.seconds, endpoint=fault.endpoint)
        return fault

    def clear_faults(self) -> None:
        """Removes every fault; requests sleeping in a slow fault answer at once."""
        self.faults.clear()
        log.info("hub_faults_cleared")

    def reset(self) -> None:
        """Forgets every document, count and fault, and removes the stored bytes."""
        self.faults.clear()
        self.store.reset()
        log.info("hub_reset")

    def document_by_sha256(self, sha256: str) -> HubDocument | None:
        """The stored document with that content, or None."""
        return self.store.by_sha256(sha256)

    def state(self) -> dict[str, Any]:
        """A JSON-ready snapshot of everything received (what ``GET /_sim/state`` answers)."""
        return {**self.store.snapshot(), "faults": [fault.to_json() for fault in self.faults.active()]}

    def close(self) -> None:
        """Wakes sleeping requests and removes the data dir if the simulator created it."""
        self.faults.clear()
        if self._owned_dir is not None:
            self._owned_dir.cleanup()
            self._owned_dir = None

    # ----- WSGI ----------------------------------------------------------------------------

    def app(self, environ: dict[str, Any], start_response: Any) -> Any:
        """The WSGI application."""
        request = Request(environ)
        adapter = self._url_map.bind_to_environ(environ)
        try:
            endpoint, args = adapter.match()
        except HTTPException as exc:
            code = exc.code or 500
            response = _error(code, "not_found" if code == 404 else "method_not_allowed",
                              f"{request.method} {request.path}")
            return response(environ, start_response)
        if str(endpoint).startswith("sim_"):
            response = self._serve_admin(str(endpoint), request)
        else:
            response = self._serve_api(str(endpoint), request, environ, args)
        return response(environ, start_response)

    def _serve_api(self, endpoint: str, request: Request, environ: dict[str, Any],
                   args: Mapping[str, Any]) -> Response:
        key = (request.headers.get("Idempotency-Key") or "").strip().lower() or None
        if endpoint == "upload" and key:
            self.store.count_upload(key)
        fault = self.faults.take("arrival", endpoint)
        fault_kind = fault.kind if fault else None
        if fault is not None and fault.kind == "drop":
            self._log_request(request, endpoint, key, None, "drop")
            self._drop_connection(request, environ)
        if fault is not None:
            response = self._fault_answer(fault)
        else:
            try:
                if endpoint == "upload":
                    response = self._upload(request, key)
                elif endpoint == "sources":
                    response = self._link_source(request, str(args["doc_id"]))
                elif endpoint == "enrichment":
                    response = self._update_enrichment(request, str(args["doc_id"]))
                elif endpoint == "metadata":
                    response = self._update_metadata(request, str(args["doc_id"]))
                elif endpoint == "text":
                    response = self._text(request, str(args["doc_id"]))
                elif endpoint == "delete":
                    response = self._delete(request)
                else:
                    response = self._health(request)
            except _Refusal as refusal:
                fault_kind = fault_kind or refusal.fault_kind
                response = _error(refusal.status, refusal.error, refusal.reason, refusal.headers)
            except RequestEntityTooLarge:
                response = _error(413, "too_large", f"request body over {self.max_content_length} bytes")
        slow = self.faults.take("answer", endpoint)
        if slow is not None:
            self.faults.sleep(slow.delay)
            fault_kind = fault_kind or "slow"
        self._log_request(request, endpoint, key, response.status_code, fault_kind)
        return response

    def _log_request(self, request: Request, endpoint: str, key: str | None, status: int | None,
                     fault: str | None) -> None:
        self.store.record_request({"method": request.method, "endpoint": endpoint, "key": key, "status": status,
                                   "fault": fault, "at": time.time()})
        log.debug("hub_request", method=request.method, endpoint=endpoint, status=status, fault=fault)

    @staticmethod
    def _fault_answer(fault: Fault) -> Response:
        status = int(fault.status or 503)
        headers = {"Retry-After": str(fault.retry_after)} if fault.kind == "throttle" else None
        log.info("hub_fault_answer", kind=fault.kind, status=status)
        return _error(status, f"simulated_{fault.kind}", f"simulated fault: {fault.kind}", headers)

    @staticmethod
    def _drop_connection(request: Request, environ: dict[str, Any]) -> None:
        """Reads a little of the body, then closes the socket without an answer (werkzeug's server only)."""
        if request.content_length or environ.get("wsgi.input_terminated"):
            request.stream.read(DROP_AFTER_BYTES)
        sock = environ.get("werkzeug.socket")
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        log.info("hub_fault_answer", kind="drop", status=None)
        # werkzeug's handler treats a ConnectionError as a dropped connection: no answer is written.
        raise ConnectionAbortedError("simulated dropped connection")

    def _check_token(self, request: Request, *, optional: bool = False) -> None:
        header = request.headers.get("Authorization")
        if header is None and optional:
            return
        scheme, _, value = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self._token.encode()):
            raise _Refusal(401, "unauthorized", "missing or wrong Bearer token", {"WWW-Authenticate": "Bearer"})

    # ----- upload ----------------------------------------------------------------------------

    def _upload(self, request: Request, key: str | None) -> Response:
        self._check_token(request)
        if not key:
            raise _Refusal(400, "missing_idempotency_key", "Idempotency-Key header (the sha256) is required")
        if not _SHA256_RE.match(key):
            raise _Refusal(400, "bad_idempotency_key", "Idempotency-Key must be a hex sha256")
        if request.mimetype != "multipart/form-data":
            raise _Refusal(415, "unsupported_media_type", f"expected multipart/form-data, got {request.mimetype!r}")
        spools: list[HashingSpool] = []

        def stream_factory(total_content_length: int | None, content_type: str | None, filename: str | None,
                           content_length: int | None = None) -> IO[bytes]:
            spool = self.store.new_spool()
            spools.append(spool)
            return spool  # type: ignore[return-value]  # file-like enough for werkzeug's parser

        parser = FormDataParser(stream_factory=stream_factory, max_form_memory_size=MAX_METADATA_BYTES,
                                max_content_length=self.max_content_length, max_form_parts=MAX_FORM_PARTS,
                                cls=MultiDict)
        try:
            _, form, files = parser.parse_from_environ(request.environ)
            if not self.text_part:
                unknown = sorted((set(form) | set(files)) - {"metadata", "file"})
                if unknown:
                    raise _Refusal(400, "unknown_part", f"unknown multipart part: {', '.join(unknown)}")
            metadata = self._upload_metadata(form, files)
            file_part = files.get("file")
            if file_part is None:
                raise _Refusal(400, "missing_file", "multipart part 'file' is required")
            received = file_part.stream
            assert isinstance(received, HashingSpool)
            text = self._text_part(form, files)
            if text is not None and text not in spools:
                spools.append(text)
            self._check_document_faults("upload", metadata, received.sha256, received.size)
            self._verify_upload(key, metadata, received)
            return self._store(key, metadata, received, text)
        finally:
            for spool in spools:
                spool.discard()

    def _text_part(self, form: MultiDict[str, str], files: MultiDict[str, FileStorage]) -> HashingSpool | None:
        """The upload's text part, spooled, once checked: text/plain, at most ``max_text_bytes``, UTF-8."""
        if "text" in form:
            # Sent without a filename, the text arrives as a form field (held in memory, capped by the parser).
            spool = self.store.new_spool()
            spool.write(form["text"].encode("utf-8"))
            spool.flush()
            mimetype = "text/plain"
        elif "text" in files:
            received = files["text"].stream
            assert isinstance(received, HashingSpool)
            spool, mimetype = received, files["text"].mimetype or "text/plain"
        else:
            return None
        try:
            if mimetype != "text/plain":
                raise _Refusal(415, "unsupported_text_type", f"the text part must be text/plain, not {mimetype!r}")
            if spool.size > self.max_text_bytes:
                raise _Refusal(413, "text_too_large", f"text part of {spool.size} bytes, over {self.max_text_bytes}")
            spool.seek(0)
            try:
                spool.read(self.max_text_bytes + 1).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _Refusal(400, "text_not_utf8", f"the text part is not UTF-8: {exc.reason} at byte {exc.start}") \
                    from exc
        except _Refusal:
            spool.discard()
            raise
        return spool

    @staticmethod
    def _upload_metadata(form: MultiDict[str, str], files: MultiDict[str, FileStorage]) -> dict[str, Any]:
        raw: str | None = form.get("metadata")
        if raw is None and "metadata" in files:
            # A client may send the metadata as a file part (with a filename); it is small.
            raw = files["metadata"].stream.read(MAX_METADATA_BYTES + 1).decode("utf-8", "replace")
        if raw is None:
            raise _Refusal(400, "missing_metadata", "multipart part 'metadata' (JSON) is required")
        try:
            metadata = json.loads(raw)
        except ValueError as exc:
            raise _Refusal(400, "bad_metadata", f"metadata is not JSON: {exc}") from exc
        if not isinstance(metadata, dict):
            raise _Refusal(400, "bad_metadata", "metadata must be a JSON object")
        missing = [name for name in _REQUIRED_UPLOAD_FIELDS if not metadata.get(name)]
        if missing:
            raise _Refusal(400, "metadata_missing_fields", f"metadata lacks {', '.join(missing)}")
        return metadata

    def _check_document_faults(self, endpoint: str, metadata: dict[str, Any], sha256: str | None,
                               size: int | None) -> None:
        fault = self.faults.take("document", endpoint, filename=metadata.get("filename"), sha256=sha256,
                                 size=size)
        if fault is not None:
            log.info("hub_fault_answer", kind=fault.kind, status=fault.status)
            raise _Refusal(int(fault.status or 422), f"simulated_{fault.kind}",
                           f"simulated fault: {fault.kind} ({metadata.get('filename')})", fault_kind=fault.kind)

    @staticmethod
    def _verify_upload(key: str, metadata: dict[str, Any], spool: HashingSpool) -> None:
        actual = spool.sha256
        if actual != key:
            raise _Refusal(422, "sha256_mismatch",
                           f"body sha256 {actual} differs from Idempotency-Key {key}")
        claimed = str(metadata.get("sha256", "")).lower()
        if claimed != actual:
            raise _Refusal(422, "sha256_mismatch",
                           f"body sha256 {actual} differs from metadata.sha256 {claimed}")
        size = metadata.get("size")
        if isinstance(size, int) and not isinstance(size, bool) and size != spool.size:
            raise _Refusal(422, "size_mismatch", f"body has {spool.size} bytes, metadata.size says {size}")

    def _store(self, key: str, metadata: dict[str, Any], spool: HashingSpool,
               text: HashingSpool | None = None) -> Response:
        doc, created = self.store.store(key, metadata, spool, text)
        if not created:
            log.info("hub_upload_duplicate", id=doc.id, sha256=key)
            return _json(self.duplicate_status, {"id": doc.id, "sha256": key, "status": "duplicate"})
        log.info("hub_document_stored", id=doc.id, sha256=key, size=doc.size,
                 previous_sha256=metadata.get("previous_sha256"))
        return _json(201, {"id": doc.id, "sha256": key, "status": "stored"})

    # ----- provenance, deletion, health ------------------------------------------------------

    def _document(self, request: Request, doc_id: str) -> HubDocument:
        """The stored document ``doc_id`` for an authenticated request; 404 when there is none."""
        self._check_token(request)
        doc = self.store.get(doc_id)
        if doc is None:
            raise _Refusal(404, "unknown_document", f"no document {doc_id}")
        return doc

    def _link_source(self, request: Request, doc_id: str) -> Response:
        doc = self._document(request, doc_id)
        metadata = request.get_json(silent=True)
        if not isinstance(metadata, dict):
            raise _Refusal(400, "bad_metadata", "the body must be the metadata JSON object")
        missing = [name for name in ("source", "source_id") if not metadata.get(name)]
        if missing:
            raise _Refusal(400, "metadata_missing_fields", f"metadata lacks {', '.join(missing)}")
        self._check_document_faults("sources", metadata, doc.sha256, None)
        claimed = str(metadata.get("sha256") or "").lower()
        if claimed and claimed != doc.sha256:
            raise _Refusal(422, "sha256_mismatch", f"document {doc_id} has sha256 {doc.sha256}, not {claimed}")
        status = self.store.link(doc, metadata)
        log.info("hub_source_linked", id=doc_id, source=metadata["source"], status=status)
        return _json(status, {"id": doc_id, "sha256": doc.sha256, "status": "linked" if status == 201 else "known"})

    def _update_enrichment(self, request: Request, doc_id: str) -> Response:
        doc = self._document(request, doc_id)
        if request.content_length is not None and request.content_length > self.max_text_bytes + MAX_METADATA_BYTES:
            raise _Refusal(413, "too_large", f"an enrichment update of {request.content_length} bytes")
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise _Refusal(400, "bad_enrichment", "the body must be a JSON object of enrichment fields")
        unknown = sorted(set(body) - set(ENRICHMENT_FIELDS) - {"text"})
        if unknown:
            raise _Refusal(400, "unknown_enrichment_field", f"unknown enrichment field(s): {', '.join(unknown)}")
        text = body.pop("text", None)
        if text is not None and not isinstance(text, str):
            raise _Refusal(400, "bad_text", "text must be a string")
        if text is not None and len(text.encode("utf-8", "surrogatepass")) > self.max_text_bytes:
            raise _Refusal(413, "text_too_large", f"text over {self.max_text_bytes} bytes")
        if text is not None:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise _Refusal(400, "text_not_utf8", "text holds code points UTF-8 cannot carry") from exc
        self._check_document_faults("enrichment", doc.metadata, doc.sha256, None)
        self.store.update_enrichment(doc, body, text)
        log.info("hub_enrichment_updated", id=doc_id, fields=sorted(body), text=text is not None)
        return _json(200, {"id": doc_id, "sha256": doc.sha256, "status": "updated"})

    def _update_metadata(self, request: Request, doc_id: str) -> Response:
        doc = self._document(request, doc_id)
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise _Refusal(400, "bad_metadata", "the body must be a JSON object naming a source item")
        unknown = sorted(set(body) - set(METADATA_IDENTITY) - set(METADATA_FIELDS))
        if unknown:
            raise _Refusal(400, "unknown_metadata_field", f"unknown metadata update field(s): {', '.join(unknown)}")
        missing = [name for name in ("source", "source_id") if not body.get(name)]
        if missing:
            raise _Refusal(400, "metadata_missing_fields", f"the update lacks {', '.join(missing)}")
        claimed = str(body.get("sha256") or "").lower()
        if claimed and claimed != doc.sha256:
            raise _Refusal(422, "sha256_mismatch", f"document {doc_id} has sha256 {doc.sha256}, not {claimed}")
        self._check_document_faults("metadata", doc.metadata, doc.sha256, None)
        fields = {name: body[name] for name in METADATA_FIELDS if name in body}
        if not self.store.update_metadata(doc, str(body["source"]), str(body["source_id"]), fields):
            raise _Refusal(404, "unknown_source_item", f"document {doc_id} has no live source item "
                                                       f"{body['source']}/{body['source_id']}")
        log.info("hub_metadata_updated", id=doc_id, source=body["source"], fields=sorted(fields))
        return _json(200, {"id": doc_id, "sha256": doc.sha256, "status": "updated"})

    def _text(self, request: Request, doc_id: str) -> Response:
        doc = self._document(request, doc_id)
        text = doc.text()
        if text is None:
            raise _Refusal(404, "no_text", f"document {doc_id} has no text")
        return Response(text.encode("utf-8"), status=200, content_type="text/plain; charset=utf-8")

    def _delete(self, request: Request) -> Response:
        self._check_token(request)
        source = request.args.get("source")
        source_id = request.args.get("source_id")
        if not source or not source_id:
            raise _Refusal(400, "missing_query", "source and source_id query parameters are required")
        hit = self.store.delete(source, source_id)
        log.info("hub_source_deleted", source=source, found=bool(hit), documents=len(hit))
        if not hit:
            raise _Refusal(404, "unknown_source_item", "no document carries that source item")
        return _json(204, None)

    def _health(self, request: Request) -> Response:
        self._check_token(request, optional=True)
        return _json(200, {"status": "ok"})

    # ----- steering ----------------------------------------------------------------------------

    def _serve_admin(self, endpoint: str, request: Request) -> Response:
        if endpoint == "sim_state":
            return _json(200, self.state())
        if endpoint == "sim_reset":
            self.reset()
            return _json(204, None)
        if endpoint == "sim_clear_faults":
            self.clear_faults()
            return _json(204, None)
        body = request.get_json(silent=True)
        specs = body.get("faults") if isinstance(body, dict) and "faults" in body else [body]
        if not isinstance(specs, list):
            return _error(400, "bad_fault", "faults must be a list")
        try:
            faults = [Fault.from_json(spec) for spec in specs]
        except (TypeError, ValueError) as exc:
            return _error(400, "bad_fault", str(exc))
        for fault in faults:
            self.faults.add(fault)
            log.info("hub_fault_set", kind=fault.kind, count=fault.count, seconds=fault.seconds)
        return _json(201, {"faults": [fault.to_json() for fault in faults]})


@dataclass
class RunningHub:
    """A simulator serving on a loopback port: ``url`` is the HUB_API_URL, ``sim`` the HubSimulator."""

    url: str
    sim: HubSimulator
    token: str
    server: ServerThread


@contextmanager
def running_hub(*, token: str = SANDBOX_TOKEN, data_dir: str | Path | None = None,
                ssl_context: ssl.SSLContext | None = None, **options: Any) -> Iterator[RunningHub]:
    """Starts a HubSimulator in a ServerThread for the ``with`` block.

    options: as HubSimulator's. ssl_context: serve HTTPS (see sandbox.tls) instead of HTTP.
    """
    sim = HubSimulator(token=token, data_dir=data_dir, **options)
    try:
        with ServerThread(sim.app, ssl_context=ssl_context) as server:
            yield RunningHub(url=server.url, sim=sim, token=token, server=server)
    finally:
        sim.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m sandbox.hub``: serve the simulator until SIGTERM / SIGINT. stdout: one JSON line
    (url, data_dir) for a parent process; stderr: where it listens and the HUB_* lines to use."""
    from sandbox.announce import announce

    parser = argparse.ArgumentParser(prog="python -m sandbox.hub", description="Knowledge Hub simulator")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--token", default=SANDBOX_TOKEN, help="the Bearer token to accept")
    parser.add_argument("--data-dir", default="var/hub-sim", help="where blobs and index.json are kept")
    parser.add_argument("--max-content-length", type=int, default=DEFAULT_MAX_CONTENT_LENGTH, help="bytes")
    parser.add_argument("--duplicate-status", type=int, choices=(200, 409), default=200)
    parser.add_argument("--max-text-bytes", type=int, default=DEFAULT_MAX_TEXT_BYTES, help="bytes")
    parser.add_argument("--memory", action="store_true",
                        help="keep the index in memory only (blobs still go to --data-dir): no index.json "
                             "rewritten after every upload, which would grow with the documents held")
    parser.add_argument("--log-level", default="INFO",
                        help="of the lines on stderr (a benchmark passes WARNING: no line built per upload)")
    parser.add_argument("--no-text-part", action="store_true",
                        help="behave as an older Hub: refuse an upload with a text part (400 unknown_part)")
    args = parser.parse_args(argv)
    # Logs go to stderr only: stdout carries the one "listening" line, and the service's log file is not ours.
    configure_logging(log_file="", level=args.log_level)
    sim = HubSimulator(token=args.token, data_dir=args.data_dir, max_content_length=args.max_content_length,
                       duplicate_status=args.duplicate_status, persist=not args.memory,
                       max_text_bytes=args.max_text_bytes, text_part=not args.no_text_part)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = ServerThread(sim.app, port=args.port, host=args.host).start()
    # One line on stdout so a parent process learns the URL (useful with --port 0); a person reads the
    # rest on stderr.
    print(json.dumps({"url": server.url, "data_dir": str(sim.data_dir)}), flush=True)
    announce("Knowledge Hub", server.url, {"HUB_API_URL": server.url, "HUB_API_TOKEN": args.token},
             out=sys.stderr)
    log.info("hub_listening", url=server.url, data_dir=str(sim.data_dir))
    try:
        while not stop.wait(0.5):
            pass
    finally:
        sim.clear_faults()
        server.stop()
        sim.store.save()
        shutil.rmtree(sim.incoming_dir, ignore_errors=True)
        log.info("hub_stopped", url=server.url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
