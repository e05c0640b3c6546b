"""The Hub client's answer classes (with ``responses``), its redirects (real servers: a 307/308 re-sends
the upload from the spool file; the token and the Idempotency-Key never leave the Hub's origin), the
text part and the enrichment update, and the local outbox's atomicity and text.txt."""

from __future__ import annotations

import email.utils
import hashlib
import io
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import responses
from werkzeug.formparser import parse_form_data
from werkzeug.wrappers import Response

from base.document import Document
from base.hub_client import HttpHub, HubDocumentMissing, HubRefused, OutboxHub, hub_from_settings
from base.hub_parts import UPLOAD_BLOCK, capped_utf8
from config.settings import SettingError, Settings
from sandbox.hub import HubSimulator
from sandbox.servers import ServerThread
from tests.helpers import FakeFile, ListConnector
from tests.hostile_servers import Scripted, deeply_nested, redirect
from utils.errors import AuthError, OriginNotAllowed, ThrottledError, TransientError
from utils.http import HttpClient, Origin, RetryPolicy

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
    before = time.time()
    due = math.floor(before + 20)  # an HTTP date has whole seconds
    responses.post(UPLOAD, status=503, headers={"Retry-After": email.utils.formatdate(due, usegmt=True)})
    responses.post(UPLOAD, json={"id": "d"}, status=201)
    sleeps: list[float] = []
    hub(sleeps).upload(document())
    after = time.time()
    # The wait is the date less the time it was read, which lies between these two readings however
    # long the machine took to get there.
    assert due - after <= sleeps[0] <= due - before


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


@responses.activate
def test_answer_nested_too_deeply_is_read_as_an_unreadable_reason():
    responses.post(UPLOAD, body=deeply_nested(), status=422)
    responses.post(UPLOAD, body=deeply_nested(), status=201)
    with pytest.raises(HubRefused, match="422"):
        hub().upload(document())
    assert hub().upload(document()) == document().sha256  # no id readable: the sha256 stands for it


# -- redirects (real servers) -------------------------------------------------------------------------
HUB_TOKEN = "hub-token-for-redirect-tests"


def _moved(sim: HubSimulator, status: int, elsewhere: str = "") -> Any:
    """The Hub, except that everything under ``/old`` answers ``status`` to the same path without
    ``/old``: on this server, or on ``elsewhere``. The redirect is sent before the body is read."""
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/old/"):
            return redirect(elsewhere + path[len("/old"):], status)(environ, start_response)
        return sim.app(environ, start_response)
    return app


def _redirect_test_hub(base_url: str) -> HttpHub:
    # One try and a short read timeout: a client re-sending a consumed body would wait for the Hub
    # to read bytes that never come, until this timeout.
    return HttpHub(base_url, HUB_TOKEN, client=HttpClient("hub", timeout=(2.0, 5.0), policy=RetryPolicy(attempts=1)))


@pytest.mark.parametrize("status", [307, 308])
def test_redirect_within_the_hub_sends_the_upload_again_from_the_spool_file(status, tmp_path):
    content = b"%PDF-1.7 drawing " + bytes(range(256)) * 2000
    sim = HubSimulator(token=HUB_TOKEN, data_dir=tmp_path / "hub")
    try:
        with ServerThread(_moved(sim, status)) as server:
            doc = document(content, filename="drawing.pdf")
            hub_id = _redirect_test_hub(f"{server.url}/old").upload(doc)
    finally:
        sim.close()
    stored = sim.document_by_sha256(doc.sha256)
    assert stored is not None and hub_id == stored.id and stored.size == len(content)
    assert Path(stored.path).read_bytes() == content
    assert sim.uploads_per_key[doc.sha256] == 1


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirect_to_another_origin_gets_neither_the_token_nor_the_idempotency_key(status, tmp_path):
    sim = HubSimulator(token=HUB_TOKEN, data_dir=tmp_path / "hub")
    foreign = Scripted(lambda r: Response('{"id": "stolen"}', status=201, mimetype="application/json"))
    try:
        with ServerThread(foreign) as elsewhere, ServerThread(_moved(sim, status, elsewhere.url)) as server:
            doc = document()
            with pytest.raises(OriginNotAllowed) as caught:
                _redirect_test_hub(f"{server.url}/old").upload(doc)
    finally:
        sim.close()
    message = str(caught.value)
    assert str(Origin.of(elsewhere.url)) in message and "HUB_API_URL" in message
    assert doc.sha256 not in message and HUB_TOKEN not in message
    assert foreign.seen == []


def test_hub_redirect_elsewhere_ends_the_run_with_a_config_error(tmp_path, settings):
    sim = HubSimulator(token=HUB_TOKEN, data_dir=tmp_path / "hub")
    foreign = Scripted()
    try:
        with ServerThread(foreign) as elsewhere, ServerThread(_moved(sim, 307, elsewhere.url)) as server:
            connector = ListConnector({"s": [FakeFile("doc-1", b"%PDF-1.7 one")]}, settings=settings,
                                      hub=_redirect_test_hub(f"{server.url}/old"))
            summary = connector.sync_documents({})
    finally:
        sim.close()
    assert summary.state == "config_error", summary.as_dict()
    assert str(Origin.of(elsewhere.url)) in summary.scopes[0].error
    assert foreign.seen == []


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


def test_outbox_keeps_a_complete_document_whose_file_is_named_text_txt_apart_from_its_text(tmp_path: Path):
    outbox = OutboxHub(str(tmp_path / "outbox"), fsync=False)
    doc = document(b"notes", filename="text.txt")
    doc.content_text = "extracted notes"
    outbox.upload(doc)
    folder = tmp_path / "outbox" / doc.sha256
    assert (folder / "file-text.txt").read_bytes() == b"notes"
    assert (folder / "text.txt").read_text(encoding="utf-8") == "extracted notes"


# -- the text part --------------------------------------------------------------------------------
MALAYALAM = "കൊച്ചി മെട്രോ റെയിൽ സുരക്ষാ സർക്കുലർ"  # every letter is 3 bytes of UTF-8


def with_text(text: str, content: bytes = b"%PDF-1.7 circular", **extraction: Any) -> Document:
    doc = document(content, filename="circular.pdf")
    doc.content_text = text
    doc.extraction = {"method": "text-layer", "pages": 1, "chars": len(text), "truncated": False, **extraction}
    return doc


def parts_of(request: Any) -> tuple[bytes, Any, Any]:
    """The raw body and werkzeug's reading of a captured multipart request (form fields, files)."""
    body = request.body.read() if hasattr(request.body, "read") else request.body
    environ = {"wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)), "REQUEST_METHOD": "POST",
               "CONTENT_TYPE": request.headers["Content-Type"]}
    _, form, files = parse_form_data(environ)
    return body, form, files


@responses.activate
def test_upload_carries_the_text_part_between_metadata_and_file():
    responses.post(UPLOAD, json={"id": "doc-1"}, status=201)
    doc = with_text(MALAYALAM)
    hub().upload(doc)
    body, form, files = parts_of(responses.calls[0].request)
    assert body.index(b'name="metadata"') < body.index(b'name="text"') < body.index(b'name="file"')
    assert (b'Content-Disposition: form-data; name="text"; filename="text.txt"\r\n'
            b"Content-Type: text/plain; charset=utf-8\r\n\r\n") in body
    assert files["text"].read().decode("utf-8") == MALAYALAM
    assert files["file"].read() == b"%PDF-1.7 circular"
    assert json.loads(form["metadata"])["extraction"]["truncated"] is False
    assert int(responses.calls[0].request.headers["Content-Length"]) == len(body)


@responses.activate
def test_upload_without_text_has_no_text_part():
    responses.post(UPLOAD, json={"id": "doc-1"}, status=201)
    hub().upload(document())
    body, _, files = parts_of(responses.calls[0].request)
    assert b'name="text"' not in body and "file" in files


@responses.activate
def test_text_part_off_sends_no_text():
    responses.post(UPLOAD, json={"id": "doc-1"}, status=201)
    client = hub()
    client.text_part = False
    client.upload(with_text(MALAYALAM))
    body, form, files = parts_of(responses.calls[0].request)
    assert b'name="text"' not in body and MALAYALAM.encode() not in body
    assert set(files) == {"file"} and set(form) == {"metadata"}


@pytest.mark.parametrize("cap", range(0, 14))
def test_text_is_capped_on_a_character_boundary(cap):
    data, truncated = capped_utf8("ab" + MALAYALAM, cap)
    assert len(data) <= cap and len(data) > cap - 3  # never more than one 3-byte letter short
    text = data.decode("utf-8")  # strict: no half character
    assert ("ab" + MALAYALAM).startswith(text) and truncated


def test_text_under_the_cap_is_whole_and_lone_surrogates_still_encode():
    assert capped_utf8(MALAYALAM, 1024) == (MALAYALAM.encode(), False)
    data, truncated = capped_utf8("a\udcffb", 10)
    assert data == b"a?b" and not truncated


@responses.activate
def test_text_over_the_cap_is_cut_and_the_metadata_says_truncated():
    responses.post(UPLOAD, json={"id": "doc-1"}, status=201)
    client = hub()
    client.text_max_bytes = 100
    doc = with_text(MALAYALAM * 10)
    client.upload(doc)
    _, form, files = parts_of(responses.calls[0].request)
    sent = files["text"].read()
    assert 97 < len(sent) <= 100 and (MALAYALAM * 10).startswith(sent.decode("utf-8"))
    meta = json.loads(form["metadata"])
    assert meta["extraction"]["truncated"] is True and meta["extraction"]["method"] == "text-layer"
    assert doc.extraction is not None and doc.extraction["truncated"] is False  # the Document is left alone


class CountingFile:
    """A spool file that records the size of every read the upload makes of it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reads: list[int] = []
        self.closed = False

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.inner.seek(offset, whence)

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.reads.append(len(data))
        assert size is not None and size >= 0, "the whole file was asked for"
        return data

    def close(self) -> None:
        self.closed = True
        self.inner.close()


def test_file_part_still_streams_block_by_block_beside_the_text(hub, tmp_path: Path):
    size = 24 * 1024 * 1024
    spool = tempfile.SpooledTemporaryFile(max_size=1024 * 1024, dir=tmp_path)  # noqa: SIM115 - the Document owns it
    digest = hashlib.sha256()
    block = bytes(range(256)) * 4096
    for _ in range(size // len(block)):
        spool.write(block)
        digest.update(block)
    assert spool._rolled  # on disk, as a large document's spool is
    counting = CountingFile(spool)
    doc = Document(source="sharepoint", scope="drive-1", source_id="item-9", version="v1", filename="scan.pdf",
                   mime_type="application/pdf", size=size, sha256=digest.hexdigest(), content_text=MALAYALAM,
                   _content=counting)  # type: ignore[arg-type]
    hub_id = HttpHub(hub.url, hub.token).upload(doc)
    stored = hub.sim.documents[hub_id]
    assert stored.size == size and stored.text() == MALAYALAM
    assert sum(counting.reads) == size
    assert max(counting.reads) <= UPLOAD_BLOCK and len(counting.reads) >= size // UPLOAD_BLOCK


def test_text_settings_are_read_typed_and_bad_values_name_the_variable():
    settings = Settings.from_env({"HUB_TEXT_PART": "off", "HUB_TEXT_MAX_BYTES": "4096", "HUB_REFUSALS_TO_STOP": "5",
                                  "HUB_API_URL": HUB, "HUB_API_TOKEN": "t"})
    client = hub_from_settings(settings)
    assert isinstance(client, HttpHub) and client.text_part is False and client.text_max_bytes == 4096
    assert settings.hub_refusals_to_stop == 5
    defaults = Settings.from_env({})
    assert (defaults.hub_text_part, defaults.hub_text_max_bytes, defaults.hub_refusals_to_stop) == (True, 1 << 20, 3)
    for name, value, wording in [("HUB_TEXT_PART", "maybe", "HUB_TEXT_PART must be one of"),
                                 ("HUB_TEXT_MAX_BYTES", "1.5", "HUB_TEXT_MAX_BYTES must be a whole number of bytes"),
                                 ("HUB_TEXT_MAX_BYTES", "0", "HUB_TEXT_MAX_BYTES must be at least 1"),
                                 ("HUB_REFUSALS_TO_STOP", "-1", "HUB_REFUSALS_TO_STOP must be at least 0")]:
        with pytest.raises(SettingError) as caught:
            Settings.from_env({name: value})
        assert str(caught.value).startswith(wording) and "\n" not in str(caught.value)


# -- the enrichment update --------------------------------------------------------------------------
ENRICHMENT_URL = f"{UPLOAD}/doc-7/enrichment"
ENRICHMENT = {"language": "ml", "language_script": "", "department": "Safety", "department_confidence": 0.82,
              "department_terms": ["സുരക്ഷ"], "sensitive": {"aadhaar": 1},
              "extraction": {"method": "ocr", "pages": 2, "ocr_pages": 2, "chars": 40, "truncated": False}}


@responses.activate
@pytest.mark.parametrize("status", [200, 201, 204])
def test_enrichment_update_is_a_json_put_of_the_fields_and_the_text(status):
    responses.put(ENRICHMENT_URL, status=status)
    hub().update_enrichment("doc-7", ENRICHMENT, MALAYALAM)
    request = responses.calls[0].request
    assert request.method == "PUT" and request.headers["Authorization"] == "Bearer hub-secret-token"
    assert json.loads(request.body) == {**ENRICHMENT, "text": MALAYALAM}


@responses.activate
def test_enrichment_update_without_text_or_with_the_text_part_off_leaves_the_text_out():
    responses.put(ENRICHMENT_URL, status=200)
    responses.put(ENRICHMENT_URL, status=200)
    hub().update_enrichment("doc-7", {"department": "Finance"}, None)
    client = hub()
    client.text_part = False
    client.update_enrichment("doc-7", {"department": "Finance"}, MALAYALAM)
    assert [json.loads(call.request.body) for call in responses.calls] == [{"department": "Finance"}] * 2


@responses.activate
def test_enrichment_update_caps_its_text_and_says_so():
    responses.put(ENRICHMENT_URL, status=200)
    client = hub()
    client.text_max_bytes = 50
    client.update_enrichment("doc-7", ENRICHMENT, MALAYALAM)
    body = json.loads(responses.calls[0].request.body)
    assert MALAYALAM.startswith(body["text"]) and 47 < len(body["text"].encode()) <= 50
    assert body["extraction"]["truncated"] is True and body["extraction"]["method"] == "ocr"


def test_enrichment_update_refuses_an_unknown_field_before_sending():
    with pytest.raises(ValueError, match="departmnet"):
        hub().update_enrichment("doc-7", {"departmnet": "Safety"}, None)


@responses.activate
def test_enrichment_update_of_an_unknown_document_is_document_missing():
    responses.put(ENRICHMENT_URL, json={"error": "unknown_document"}, status=404)
    with pytest.raises(HubDocumentMissing, match="doc-7"):
        hub().update_enrichment("doc-7", ENRICHMENT, None)


@responses.activate
@pytest.mark.parametrize(("status", "raised"), [(401, AuthError), (403, AuthError), (400, HubRefused),
                                                (413, HubRefused), (415, HubRefused), (422, HubRefused)])
def test_enrichment_update_answers_are_classified_like_an_upload(status, raised):
    responses.put(ENRICHMENT_URL, json={"reason": "no"}, status=status)
    with pytest.raises(raised):
        hub().update_enrichment("doc-7", ENRICHMENT, None)
    assert len(responses.calls) == 1


@responses.activate
@pytest.mark.parametrize("status", [429, 500, 503])
def test_enrichment_update_retries_transient_answers(status):
    responses.put(ENRICHMENT_URL, status=status, headers={"Retry-After": "2"})
    responses.put(ENRICHMENT_URL, status=200)
    sleeps: list[float] = []
    hub(sleeps).update_enrichment("doc-7", ENRICHMENT, None)
    assert len(responses.calls) == 2 and sleeps == [2.0]


@responses.activate
def test_enrichment_update_gives_up_as_transient():
    for _ in range(2):
        responses.put(ENRICHMENT_URL, status=502)
    with pytest.raises(TransientError):
        hub(attempts=2).update_enrichment("doc-7", ENRICHMENT, None)


# -- the outbox's text ------------------------------------------------------------------------------

def test_outbox_keeps_the_text_beside_the_file_and_metadata(tmp_path: Path):
    outbox = OutboxHub(str(tmp_path / "outbox"))
    doc = with_text(MALAYALAM)
    outbox.upload(doc)
    folder = tmp_path / "outbox" / doc.sha256
    assert sorted(p.name for p in folder.iterdir()) == ["circular.pdf", "metadata.json", "text.txt"]
    assert (folder / "text.txt").read_text(encoding="utf-8") == MALAYALAM
    meta = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    assert (meta["text_file"], meta["text_bytes"]) == ("text.txt", len(MALAYALAM.encode()))
    assert meta["extraction"]["method"] == "text-layer"


def test_outbox_writes_no_text_for_a_document_without_one(tmp_path: Path):
    outbox = OutboxHub(str(tmp_path / "outbox"))
    doc = document()
    outbox.upload(doc)
    folder = tmp_path / "outbox" / doc.sha256
    assert sorted(p.name for p in folder.iterdir()) == ["WO-1.pdf", "metadata.json"]
    assert "text_file" not in json.loads((folder / "metadata.json").read_text())


def test_outbox_caps_the_text_as_the_hub_would(tmp_path: Path):
    outbox = OutboxHub(str(tmp_path / "outbox"), text_max_bytes=20)
    doc = with_text(MALAYALAM)
    outbox.upload(doc)
    folder = tmp_path / "outbox" / doc.sha256
    kept = (folder / "text.txt").read_text(encoding="utf-8")
    assert kept == "കൊച്ചി "  # 19 bytes: the next letter would make 22
    assert json.loads((folder / "metadata.json").read_text())["extraction"]["truncated"] is True


def test_outbox_document_with_text_is_never_partial(tmp_path: Path):
    outbox = OutboxHub(str(tmp_path / "outbox"))

    class Exploding(io.BytesIO):
        def read(self, size: int = -1) -> bytes:
            if self.tell() > 0:
                raise OSError("disk went away")
            return super().read(4)

    doc = with_text(MALAYALAM, b"0123456789")
    doc._content = Exploding(b"0123456789")
    with pytest.raises(TransientError):
        outbox.upload(doc)
    assert os.listdir(tmp_path / "outbox") == []


def test_outbox_writes_again_a_document_whose_text_did_not_reach_the_disk(tmp_path: Path):
    # A machine crash before a group commit's flush can leave the renamed folder with a short file.
    outbox = OutboxHub(str(tmp_path / "outbox"))
    doc = with_text(MALAYALAM)
    outbox.upload(doc)
    text_file = tmp_path / "outbox" / doc.sha256 / "text.txt"
    text_file.write_bytes(b"")
    outbox.upload(with_text(MALAYALAM))
    assert text_file.read_text(encoding="utf-8") == MALAYALAM


def test_outbox_enrichment_update_rewrites_the_fields_and_the_text(tmp_path: Path):
    outbox = OutboxHub(str(tmp_path / "outbox"))
    doc = with_text("old text")
    outbox.upload(doc)
    outbox.link(doc.sha256, {"source": "email", "source_id": "m-9"})
    folder = tmp_path / "outbox" / doc.sha256
    outbox.update_enrichment(doc.sha256, ENRICHMENT, MALAYALAM)
    outbox.update_enrichment(doc.sha256, ENRICHMENT, MALAYALAM)  # idempotent
    meta = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    assert {name: meta[name] for name in ENRICHMENT} == ENRICHMENT
    assert (meta["source_id"], meta["stored_as"], meta["text_bytes"]) == ("WO-1/75", "circular.pdf",
                                                                           len(MALAYALAM.encode()))
    assert (folder / "text.txt").read_text(encoding="utf-8") == MALAYALAM
    assert sorted(p.name for p in folder.iterdir()) == ["circular.pdf", "metadata.json", "sources.jsonl", "text.txt"]
    assert outbox.upload(with_text(MALAYALAM)) == doc.sha256  # still a complete document
    assert json.loads((folder / "metadata.json").read_text())["department"] == "Safety"


def test_outbox_enrichment_update_without_text_keeps_it_and_empty_text_removes_it(tmp_path: Path):
    outbox = OutboxHub(str(tmp_path / "outbox"), fsync=False)
    doc = with_text(MALAYALAM)
    outbox.upload(doc)
    folder = tmp_path / "outbox" / doc.sha256
    outbox.update_enrichment(doc.sha256, {"department": "Finance"}, None)
    assert (folder / "text.txt").read_text(encoding="utf-8") == MALAYALAM
    outbox.update_enrichment(doc.sha256, {"department": "Finance"}, "")
    assert not (folder / "text.txt").exists()
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["department"] == "Finance" and "text_file" not in meta


def test_outbox_enrichment_update_adds_text_to_a_document_stored_without_it(tmp_path: Path):
    outbox = OutboxHub(str(tmp_path / "outbox"), fsync=False)
    doc = document()
    outbox.upload(doc)
    outbox.update_enrichment(doc.sha256, ENRICHMENT, MALAYALAM)
    assert (tmp_path / "outbox" / doc.sha256 / "text.txt").read_text(encoding="utf-8") == MALAYALAM


def test_outbox_enrichment_update_of_an_unknown_document_is_document_missing(tmp_path: Path):
    outbox = OutboxHub(str(tmp_path / "outbox"))
    with pytest.raises(HubDocumentMissing):
        outbox.update_enrichment("0" * 64, ENRICHMENT, MALAYALAM)
    assert os.listdir(tmp_path / "outbox") == []


# -- the metadata update (a rename or a move at the source) -------------------------------------------
METADATA_URL = f"{UPLOAD}/doc-7/metadata"
RENAMED = {"source": "maximo", "scope": "all", "source_id": "WO-1/75", "sha256": "ab" * 32, "version": "v1",
           "filename": "WO-1 rev B.pdf", "title": "WO-1 rev B", "source_url": "https://maximo.test/doclinks/75",
           "modified_at": "2025-03-01T10:00:00Z", "extra": {"path": "/Archive/WO-1 rev B.pdf"}}


@responses.activate
@pytest.mark.parametrize("status", [200, 201, 204])
def test_metadata_update_is_a_json_put_naming_the_source_item(status):
    responses.put(METADATA_URL, status=status)
    hub().update_metadata("doc-7", RENAMED)
    request = responses.calls[0].request
    assert request.method == "PUT" and request.headers["Authorization"] == "Bearer hub-secret-token"
    assert "Idempotency-Key" not in request.headers and json.loads(request.body) == RENAMED


def test_metadata_update_refuses_an_unknown_field_or_no_source_item_before_sending():
    with pytest.raises(ValueError, match="language"):
        hub().update_metadata("doc-7", {**RENAMED, "language": "en"})
    with pytest.raises(ValueError, match="source_id"):
        hub().update_metadata("doc-7", {"source": "maximo", "filename": "x.pdf"})


@responses.activate
def test_metadata_update_of_an_unknown_document_is_document_missing():
    responses.put(METADATA_URL, json={"error": "unknown_document"}, status=404)
    with pytest.raises(HubDocumentMissing, match="doc-7"):
        hub().update_metadata("doc-7", RENAMED)


@responses.activate
@pytest.mark.parametrize(("status", "raised"), [(401, AuthError), (403, AuthError), (400, HubRefused),
                                                (422, HubRefused)])
def test_metadata_update_answers_are_classified_like_an_upload(status, raised):
    responses.put(METADATA_URL, json={"reason": "no"}, status=status)
    with pytest.raises(raised):
        hub().update_metadata("doc-7", RENAMED)
    assert len(responses.calls) == 1


@responses.activate
def test_metadata_update_retries_transient_answers_then_gives_up():
    responses.put(METADATA_URL, status=503, headers={"Retry-After": "1"})
    responses.put(METADATA_URL, status=200)
    sleeps: list[float] = []
    hub(sleeps).update_metadata("doc-7", RENAMED)
    assert len(responses.calls) == 2 and sleeps == [1.0]
    responses.reset()
    for _ in range(2):
        responses.put(METADATA_URL, status=502)
    with pytest.raises(TransientError):
        hub(attempts=2).update_metadata("doc-7", RENAMED)


def test_outbox_metadata_update_is_logged_once_and_rewrites_the_document_it_was_stored_from(tmp_path: Path):
    outbox = OutboxHub(str(tmp_path / "outbox"))
    doc = document()
    outbox.upload(doc)
    folder = tmp_path / "outbox" / doc.sha256
    update = {**RENAMED, "sha256": doc.sha256}
    outbox.update_metadata(doc.sha256, update)
    outbox.update_metadata(doc.sha256, update)  # a retry: nothing more
    lines = (folder / "metadata_updates.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [update]
    meta = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    assert {name: meta[name] for name in ("filename", "title", "source_url", "extra")} == {
        name: update[name] for name in ("filename", "title", "source_url", "extra")}
    assert meta["stored_as"] == "WO-1.pdf" and (folder / "WO-1.pdf").read_bytes() == doc.read_bytes()
    assert outbox.upload(document()) == doc.sha256  # still one complete document
    assert sorted(p.name for p in folder.iterdir()) == ["WO-1.pdf", "metadata.json", "metadata_updates.jsonl"]
    # Renamed back: a new line, since it is not the last one's.
    outbox.update_metadata(doc.sha256, {**update, "filename": "WO-1.pdf"})
    assert len((folder / "metadata_updates.jsonl").read_text(encoding="utf-8").splitlines()) == 2


def test_outbox_metadata_update_of_another_source_item_leaves_the_document_metadata(tmp_path: Path):
    outbox = OutboxHub(str(tmp_path / "outbox"), fsync=False)
    doc = document()
    outbox.upload(doc)
    outbox.link(doc.sha256, {"source": "email", "source_id": "m-9", "filename": "scan.pdf"})
    folder = tmp_path / "outbox" / doc.sha256
    before = (folder / "metadata.json").read_bytes()
    outbox.update_metadata(doc.sha256, {"source": "email", "source_id": "m-9", "filename": "scan 2.pdf"})
    assert (folder / "metadata.json").read_bytes() == before
    (line,) = (folder / "metadata_updates.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(line) == {"source": "email", "source_id": "m-9", "filename": "scan 2.pdf"}


def test_outbox_metadata_update_of_an_unknown_document_is_document_missing(tmp_path: Path):
    outbox = OutboxHub(str(tmp_path / "outbox"))
    with pytest.raises(HubDocumentMissing):
        outbox.update_metadata("0" * 64, RENAMED)
    assert os.listdir(tmp_path / "outbox") == []
