"""The Knowledge Hub simulator speaks DESIGN.md's Hub contract over a real socket, with faults on demand."""

from __future__ import annotations

import hashlib
import io
import json
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from base.document import Document
from base.hub_client import HttpHub, HubDocumentMissing
from sandbox import hub_faults
from sandbox.hub import HubSimulator, RunningHub, running_hub
from sandbox.servers import free_port
from sandbox.tls import CertAuthority

TOKEN = "sim-token-for-tests"
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shared_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    # One server for the module (stopping one takes up to its 0.5 s poll interval); each test resets it.
    with running_hub(token=TOKEN, data_dir=tmp_path_factory.mktemp("hub")) as running:
        yield running


@pytest.fixture
def hub(shared_hub: RunningHub) -> Iterator[RunningHub]:
    shared_hub.sim.reset()
    yield shared_hub
    shared_hub.sim.clear_faults()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def metadata_for(content: bytes, **overrides: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "source": "email", "source_id": "inbox/101/report.pdf", "version": "101", "filename": "report.pdf",
        "mime_type": "application/pdf", "size": len(content), "sha256": sha(content), "title": "Report",
        "language": "en", "department": "Engineering",
    }
    meta.update(overrides)
    return meta


def upload(base_url: str, content: bytes, *, token: str | None = TOKEN, key: str | None = "auto",
           timeout: float = 10, **meta: Any) -> requests.Response:
    metadata = metadata_for(content, **meta)
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if key is not None:
        headers["Idempotency-Key"] = sha(content) if key == "auto" else key
    files = {
        "metadata": (None, json.dumps(metadata), "application/json"),
        "file": (metadata["filename"], content, metadata["mime_type"]),
    }
    return requests.post(f"{base_url}/api/v1/documents", headers=headers, files=files, timeout=timeout)


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


# ----- upload ---------------------------------------------------------------------------------

def test_first_upload_is_stored_on_disk_and_answers_201_with_an_id(hub: RunningHub) -> None:
    content = b"%PDF-1.7 track inspection report"
    response = upload(hub.url, content)
    assert response.status_code == 201
    body = response.json()
    assert body["sha256"] == sha(content)
    doc = hub.sim.documents[body["id"]]
    assert Path(doc.path).read_bytes() == content
    assert doc.size == len(content)
    assert doc.metadata["source_id"] == "inbox/101/report.pdf"
    assert hub.sim.uploads_per_key == {sha(content): 1}
    assert hub.sim.stored_per_key == {sha(content): 1}


def test_repeat_upload_is_counted_answers_the_same_id_and_is_not_stored_twice(hub: RunningHub) -> None:
    content = b"invoice 2024-117"
    first = upload(hub.url, content)
    second = upload(hub.url, content)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["id"] == first.json()["id"]
    assert hub.sim.uploads_per_key[sha(content)] == 2
    assert hub.sim.stored_per_key[sha(content)] == 1
    assert len(hub.sim.documents) == 1
    assert [p.name for p in hub.sim.blob_dir.iterdir()] == [sha(content)]


def test_repeat_upload_answers_409_when_so_configured(tmp_path: Path) -> None:
    with running_hub(token=TOKEN, data_dir=tmp_path, duplicate_status=409) as running:
        first = upload(running.url, b"roster")
        second = upload(running.url, b"roster")
    assert second.status_code == 409
    assert second.json()["id"] == first.json()["id"]


def test_same_bytes_from_another_source_item_is_remembered_as_a_source(hub: RunningHub) -> None:
    content = b"circular 12"
    doc_id = upload(hub.url, content).json()["id"]
    upload(hub.url, content, source="sharepoint", source_id="drive-1/item-9")
    sources = {(s["source"], s["source_id"]) for s in hub.sim.documents[doc_id].sources}
    assert sources == {("email", "inbox/101/report.pdf"), ("sharepoint", "drive-1/item-9")}


def test_concurrent_uploads_of_one_key_store_it_once(hub: RunningHub) -> None:
    content = b"x" * 200_000
    answers: list[int] = []

    def send() -> None:
        answers.append(upload(hub.url, content).status_code)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [200] * 5 + [201]
    assert hub.sim.stored_per_key[sha(content)] == 1
    assert hub.sim.uploads_per_key[sha(content)] == 6


def test_body_not_matching_the_idempotency_key_is_refused_422(hub: RunningHub) -> None:
    response = upload(hub.url, b"real bytes", key=sha(b"other bytes"), sha256=sha(b"other bytes"))
    assert response.status_code == 422
    assert response.json()["error"] == "sha256_mismatch"
    assert hub.sim.documents == {}
    assert list(hub.sim.blob_dir.iterdir()) == []
    assert list(hub.sim.incoming_dir.iterdir()) == []


def test_metadata_sha256_not_matching_the_body_is_refused_422(hub: RunningHub) -> None:
    response = upload(hub.url, b"real bytes", sha256=sha(b"other"))
    assert response.status_code == 422
    assert "metadata.sha256" in response.json()["reason"]


def test_metadata_size_not_matching_the_body_is_refused_422(hub: RunningHub) -> None:
    response = upload(hub.url, b"twelve bytes", size=99)
    assert response.status_code == 422
    assert response.json()["error"] == "size_mismatch"


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_missing_or_wrong_token_is_401_and_nothing_is_stored(hub: RunningHub, token: str | None) -> None:
    response = upload(hub.url, b"payslip", token=token)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert hub.sim.documents == {}


def test_upload_without_idempotency_key_is_400(hub: RunningHub) -> None:
    response = upload(hub.url, b"payslip", key=None)
    assert response.status_code == 400
    assert response.json()["error"] == "missing_idempotency_key"


def test_upload_that_is_not_multipart_is_415(hub: RunningHub) -> None:
    response = requests.post(f"{hub.url}/api/v1/documents", data=b"raw",
                             headers={**auth(), "Idempotency-Key": sha(b"raw"),
                                      "Content-Type": "application/octet-stream"}, timeout=10)
    assert response.status_code == 415


def test_upload_without_metadata_part_is_400(hub: RunningHub) -> None:
    response = requests.post(f"{hub.url}/api/v1/documents", files={"file": ("a.txt", b"abc")},
                             headers={**auth(), "Idempotency-Key": sha(b"abc")}, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"] == "missing_metadata"


def test_upload_with_metadata_missing_source_id_is_400(hub: RunningHub) -> None:
    response = upload(hub.url, b"abc", source_id="")
    assert response.status_code == 400
    assert "source_id" in response.json()["reason"]


def test_body_over_max_content_length_is_413(tmp_path: Path) -> None:
    with running_hub(token=TOKEN, data_dir=tmp_path, max_content_length=10_000) as running:
        assert upload(running.url, b"z" * 20_000).status_code == 413
        assert upload(running.url, b"z" * 1_000).status_code == 201


def test_new_version_with_previous_sha256_supersedes_the_older_document(hub: RunningHub) -> None:
    old = upload(hub.url, b"roster v1").json()["id"]
    new = upload(hub.url, b"roster v2", version="102", previous_sha256=sha(b"roster v1")).json()["id"]
    assert hub.sim.documents[old].superseded is True
    assert hub.sim.documents[old].superseded_by == new
    assert hub.sim.documents[new].superseded is False


def test_large_upload_streams_to_disk_without_holding_it_in_memory(hub: RunningHub) -> None:
    block_count, block_size = 800, 64 * 1024  # 50 MiB in all
    blocks = [hashlib.sha256(str(i % 97).encode()).digest() * (block_size // 32) for i in range(97)]
    digest = hashlib.sha256()
    for i in range(block_count):
        digest.update(blocks[i % 97])
    total, sha256 = block_count * block_size, digest.hexdigest()
    boundary = uuid.uuid4().hex
    meta = metadata_for(b"", filename="tunnel-survey.bin", size=total, sha256=sha256)

    def body() -> Iterator[bytes]:
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n"
               f"Content-Type: application/json\r\n\r\n{json.dumps(meta)}\r\n"
               f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"tunnel-survey.bin\"\r\n"
               f"Content-Type: application/octet-stream\r\n\r\n").encode()
        for i in range(block_count):
            yield blocks[i % 97]
        yield f"\r\n--{boundary}--\r\n".encode()

    tracemalloc.start()
    try:
        # A generator body goes out with Transfer-Encoding: chunked, so the server has no length either.
        response = requests.post(f"{hub.url}/api/v1/documents", data=body(), timeout=60,
                                 headers={**auth(), "Idempotency-Key": sha256,
                                          "Content-Type": f"multipart/form-data; boundary={boundary}"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 201, response.text
    doc = hub.sim.documents[response.json()["id"]]
    assert doc.size == total
    on_disk = hashlib.sha256()
    with open(doc.path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            on_disk.update(chunk)
    assert on_disk.hexdigest() == sha256
    # Client and server share this process: together they stayed far below the 50 MiB sent.
    assert peak < 16 * 1024 * 1024, f"peak traced memory {peak} bytes"


# ----- the text part and the enrichment update ------------------------------------------------
CIRCULAR_TEXT = "സുരക്ഷാ സർക്കുലർ 12: platform screen doors"


def upload_with_text(base_url: str, content: bytes, text: bytes, *, content_type: str = "text/plain; charset=utf-8",
                     **meta: Any) -> requests.Response:
    metadata = metadata_for(content, **meta)
    files = {
        "metadata": (None, json.dumps(metadata), "application/json"),
        "text": ("text.txt", text, content_type),
        "file": (metadata["filename"], content, metadata["mime_type"]),
    }
    return requests.post(f"{base_url}/api/v1/documents", files=files, timeout=10,
                         headers={**auth(), "Idempotency-Key": sha(content)})


def put_enrichment(base_url: str, doc_id: str, body: Any, *, token: str | None = TOKEN) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.put(f"{base_url}/api/v1/documents/{doc_id}/enrichment", json=body, headers=headers, timeout=10)


def get_text(base_url: str, doc_id: str) -> requests.Response:
    return requests.get(f"{base_url}/api/v1/documents/{doc_id}/text", headers=auth(), timeout=10)


def test_text_part_is_stored_and_served_back(hub: RunningHub) -> None:
    response = upload_with_text(hub.url, b"%PDF circular", CIRCULAR_TEXT.encode())
    assert response.status_code == 201
    doc_id = response.json()["id"]
    served = get_text(hub.url, doc_id)
    assert served.status_code == 200 and served.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert served.content.decode("utf-8") == CIRCULAR_TEXT
    assert hub.sim.documents[doc_id].text_bytes == len(CIRCULAR_TEXT.encode())
    assert list(hub.sim.incoming_dir.iterdir()) == []


def test_a_document_without_text_has_none_to_serve(hub: RunningHub) -> None:
    doc_id = upload(hub.url, b"plain upload").json()["id"]
    assert get_text(hub.url, doc_id).status_code == 404
    assert get_text(hub.url, "doc-999999").json()["error"] == "unknown_document"


def test_text_part_over_its_cap_is_413_and_nothing_is_stored(tmp_path: Path) -> None:
    with running_hub(token=TOKEN, data_dir=tmp_path, max_text_bytes=30) as running:
        refused = upload_with_text(running.url, b"doc", CIRCULAR_TEXT.encode())
        assert (refused.status_code, refused.json()["error"]) == (413, "text_too_large")
        assert running.sim.documents == {} and list(running.sim.incoming_dir.iterdir()) == []
        assert upload_with_text(running.url, b"doc", b"short").status_code == 201


def test_text_part_that_is_not_utf8_is_400(hub: RunningHub) -> None:
    refused = upload_with_text(hub.url, b"doc", "സുരക്ഷ".encode("utf-16"))
    assert (refused.status_code, refused.json()["error"]) == (400, "text_not_utf8")
    assert hub.sim.documents == {}


def test_text_part_that_is_not_text_plain_is_415(hub: RunningHub) -> None:
    refused = upload_with_text(hub.url, b"doc", b"<p>hi</p>", content_type="text/html")
    assert refused.status_code == 415


def test_older_hub_refuses_the_text_part_with_400_and_takes_the_upload_without_it(tmp_path: Path) -> None:
    with running_hub(token=TOKEN, data_dir=tmp_path, text_part=False) as old:
        refused = upload_with_text(old.url, b"doc", b"some text")
        assert refused.status_code == 400
        assert refused.json() == {"error": "unknown_part", "reason": "unknown multipart part: text"}
        assert old.sim.documents == {} and list(old.sim.incoming_dir.iterdir()) == []
        assert upload(old.url, b"doc").status_code == 201
        assert old.sim.uploads_per_key[sha(b"doc")] == 2


def test_enrichment_update_replaces_fields_and_text_and_is_idempotent(hub: RunningHub) -> None:
    doc_id = upload_with_text(hub.url, b"scan", b"old ocr text").json()["id"]
    update = {"language": "ml", "department": "Safety", "department_confidence": 0.9,
              "department_terms": ["സുരക്ഷ"], "sensitive": {"pan": 1},
              "extraction": {"method": "ocr", "pages": 1, "ocr_pages": 1, "chars": 40, "truncated": False},
              "text": CIRCULAR_TEXT}
    first = put_enrichment(hub.url, doc_id, update)
    second = put_enrichment(hub.url, doc_id, update)
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.json() == second.json() == {"id": doc_id, "sha256": sha(b"scan"), "status": "updated"}
    doc = hub.sim.documents[doc_id]
    assert doc.metadata["department"] == "Safety" and doc.metadata["sensitive"] == {"pan": 1}
    assert doc.metadata["source_id"] == "inbox/101/report.pdf"  # upload metadata kept
    assert doc.enrichment_updates == 2 and get_text(hub.url, doc_id).content.decode() == CIRCULAR_TEXT
    assert put_enrichment(hub.url, doc_id, {"department": "Finance"}).status_code == 200
    assert get_text(hub.url, doc_id).content.decode() == CIRCULAR_TEXT  # no text in the update: kept
    assert put_enrichment(hub.url, doc_id, {"text": ""}).status_code == 200
    assert get_text(hub.url, doc_id).status_code == 404


def test_enrichment_update_of_an_unknown_document_is_404(hub: RunningHub) -> None:
    response = put_enrichment(hub.url, "doc-999999", {"language": "en"})
    assert (response.status_code, response.json()["error"]) == (404, "unknown_document")


@pytest.mark.parametrize(("body", "status", "error"), [
    (["not", "an", "object"], 400, "bad_enrichment"),
    ({"departmnet": "Safety"}, 400, "unknown_enrichment_field"),
    ({"text": 12}, 400, "bad_text"),
    ({"text": "x" * 101}, 413, "text_too_large"),
])
def test_enrichment_update_refusals(tmp_path: Path, body: Any, status: int, error: str) -> None:
    with running_hub(token=TOKEN, data_dir=tmp_path, max_text_bytes=100) as running:
        doc_id = upload(running.url, b"memo").json()["id"]
        response = put_enrichment(running.url, doc_id, body)
        assert (response.status_code, response.json()["error"]) == (status, error)
        assert running.sim.documents[doc_id].enrichment_updates == 0


def test_enrichment_update_needs_the_token(hub: RunningHub) -> None:
    doc_id = upload(hub.url, b"memo").json()["id"]
    assert put_enrichment(hub.url, doc_id, {"language": "en"}, token=None).status_code == 401


def test_http_hub_sends_text_and_enrichment_that_the_simulator_keeps(hub: RunningHub) -> None:
    content = b"%PDF-1.7 safety circular"
    document = Document(source="sharepoint", scope="drive-1", source_id="item-4", version="v1", filename="c.pdf",
                        mime_type="application/pdf", size=len(content), sha256=sha(content),
                        content_text=CIRCULAR_TEXT, extraction={"method": "text-layer", "chars": 41},
                        _content=io.BytesIO(content))
    client = HttpHub(hub.url, TOKEN)
    hub_id = client.upload(document)
    assert hub.sim.documents[hub_id].text() == CIRCULAR_TEXT
    assert hub.sim.documents[hub_id].metadata["extraction"]["method"] == "text-layer"
    client.update_enrichment(hub_id, {"department": "Safety", "language": "mixed"}, CIRCULAR_TEXT + " (rev 2)")
    assert hub.sim.documents[hub_id].metadata["department"] == "Safety"
    assert hub.sim.documents[hub_id].text() == CIRCULAR_TEXT + " (rev 2)"
    with pytest.raises(HubDocumentMissing):
        client.update_enrichment("doc-999999", {"department": "Safety"}, None)


def test_texts_persist_across_a_restart_and_reset_removes_them(tmp_path: Path) -> None:
    with running_hub(token=TOKEN, data_dir=tmp_path, persist=True) as first:
        doc_id = upload_with_text(first.url, b"register", CIRCULAR_TEXT.encode()).json()["id"]
        put_enrichment(first.url, doc_id, {"department": "Finance"})
    with running_hub(token=TOKEN, data_dir=tmp_path, persist=True) as restarted:
        assert get_text(restarted.url, doc_id).content.decode() == CIRCULAR_TEXT
        assert restarted.sim.documents[doc_id].metadata["department"] == "Finance"
        restarted.sim.reset()
        assert list(restarted.sim.store.text_dir.iterdir()) == []


# ----- provenance, deletion, health -----------------------------------------------------------

def test_provenance_is_201_first_then_200_for_the_same_source_item(hub: RunningHub) -> None:
    content = b"board minutes"
    doc_id = upload(hub.url, content).json()["id"]
    link = metadata_for(content, source="whatsapp", source_id="wamid.HBgL")
    first = requests.post(f"{hub.url}/api/v1/documents/{doc_id}/sources", json=link, headers=auth(), timeout=10)
    again = requests.post(f"{hub.url}/api/v1/documents/{doc_id}/sources", json=link, headers=auth(), timeout=10)
    assert (first.status_code, again.status_code) == (201, 200)
    assert [(p["source"], p["status"]) for p in hub.sim.provenance] == [("whatsapp", 201), ("whatsapp", 200)]
    assert hub.sim.documents[doc_id].has_source("whatsapp", "wamid.HBgL") is not None
    assert hub.sim.stored_per_key[sha(content)] == 1


def test_provenance_for_an_unknown_document_is_404(hub: RunningHub) -> None:
    response = requests.post(f"{hub.url}/api/v1/documents/doc-999999/sources",
                             json=metadata_for(b"x"), headers=auth(), timeout=10)
    assert response.status_code == 404


def test_provenance_with_another_sha256_is_422(hub: RunningHub) -> None:
    doc_id = upload(hub.url, b"one").json()["id"]
    response = requests.post(f"{hub.url}/api/v1/documents/{doc_id}/sources",
                             json=metadata_for(b"two", source_id="other"), headers=auth(), timeout=10)
    assert response.status_code == 422


def test_provenance_needs_the_token(hub: RunningHub) -> None:
    doc_id = upload(hub.url, b"one").json()["id"]
    response = requests.post(f"{hub.url}/api/v1/documents/{doc_id}/sources", json=metadata_for(b"one"),
                             timeout=10)
    assert response.status_code == 401


def test_delete_of_a_known_source_item_is_204_and_marks_the_document_deleted(hub: RunningHub) -> None:
    doc_id = upload(hub.url, b"drawing").json()["id"]
    response = requests.delete(f"{hub.url}/api/v1/documents", headers=auth(), timeout=10,
                               params={"source": "email", "source_id": "inbox/101/report.pdf"})
    assert response.status_code == 204
    assert hub.sim.documents[doc_id].deleted is True
    assert hub.sim.deletions[0]["document_ids"] == [doc_id]


def test_delete_keeps_the_document_while_another_source_still_has_it(hub: RunningHub) -> None:
    doc_id = upload(hub.url, b"drawing").json()["id"]
    requests.post(f"{hub.url}/api/v1/documents/{doc_id}/sources", headers=auth(), timeout=10,
                  json=metadata_for(b"drawing", source="maximo", source_id="WO-77/3"))
    requests.delete(f"{hub.url}/api/v1/documents", headers=auth(), timeout=10,
                    params={"source": "email", "source_id": "inbox/101/report.pdf"})
    assert hub.sim.documents[doc_id].deleted is False


def test_delete_of_an_unknown_source_item_is_404_and_recorded(hub: RunningHub) -> None:
    response = requests.delete(f"{hub.url}/api/v1/documents", headers=auth(), timeout=10,
                               params={"source": "sharepoint", "source_id": "nope"})
    assert response.status_code == 404
    assert hub.sim.deletions[0]["status"] == 404


def test_health_is_200_ok(hub: RunningHub) -> None:
    response = requests.get(f"{hub.url}/api/v1/health", timeout=10)
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_health_with_a_wrong_token_is_401(hub: RunningHub) -> None:
    response = requests.get(f"{hub.url}/api/v1/health", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert response.status_code == 401


# ----- faults ---------------------------------------------------------------------------------

def test_error_fault_answers_the_next_n_requests_then_stops(hub: RunningHub) -> None:
    hub.sim.set_fault("error", status=503, count=2)
    answers = [upload(hub.url, b"work order").status_code for _ in range(3)]
    assert answers == [503, 503, 201]
    assert hub.sim.uploads_per_key[sha(b"work order")] == 3
    assert hub.sim.stored_per_key[sha(b"work order")] == 1


def test_error_fault_makes_health_answer_503(hub: RunningHub) -> None:
    hub.sim.set_fault("error", status=503, endpoint="health")
    assert requests.get(f"{hub.url}/api/v1/health", timeout=10).status_code == 503
    assert upload(hub.url, b"unaffected").status_code == 201
    hub.sim.clear_faults()
    assert requests.get(f"{hub.url}/api/v1/health", timeout=10).status_code == 200


def test_throttle_fault_answers_429_with_retry_after_for_n_requests(hub: RunningHub) -> None:
    hub.sim.set_fault("throttle", retry_after=7, count=1)
    throttled = upload(hub.url, b"invoice")
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "7"
    assert upload(hub.url, b"invoice").status_code == 201


class HandClock:
    """Stands in for the ``time`` module of sandbox.hub_faults: its monotonic clock moves only by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 60) -> None:
    """Returns once ``predicate()`` is true; ``timeout`` (seconds) only bounds a hang."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_throttle_fault_for_some_seconds_then_lets_requests_through(hub: RunningHub, monkeypatch) -> None:
    # The fault's window runs on the simulator's clock, moved by hand here: however slowly the
    # requests are served, the first two arrive inside the half second and the third after it.
    clock = HandClock()
    monkeypatch.setattr(hub_faults, "time", clock)
    hub.sim.set_fault("throttle", retry_after=1, seconds=0.5)
    assert upload(hub.url, b"invoice").status_code == 429
    clock.now += 0.4
    assert upload(hub.url, b"invoice").status_code == 429
    clock.now += 0.2  # 0.6 s after the fault was set
    assert upload(hub.url, b"invoice").status_code == 201


def test_slow_fault_outlasts_a_client_read_timeout_and_the_retry_is_deduplicated(hub: RunningHub) -> None:
    hub.sim.set_fault("slow", delay=1.5, count=1)
    with pytest.raises(requests.ReadTimeout):
        upload(hub.url, b"incident report", timeout=0.4)
    retry = upload(hub.url, b"incident report")
    assert retry.status_code in (200, 201)
    key = sha(b"incident report")
    # The abandoned slow request is logged once it has answered (its sleep ended or was cut short).
    wait_until(lambda: len([r for r in hub.sim.requests if r["key"] == key]) == 2, "the slow request's answer")
    assert [r["fault"] for r in hub.sim.requests if r["key"] == key].count("slow") == 1
    assert hub.sim.stored_per_key[key] == 1
    assert hub.sim.uploads_per_key[key] == 2


def test_reject_fault_refuses_the_chosen_document_by_filename_until_cleared(hub: RunningHub) -> None:
    hub.sim.set_fault("reject", match="bad.pdf")
    assert upload(hub.url, b"bad", filename="bad.pdf").status_code == 422
    assert upload(hub.url, b"bad", filename="bad.pdf").status_code == 422
    assert upload(hub.url, b"good", filename="good.pdf").status_code == 201
    hub.sim.clear_faults()
    assert upload(hub.url, b"bad", filename="bad.pdf").status_code == 201


def test_reject_fault_by_sha256_with_a_chosen_status(hub: RunningHub) -> None:
    hub.sim.set_fault("reject", match=sha(b"odd"), status=415)
    assert upload(hub.url, b"odd").status_code == 415
    assert hub.sim.documents == {}


def test_too_large_fault_refuses_files_above_the_size_with_413(hub: RunningHub) -> None:
    hub.sim.set_fault("too_large", max_size=1000)
    assert upload(hub.url, b"s" * 1001).status_code == 413
    assert upload(hub.url, b"s" * 1000).status_code == 201


def test_forbidden_fault_answers_403(hub: RunningHub) -> None:
    hub.sim.set_fault("forbidden", count=1)
    assert upload(hub.url, b"memo").status_code == 403
    assert upload(hub.url, b"memo").status_code == 201


def test_drop_fault_closes_the_connection_without_an_answer(hub: RunningHub) -> None:
    hub.sim.set_fault("drop", count=1)
    with pytest.raises(requests.ConnectionError):
        upload(hub.url, b"d" * 300_000)
    assert upload(hub.url, b"d" * 300_000).status_code == 201
    assert [r["fault"] for r in hub.sim.requests] == ["drop", None]


def test_fault_limited_to_one_endpoint_leaves_the_others_alone(hub: RunningHub) -> None:
    hub.sim.set_fault("error", status=500, endpoint="delete")
    assert upload(hub.url, b"memo").status_code == 201
    response = requests.delete(f"{hub.url}/api/v1/documents", headers=auth(), timeout=10,
                               params={"source": "email", "source_id": "inbox/101/report.pdf"})
    assert response.status_code == 500


def test_persisted_index_is_loaded_by_a_restarted_simulator(tmp_path: Path) -> None:
    with running_hub(token=TOKEN, data_dir=tmp_path, persist=True) as first:
        doc_id = upload(first.url, b"asset register").json()["id"]
    with running_hub(token=TOKEN, data_dir=tmp_path, persist=True) as restarted:
        again = upload(restarted.url, b"asset register")
        fresh = upload(restarted.url, b"another register").json()["id"]
    assert (again.status_code, again.json()["id"]) == (200, doc_id)
    assert fresh != doc_id
    assert restarted.sim.uploads_per_key[sha(b"asset register")] == 2


def test_hub_serves_https_with_a_sandbox_certificate(tmp_path: Path) -> None:
    authority = CertAuthority(str(tmp_path / "ca"))
    with running_hub(token=TOKEN, data_dir=tmp_path / "hub",
                     ssl_context=authority.issue().server_context()) as running:
        assert running.url.startswith("https://")
        response = requests.get(f"{running.url}/api/v1/health", verify=str(authority.ca_path), timeout=10)
    assert response.status_code == 200


def test_unknown_fault_kind_is_refused() -> None:
    sim = HubSimulator(token=TOKEN)
    try:
        with pytest.raises(ValueError, match="unknown fault kind"):
            sim.set_fault("explode")
    finally:
        sim.close()


# ----- steering over HTTP and the process entry point -----------------------------------------

def test_sim_endpoints_set_faults_report_state_and_reset(hub: RunningHub) -> None:
    posted = requests.post(f"{hub.url}/_sim/faults", json={"kind": "error", "status": 502, "count": 1}, timeout=10)
    assert posted.status_code == 201
    assert upload(hub.url, b"plan").status_code == 502
    assert upload(hub.url, b"plan").status_code == 201
    state = requests.get(f"{hub.url}/_sim/state", timeout=10).json()
    assert state["uploads_per_key"] == {sha(b"plan"): 2}
    assert [doc["sha256"] for doc in state["documents"].values()] == [sha(b"plan")]
    assert requests.post(f"{hub.url}/_sim/faults", json={"kind": "nope"}, timeout=10).status_code == 400
    assert requests.post(f"{hub.url}/_sim/reset", timeout=10).status_code == 204
    assert requests.get(f"{hub.url}/_sim/state", timeout=10).json()["documents"] == {}
    assert list(hub.sim.blob_dir.iterdir()) == []


def test_sim_faults_delete_clears_every_fault(hub: RunningHub) -> None:
    requests.post(f"{hub.url}/_sim/faults", timeout=10,
                  json={"faults": [{"kind": "throttle", "retry_after": 2}, {"kind": "error"}]})
    assert upload(hub.url, b"plan").status_code == 429
    assert requests.delete(f"{hub.url}/_sim/faults", timeout=10).status_code == 204
    assert upload(hub.url, b"plan").status_code == 201


def _wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert process.poll() is None, "the hub process exited early"
        try:
            if requests.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError("the hub process did not become healthy")


def test_hub_runs_as_a_process_steered_through_sim_endpoints_and_persists(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "hub-proc"
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox.hub", "--port", str(port), "--token", TOKEN, "--data-dir", str(data_dir)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        assert json.loads(process.stdout.readline())["url"] == url
        _wait_healthy(url, process)
        requests.post(f"{url}/_sim/faults", json={"kind": "error", "status": 503, "count": 1}, timeout=10)
        assert upload(url, b"safety circular").status_code == 503
        doc_id = upload(url, b"safety circular").json()["id"]
        state = requests.get(f"{url}/_sim/state", timeout=10).json()
        assert state["uploads_per_key"][sha(b"safety circular")] == 2
        assert state["stored_per_key"][sha(b"safety circular")] == 1
        assert (data_dir / "blobs" / sha(b"safety circular")).read_bytes() == b"safety circular"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    assert process.returncode == 0
    index = json.loads((data_dir / "index.json").read_text())
    assert index["documents"][doc_id]["sha256"] == sha(b"safety circular")
    assert index["uploads_per_key"][sha(b"safety circular")] == 2


def test_hub_process_with_memory_keeps_no_index_file_and_still_stores_the_bytes(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub-memory"
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox.hub", "--port", "0", "--token", TOKEN, "--data-dir", str(data_dir),
         "--memory", "--log-level", "WARNING"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        url = json.loads(process.stdout.readline())["url"]
        _wait_healthy(url, process)
        assert upload(url, b"depot circular").status_code == 201
        assert upload(url, b"depot circular").status_code == 200  # still idempotent: the index is in memory
        assert (data_dir / "blobs" / sha(b"depot circular")).read_bytes() == b"depot circular"
        assert not (data_dir / "index.json").exists()
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert not (data_dir / "index.json").exists()
    assert "hub_document_stored" not in stderr  # --log-level WARNING: no line per upload


# ----- the metadata update (a rename or a move at the source) ---------------------------------------

def put_metadata(base_url: str, doc_id: str, body: Any, *, token: str | None = TOKEN) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.put(f"{base_url}/api/v1/documents/{doc_id}/metadata", json=body, headers=headers, timeout=10)


def renamed(content: bytes, **fields: Any) -> dict[str, Any]:
    return {"source": "email", "source_id": "inbox/101/report.pdf", "sha256": sha(content), "version": "101",
            "filename": "report 2025.pdf", "title": "Report 2025", "source_url": "imap://mail/INBOX/101",
            "extra": {"path": "/Reports/report 2025.pdf"}, **fields}


def test_metadata_update_renames_the_document_it_was_stored_from_and_is_idempotent(hub: RunningHub) -> None:
    content = b"quarterly report"
    doc_id = upload(hub.url, content).json()["id"]
    first = put_metadata(hub.url, doc_id, renamed(content))
    again = put_metadata(hub.url, doc_id, renamed(content))
    assert (first.status_code, again.status_code) == (200, 200)
    assert first.json() == {"id": doc_id, "sha256": sha(content), "status": "updated"}
    doc = hub.sim.documents[doc_id]
    assert (doc.metadata["filename"], doc.metadata["title"], doc.metadata["extra"]) == (
        "report 2025.pdf", "Report 2025", {"path": "/Reports/report 2025.pdf"})
    assert doc.metadata["department"] == "Engineering"  # what the update does not name stays
    assert doc.has_source("email", "inbox/101/report.pdf")["filename"] == "report 2025.pdf"
    assert doc.metadata_updates == 2 and len(hub.sim.documents) == 1 and hub.sim.stored_per_key[sha(content)] == 1
    assert [u["document_id"] for u in hub.sim.metadata_updates] == [doc_id, doc_id]


def test_metadata_update_of_a_provenance_source_changes_that_source_only(hub: RunningHub) -> None:
    content = b"drawing"
    doc_id = upload(hub.url, content).json()["id"]
    requests.post(f"{hub.url}/api/v1/documents/{doc_id}/sources", headers=auth(), timeout=10,
                  json=metadata_for(content, source="sharepoint", source_id="01ITEM"))
    response = put_metadata(hub.url, doc_id, renamed(content, source="sharepoint", source_id="01ITEM",
                                                     filename="drawing rev C.pdf"))
    assert response.status_code == 200
    doc = hub.sim.documents[doc_id]
    assert doc.metadata["filename"] == "report.pdf"
    assert doc.has_source("sharepoint", "01ITEM")["filename"] == "drawing rev C.pdf"


@pytest.mark.parametrize(("body", "status", "error"), [
    (["not", "an", "object"], 400, "bad_metadata"),
    ({"source": "email", "source_id": "inbox/101/report.pdf", "language": "en"}, 400, "unknown_metadata_field"),
    ({"source": "email", "filename": "x.pdf"}, 400, "metadata_missing_fields"),
    ({"source": "email", "source_id": "inbox/101/report.pdf", "sha256": "0" * 64}, 422, "sha256_mismatch"),
    ({"source": "email", "source_id": "inbox/999/other.pdf", "filename": "x.pdf"}, 404, "unknown_source_item"),
])
def test_metadata_update_refusals(hub: RunningHub, body: Any, status: int, error: str) -> None:
    doc_id = upload(hub.url, b"memo").json()["id"]
    response = put_metadata(hub.url, doc_id, body)
    assert (response.status_code, response.json()["error"]) == (status, error)
    assert hub.sim.documents[doc_id].metadata_updates == 0 and hub.sim.metadata_updates == []


def test_metadata_update_of_an_unknown_or_deleted_item_is_404_and_needs_the_token(hub: RunningHub) -> None:
    assert put_metadata(hub.url, "doc-999999", renamed(b"memo")).status_code == 404
    doc_id = upload(hub.url, b"memo").json()["id"]
    assert put_metadata(hub.url, doc_id, renamed(b"memo"), token=None).status_code == 401
    requests.delete(f"{hub.url}/api/v1/documents", headers=auth(), timeout=10,
                    params={"source": "email", "source_id": "inbox/101/report.pdf"})
    assert put_metadata(hub.url, doc_id, renamed(b"memo")).status_code == 404


def test_http_hub_metadata_update_retried_after_a_slow_answer_leaves_one_document(hub: RunningHub) -> None:
    content = b"incident report"
    doc_id = upload(hub.url, content).json()["id"]
    hub.sim.set_fault("slow", delay=1.5, count=1, endpoint="metadata")
    client = HttpHub(hub.url, TOKEN, timeout=(2.0, 0.4))
    client.update_metadata(doc_id, renamed(content))  # the first try times out, the retry answers
    wait_until(lambda: len([r for r in hub.sim.requests if r["endpoint"] == "metadata"]) == 2,
               "the slow request's answer")
    doc = hub.sim.documents[doc_id]
    assert doc.metadata["filename"] == "report 2025.pdf" and doc.metadata_updates == 2
    assert len(hub.sim.documents) == 1 and hub.sim.stored_per_key[sha(content)] == 1
    with pytest.raises(HubDocumentMissing):
        client.update_metadata("doc-999999", renamed(content))


def test_metadata_updates_persist_across_a_restart(tmp_path: Path) -> None:
    with running_hub(token=TOKEN, data_dir=tmp_path, persist=True) as first:
        doc_id = upload(first.url, b"register").json()["id"]
        put_metadata(first.url, doc_id, renamed(b"register"))
    with running_hub(token=TOKEN, data_dir=tmp_path, persist=True) as restarted:
        assert restarted.sim.documents[doc_id].metadata["filename"] == "report 2025.pdf"
        assert restarted.sim.documents[doc_id].metadata_updates == 1
        assert [u["document_id"] for u in restarted.sim.metadata_updates] == [doc_id]
