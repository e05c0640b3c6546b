"""The extraction step in the pipeline (base/extraction/step.py through base/runner.py): what the
outbox and the Hub receive, what never reaches the pool, and ``kmrl-connectors reprocess``."""

from __future__ import annotations

import json
import os
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

import cli
from base.pool import pool_for, shutdown_shared_pool
from config.settings import Settings
from tests.conftest import make_settings
from tests.helpers import FakeFile, ListConnector

MALAYALAM_CIRCULAR = ("കൊച്ചി മെട്രോ റെയിൽ ലിമിറ്റഡ്\nസുരക്ഷാ സർക്കുലർ\n"
                      "എല്ലാ സ്റ്റേഷനുകളിലും അടുത്ത തിങ്കളാഴ്ച അഗ്നിശമന മോക്ക് ഡ്രിൽ നടത്തും.\n"
                      "ജീവനക്കാർ അടിയന്തര ഒഴിപ്പിക്കൽ നടപടിക്രമങ്ങൾ കർശനമായി പാലിക്കണം.\n")
FINANCE_NOTE = ("Statement of accounts for the quarter: payments released against running bills were reconciled, "
                "GST input tax credit matched and TDS remitted; the internal audit found an invoice paid twice.\n")


@pytest.fixture(autouse=True)
def _own_pool() -> Any:
    shutdown_shared_pool()  # each test counts the pool's children from none
    yield
    shutdown_shared_pool()


def outbox_documents(settings: Settings) -> dict[str, tuple[dict[str, Any], str | None]]:
    """filename -> (metadata.json, text.txt or None) of every document in the outbox."""
    found = {}
    for meta_path in Path(settings.hub_outbox_dir).rglob("metadata.json"):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        text_path = meta_path.with_name("text.txt")
        found[meta["filename"]] = (meta, text_path.read_text(encoding="utf-8") if text_path.exists() else None)
    return found


def text_file(source_id: str, body: str, filename: str, **kw: Any) -> FakeFile:
    return FakeFile(source_id, body.encode("utf-8"), filename=filename, mime_type="text/plain", **kw)


def test_the_text_of_a_document_reaches_the_outbox_and_decides_its_language_and_department(settings, state):
    # Neutral names, a folder hint that says nothing: only the text can tell.
    files = {"incoming": [text_file("c1", MALAYALAM_CIRCULAR, "document-0417.txt", text="Incoming"),
                          text_file("f1", FINANCE_NOTE, "document-0418.txt", text="Incoming")]}
    summary = ListConnector(files, settings=settings, state=state).sync_documents({})
    assert summary.state == "ok" and summary.totals["new"] == 2
    docs = outbox_documents(settings)
    circular, circular_text = docs["document-0417.txt"]
    assert circular_text is not None and circular_text.startswith("കൊച്ചി മെട്രോ റെയിൽ")
    assert (circular["language"], circular["department"]) == ("ml", "Safety")
    assert circular["extraction"]["method"] == "text-layer" and circular["extraction"]["languages"] == ["ml"]
    assert circular["extraction"]["chars"] == len(circular_text) and circular["extraction"]["error"] is None
    note, _ = docs["document-0418.txt"]
    assert (note["language"], note["department"]) == ("en", "Finance")
    assert any("audit" in term or "tds" in term.lower() or "gst" in term.lower() for term in note["department_terms"])


def test_files_that_cannot_hold_text_never_reach_the_pool(settings, state):
    opaque = os.urandom(300_000)
    files = {"a": [FakeFile("bin", opaque, filename="blob.dat", mime_type="application/octet-stream")]}
    summary = ListConnector(files, settings=settings, state=state).sync_documents({})
    assert summary.state == "ok" and summary.totals["new"] == 1
    meta, text = outbox_documents(settings)["blob.dat"]
    assert meta["extraction"]["method"] == "none" and meta["extraction"]["type"] == "binary" and text is None
    assert pool_for(settings).pids == []  # no child was ever started


def test_extraction_turned_off_still_delivers_and_says_so(tmp_path: Path, redis_url: str, state):
    settings = make_settings(tmp_path, redis_url, extract_text=False)
    files = {"a": [text_file("c1", MALAYALAM_CIRCULAR, "document-1.txt")]}
    assert ListConnector(files, settings=settings, state=state).sync_documents({}).totals["new"] == 1
    meta, text = outbox_documents(settings)["document-1.txt"]
    assert meta["extraction"]["method"] == "none" and "EXTRACT_TEXT=0" in meta["extraction"]["error"]
    assert text is None


def test_a_document_over_the_memory_limit_is_delivered_without_its_text(tmp_path: Path, redis_url: str, state):
    # 160 MB of text with a cap high enough to keep it all: the child runs out of its 256 MB of address
    # space; the document still goes to the Hub, and the next one is read (by a new child).
    settings = make_settings(tmp_path, redis_url, extract_memory_mb=256, extract_max_chars=400_000_000)
    huge = ("KMRL ledger line with payments and invoices; " * 3_500_000).encode()
    files = {"a": [FakeFile("big", huge, filename="ledger.txt", mime_type="text/plain"),
                   text_file("ok", MALAYALAM_CIRCULAR, "after.txt")]}
    summary = ListConnector(files, settings=settings, state=state, chunk_size=1 << 20).sync_documents({})
    assert summary.state == "ok" and summary.totals["new"] == 2 and summary.totals["failed"] == 0
    docs = outbox_documents(settings)
    big, big_text = docs["ledger.txt"]
    assert big["extraction"]["method"] == "none" and big_text is None
    assert "memory" in big["extraction"]["error"].lower()
    assert docs["after.txt"][0]["extraction"]["method"] == "text-layer"


def test_reprocess_sends_new_enrichment_without_uploading_again(tmp_path: Path, redis_url: str, state, capsys):
    before = make_settings(tmp_path, redis_url, extract_text=False)
    files = {"a": [text_file("c1", MALAYALAM_CIRCULAR, "document-1.txt", text="Incoming"),
                   text_file("f1", FINANCE_NOTE, "document-2.txt", text="Incoming")]}
    ListConnector(files, settings=before, state=state).sync_documents({})
    old = outbox_documents(before)
    assert old["document-1.txt"][0]["extraction"]["method"] == "none" and old["document-1.txt"][1] is None
    folders_before = sorted(p.name for p in Path(before.hub_outbox_dir).iterdir())

    after = make_settings(tmp_path, redis_url)
    connector = ListConnector(files, settings=after, state=state)
    from base.runner import Reprocess
    summary = connector.sync_documents({}, reprocess=Reprocess())
    assert summary.state == "ok" and summary.totals["reprocessed"] == 2 and summary.totals["new"] == 0
    assert sorted(p.name for p in Path(after.hub_outbox_dir).iterdir()) == folders_before  # nothing uploaded again
    docs = outbox_documents(after)
    circular, circular_text = docs["document-1.txt"]
    assert circular["extraction"]["method"] == "text-layer" and circular_text.startswith("കൊച്ചി")
    assert (circular["language"], circular["department"]) == ("ml", "Safety")
    # A sync after it, even from the start, reads nothing again: the versions are recorded as before.
    state.clear_cursor("fake", "a")
    again = connector.sync_documents({})
    assert again.totals["duplicate"] == 2 and again.totals["reprocessed"] == 0
    assert connector.opened == {"c1": 1, "f1": 1}


def test_reprocess_reads_only_the_documents_of_its_dates(tmp_path: Path, redis_url: str, state):
    from datetime import datetime

    from base.runner import Reprocess

    before = make_settings(tmp_path, redis_url, extract_text=False)
    old = text_file("old", FINANCE_NOTE, "old.txt")
    new = text_file("new", MALAYALAM_CIRCULAR, "new.txt")
    connector = ListConnector({"a": [old, new]}, settings=before, state=state)
    dates = {"old": "2023-05-01T10:00:00Z", "new": "2024-06-01T10:00:00+05:30"}
    real = connector.list_changes

    def dated(scope: str, cursor: Any) -> Any:
        for change in real(scope, cursor):
            if hasattr(change, "modified_at"):
                change.modified_at = dates[change.source_id]
            yield change

    connector.list_changes = dated  # type: ignore[method-assign]
    connector.sync_documents({})
    connector.settings = make_settings(tmp_path, redis_url)
    summary = connector.sync_documents({}, reprocess=Reprocess(since=datetime(2024, 1, 1, tzinfo=UTC)))
    assert summary.totals["reprocessed"] == 1 and summary.totals["duplicate"] == 1
    docs = outbox_documents(connector.settings)
    assert docs["new.txt"][0]["extraction"]["method"] == "text-layer"
    assert docs["old.txt"][0]["extraction"]["method"] == "none"


def test_reprocess_command_refuses_whatsapp_and_bad_dates(capsys):
    assert cli.main(["reprocess", "sharepoint", "--since", "2024-05-01", "--until", "2024-01-01"]) == 2
    assert "must be before" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["reprocess", "sharepoint", "--since", "yesterday"])


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
            return [int(child) for child in handle.read().split()]
    except OSError:
        return []


def test_a_pool_child_killed_mid_ocr_costs_the_text_only(settings, state):
    import signal
    import threading
    import time

    from sandbox import rendering
    from tests.extraction_fixtures import require_programs

    require_programs()  # Tesseract, poppler and pango-view: a failure in CI, a skip saying why elsewhere
    scan = rendering.scan_png("സുരക്ഷാ സർക്കുലർ: അഗ്നിശമന മോക്ക് ഡ്രിൽ തിങ്കളാഴ്ച.\nFire drill on Monday at all stations.")
    files = {"a": [FakeFile("scan", scan, filename="scan-1.png", mime_type="image/png"),
                   text_file("ok", MALAYALAM_CIRCULAR, "after.txt")]}
    killed: list[int] = []
    orphans: list[int] = []

    def kill_the_child_once_tesseract_runs() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            for pid in pool_for(settings).pids:
                programs = _children(pid)
                if programs:  # the child has started Tesseract: it is mid-OCR
                    orphans.extend(programs)
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_the_child_once_tesseract_runs, daemon=True)
    killer.start()
    summary = ListConnector(files, settings=settings, state=state).sync_documents({})
    killer.join(timeout=5)
    assert killed, "Tesseract never ran in a pool child"
    assert summary.state == "ok" and summary.totals["new"] == 2 and summary.totals["failed"] == 0
    docs = outbox_documents(settings)
    scan_meta, scan_text = docs["scan-1.png"]
    assert scan_meta["extraction"]["method"] == "none" and scan_text is None
    assert scan_meta["extraction"]["error"].startswith("extraction stopped")
    assert docs["after.txt"][0]["extraction"]["method"] == "text-layer"
    # The killed child's Tesseract died with it (PR_SET_PDEATHSIG): nothing is left behind.
    gone_by = time.monotonic() + 5
    while time.monotonic() < gone_by and any(Path(f"/proc/{pid}").exists() for pid in orphans):
        time.sleep(0.05)
    assert not any(Path(f"/proc/{pid}").exists() for pid in orphans)


def test_the_head_check_passes_text_of_any_script_and_stops_opaque_bytes() -> None:
    import random

    from base.extraction.step import HEAD_BYTES, may_hold_text

    rng = random.Random(7)
    assert not any(may_hold_text(rng.randbytes(HEAD_BYTES)) for _ in range(500))  # compressed, encrypted
    chinese = "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(3000))
    for text, encoding in ((MALAYALAM_CIRCULAR * 20, "utf-8"), (MALAYALAM_CIRCULAR * 20, "utf-16"),
                           (FINANCE_NOTE * 20, "cp1252"), (chinese, "utf-16"), (chinese, "utf-8-sig")):
        assert may_hold_text(text.encode(encoding)[:HEAD_BYTES]), encoding
    for signature in (b"%PDF-1.7\n", b"\x89PNG\r\n\x1a\n", b"PK\x03\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        assert may_hold_text(signature + rng.randbytes(HEAD_BYTES - len(signature)))


def test_a_file_no_extractor_reads_is_told_in_this_process(settings, state):
    # Text bytes under a name and type no extractor takes (a .pdf that is not a PDF): no pool trip.
    files = {"a": [FakeFile("fake", FINANCE_NOTE.encode() * 10, filename="ledger.pdf", mime_type="application/pdf")]}
    assert ListConnector(files, settings=settings, state=state).sync_documents({}).totals["new"] == 1
    meta, _ = outbox_documents(settings)["ledger.pdf"]
    assert meta["extraction"]["method"] == "none" and meta["extraction"]["type"] == "binary"
    assert pool_for(settings).pids == []
