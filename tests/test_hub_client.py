"""The Hub client's answer classes (with ``responses``) and the local outbox's atomicity."""

from __future__ import annotations

import email.utils
import hashlib
import io
import json
import os
import time
from pathlib import Path

import pytest
import responses

from base.document import Document
from base.hub_client import HttpHub, HubDocumentMissing, HubRefused, OutboxHub
from utils.errors import AuthError, ThrottledError, TransientError
from utils.http import RetryPolicy

HUB = "http://hub.test"
UPLOAD = f"{HUB}/api/v1/documents"


def document(content: bytes = b"%PDF-1.7 work order", filename: str = "WO-1.pdf") -> Document:
    return Document(source="maximo", scope="all", source_id="WO-1/75", version="v1", filename=filename,
                    mime_type="application/pdf", size=len(content), sha256=hashlib.sha256(content).hexdigest(),
                    _content=io.BytesIO(content))


def hub(sleeps: list[float] | None = None, attempts: int = 4) -> HttpHub:
    client = HttpHub(HUB, "hub-secret-token")
    client.client.policy = RetryPolicy(attempts=attempts, backoff_base=0.01, retry_after_cap=60)
    client.client._sleep = (sleeps.append if sleeps is not None else (lambda s: None))
    return client


@responses.activate
@pytest.mark.parametrize("status", [200, 201, 409])
def test_stored_or_already_stored_is_success(status):
    responses.post(UPLOAD, json={"id": "doc-7"}, status=status)
    assert hub().upload(document()) == "doc-7"


@responses.activate
def test_upload_is_streamed_multipart_with_idempotency_key_and_bearer():
    responses.post(UPLOAD, json={"id": "doc-1"}, status=201)
    doc = document()
    hub().upload(doc)
    request = responses.calls[0].request
    assert request.headers["Idempotency-Key"] == doc.sha256
    assert request.headers["Authorization"] == "Bearer hub-secret-token"
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    body = request.body.read() if hasattr(request.body, "read") else request.body
    assert b"%PDF-1.7 work order" in body and b'name="metadata"' in body
    assert int(request.headers["Content-Length"]) == len(body)
    meta_json = body.split(b"\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0]
    assert json.loads(meta_json)["sha256"] == doc.sha256


@responses.activate
@pytest.mark.parametrize("status", [401, 403])
def test_auth_answers_stop_the_run(status):
    responses.post(UPLOAD, json={"error": "unauthorized"}, status=status)
    with pytest.raises(AuthError) as caught:
        hub().upload(document())
    assert "hub-secret-token" not in str(caught.value)


@responses.activate
@pytest.mark.parametrize("status", [400, 413, 415, 422])
def test_refusals_dead_letter_the_item(status):
    responses.post(UPLOAD, json={"reason": "unsupported file"}, status=status)
    with pytest.raises(HubRefused) as caught:
        hub().upload(document())
    assert caught.value.status == status and "unsupported file" in str(caught.value)
    assert len(responses.calls) == 1


@responses.activate
@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_answers_are_retried(status):
    responses.post(UPLOAD, status=status)
    responses.post(UPLOAD, json={"id": "doc-2"}, status=201)
    sleeps: list[float] = []
    assert hub(sleeps).upload(document()) == "doc-2"
    assert len(responses.calls) == 2 and len(sleeps) == 1


@responses.activate
def test_transient_answers_give_up_after_the_policy():
    for _ in range(3):
        responses.post(UPLOAD, status=500)
    with pytest.raises(TransientError):
        hub(attempts=3).upload(document())
    assert len(responses.calls) == 3


@responses.activate
def test_retry_after_in_seconds_is_honoured():
    responses.post(UPLOAD, status=429, headers={"Retry-After": "7"})
    responses.post(UPLOAD, json={"id": "d"}, status=201)
    sleeps: list[float] = []
    hub(sleeps).upload(document())
    assert sleeps == [7.0]


@responses.activate
def test_retry_after_as_http_date_is_honoured():
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    responses.post(UPLOAD, status=503, headers={"Retry-After": when})
    responses.post(UPLOAD, json={"id": "d"}, status=201)
    sleeps: list[float] = []
    hub(sleeps).upload(document())
    assert 17 <= sleeps[0] <= 21


@responses.activate
def test_retry_after_beyond_the_cap_ends_the_run_as_throttled():
    responses.post(UPLOAD, status=429, headers={"Retry-After": "3600"})
    with pytest.raises(ThrottledError) as caught:
        hub().upload(document())
    assert caught.value.retry_at > time.time() + 3000
    assert len(responses.calls) == 1


@responses.activate
def test_link_and_delete_and_health():
    responses.post(f"{UPLOAD}/doc-1/sources", status=201)
    responses.post(f"{UPLOAD}/gone/sources", status=404)
    responses.delete(UPLOAD, status=404)
    responses.get(f"{HUB}/api/v1/health", status=200)
    client = hub()
    client.link("doc-1", {"source": "email", "source_id": "m-1"})
    with pytest.raises(HubDocumentMissing):
        client.link("gone", {"source": "email", "source_id": "m-1"})
    client.delete("sharepoint", "01ABC")  # 404 means already gone: success
    assert "source=sharepoint" in responses.calls[2].request.url
    assert client.health()[0]
    assert responses.calls[3].request.headers["Authorization"] == "Bearer hub-secret-token"


def test_health_reports_a_refused_token(hub):
    ok, detail = HttpHub(hub.url, "not-the-hub-token").health()
    assert not ok and "HUB_API_TOKEN" in detail and "not-the-hub-token" not in detail
    assert HttpHub(hub.url, hub.token).health()[0]


def test_outbox_writes_one_folder_per_sha256(tmp_path: Path):
    outbox = OutboxHub(str(tmp_path / "outbox"))
    doc = document()
    assert outbox.upload(doc) == doc.sha256
    assert outbox.upload(document()) == doc.sha256  # idempotent
    folder = tmp_path / "outbox" / doc.sha256
    assert (folder / "WO-1.pdf").read_bytes() == b"%PDF-1.7 work order"
    assert json.loads((folder / "metadata.json").read_text())["source_id"] == "WO-1/75"
    outbox.link(doc.sha256, {"source": "email", "source_id": "m-9"})
    outbox.link(doc.sha256, {"source": "email", "source_id": "m-9"})
    assert len((folder / "sources.jsonl").read_text().splitlines()) == 1
    outbox.delete("sharepoint", "01ABC")
    (tombstone,) = (tmp_path / "outbox" / "_deleted" / "sharepoint").iterdir()
    assert json.loads(tombstone.read_text())["source_id"] == "01ABC"


def test_outbox_never_shows_a_partial_document(tmp_path: Path):
    outbox = OutboxHub(str(tmp_path / "outbox"))

    class Exploding(io.BytesIO):
        def read(self, size: int = -1) -> bytes:
            if self.tell() > 0:
                raise OSError("disk went away")
            return super().read(4)

    doc = document(b"0123456789")
    doc._content = Exploding(b"0123456789")
    with pytest.raises(TransientError, match="disk went away"):  # run-level: every document would fail alike
        outbox.upload(doc)
    assert os.listdir(tmp_path / "outbox") == []  # neither the document nor its temporary folder


def test_outbox_reserved_names_do_not_clash(tmp_path: Path):
    outbox = OutboxHub(str(tmp_path / "outbox"), fsync=False)
    doc = document(b"{}", filename="metadata.json")
    outbox.upload(doc)
    folder = tmp_path / "outbox" / doc.sha256
    assert (folder / "file-metadata.json").read_bytes() == b"{}"
    assert json.loads((folder / "metadata.json").read_text())["filename"] == "metadata.json"
