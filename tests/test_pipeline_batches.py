"""The pipeline in windows and groups (base/runner.py): versions looked up per window, documents read
ahead and delivered as a group with uploads in flight, records and cursor written together. Each test
checks an ordering or ownership rule that batching could break."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

from base.hub_client import HttpHub
from base.runner import Runner
from base.state import StateStore
from config.settings import Settings
from tests.helpers import FakeFile, ListConnector, fake_files
from utils.errors import AuthError


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class CountingHub(HttpHub):
    """An HttpHub that remembers how many uploads it had in flight at most, and can fail one."""

    def __init__(self, *args, fail_filename: str = "", **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.fail_filename = fail_filename
        self._lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.threads: set[str] = set()

    def upload(self, document):  # type: ignore[no-untyped-def]
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.threads.add(threading.current_thread().name)
        try:
            if document.filename == self.fail_filename:
                time.sleep(0.05)  # the uploads behind it are on their way meanwhile
                raise AuthError("the Hub refused our token for upload (401): test")
            return super().upload(document)
        finally:
            with self._lock:
                self.in_flight -= 1


def test_uploads_go_several_at_a_time_and_the_cursor_follows_source_order(settings, state, hub):
    hub.sim.set_fault("slow", delay=0.05, endpoint="upload")
    files = fake_files(24)
    counting = CountingHub(hub.url, hub.token, uploads_in_flight=4)
    connector = ListConnector({"a": files}, settings=settings, state=state, hub=counting)
    summary = connector.sync_documents({})
    assert summary.state == "ok" and summary.totals["new"] == 24
    assert counting.most_in_flight == 4
    assert all(name.startswith("hub-upload-fake") for name in counting.threads)
    assert state.get_cursor("fake", "a") == 24
    assert state.count_items("fake", "a") == 24
    assert connector.acknowledged == [f.source_id for f in files]  # acknowledged in source order
    assert all(n == 1 for n in hub.sim.uploads_per_key.values())


def test_a_run_ending_answer_keeps_the_uploads_acknowledged_behind_it(settings, state, hub):
    files = fake_files(16)
    failing = CountingHub(hub.url, hub.token, uploads_in_flight=4, fail_filename="doc-5.pdf")
    connector = ListConnector({"a": files}, settings=settings, state=state, hub=failing)
    first = connector.sync_documents({})
    assert first.scopes[0].state == "auth_failed"
    stored = {d.sha256 for d in hub.sim.documents.values()}
    assert sha(files[5].content) not in stored and len(stored) > 5  # uploads behind doc-5 went through
    # Everything the Hub acknowledged is recorded, so nothing is sent twice; the cursor stays before doc-5.
    recorded = {sid for sid in (f.source_id for f in files) if state.get_item("fake", "a", sid)}
    assert recorded == {f.source_id for f in files if sha(f.content) in stored}
    assert state.get_cursor("fake", "a") == 5

    again = ListConnector({"a": files}, settings=settings, state=state,
                          hub=HttpHub(hub.url, hub.token, uploads_in_flight=4))
    second = again.sync_documents({})
    assert second.state == "ok"
    assert len(hub.sim.documents) == 16
    assert all(n == 1 for n in hub.sim.uploads_per_key.values()), hub.sim.uploads_per_key
    assert second.totals["new"] == 16 - len(stored) and second.totals["duplicate"] == len(stored) - 5


def test_a_second_version_in_the_same_window_is_decided_after_the_first(settings, state):
    first = FakeFile("doc-1", b"first version of the inspection report", version="1")
    second = FakeFile("doc-1", b"second version of the inspection report", version="2")
    connector = ListConnector({"a": [first, *fake_files(3, "other"), second]}, settings=settings, state=state)
    summary = connector.sync_documents({})
    assert summary.state == "ok" and summary.totals["new"] == 5
    record = state.get_item("fake", "a", "doc-1")
    assert record is not None and record.version == "2" and record.sha256 == sha(second.content)
    meta = json.loads((Path(settings.hub_outbox_dir) / sha(second.content) / "metadata.json").read_text())
    assert meta["previous_sha256"] == sha(first.content)


def test_an_item_added_and_deleted_in_one_window_ends_deleted(settings, state):
    added = FakeFile("doc-x", b"a circular withdrawn at once")
    deleted = FakeFile("doc-x", b"", deleted=True)
    connector = ListConnector({"a": [added, *fake_files(2, "other"), deleted]}, settings=settings, state=state)
    summary = connector.sync_documents({})
    assert summary.state == "ok" and summary.totals["deleted"] == 1
    assert state.get_item("fake", "a", "doc-x") is None
    assert list((Path(settings.hub_outbox_dir) / "_deleted" / "fake").glob("*.json"))
    assert state.get_cursor("fake", "a") == 4


def test_the_same_bytes_twice_in_one_group_are_uploaded_once_and_linked(settings, state, hub):
    same = b"the same drawing attached to two work orders"
    files = [FakeFile("wo-1", same), *fake_files(2, "other"), FakeFile("wo-2", same)]
    connector = ListConnector({"a": files}, settings=settings, state=state,
                              hub=HttpHub(hub.url, hub.token, uploads_in_flight=4))
    summary = connector.sync_documents({})
    assert summary.totals["new"] == 3 and summary.totals["duplicate"] == 1
    assert hub.sim.uploads_per_key[sha(same)] == 1
    doc = hub.sim.store.by_sha256(sha(same))
    assert doc is not None and {s["source_id"] for s in doc.sources} == {"wo-1", "wo-2"}


def test_audit_lines_are_written_before_their_batch_is_recorded(settings, state):
    audit = Path(settings.audit_log)
    seen: list[tuple[int, int]] = []
    real = state.record_many

    def record_many(connector, records, **kwargs):  # type: ignore[no-untyped-def]
        lines = audit.read_text(encoding="utf-8").count('"decision": "ingested"') if audit.exists() else 0
        seen.append((len(records), lines))
        return real(connector, records, **kwargs)

    state.record_many = record_many  # type: ignore[method-assign]
    connector = ListConnector({"a": fake_files(150)}, settings=settings, state=state)
    assert connector.sync_documents({}).totals["new"] == 150
    recorded = 0
    for count, lines in seen:
        recorded += count
        assert lines >= recorded  # every recorded document has its audit line already
    assert recorded == 150 and len(seen) >= 3  # in batches of at most 64


def test_records_and_cursor_are_written_in_one_transaction(settings, state, redis_url):
    # Watch the commands Redis executes: every batch's SET of the cursor sits inside its MULTI/EXEC.
    monitor_client = StateStore.from_url(redis_url).redis
    connector = ListConnector({"a": fake_files(130)}, settings=Settings(**{**settings.__dict__,
                                                                            "cursor_save_every": 10_000}),
                              state=state)
    commands: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        with monitor_client.monitor() as monitor:
            ready.set()
            for entry in monitor.listen():
                commands.append(entry["command"])
                if stop.is_set() and "DONE-MARKER" in entry["command"]:
                    return

    ready = threading.Event()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ready.wait(5)
    assert connector.sync_documents({}).totals["new"] == 130
    stop.set()
    state.redis.get("DONE-MARKER")
    watcher.join(10)
    cursor_key = state.keys.cursor("fake", "a")
    in_transaction = False
    cursor_sets = []
    for command in commands:
        if command == "MULTI":
            in_transaction = True
        elif command == "EXEC":
            in_transaction = False
        elif command.startswith(f"SET {cursor_key}"):
            cursor_sets.append(in_transaction)
    assert cursor_sets and all(cursor_sets), cursor_sets


class _SlowFirstRunner(Runner):
    """The pipeline with a stand-in for the pool's reading of text: every document is read at once,
    except ``slow_id``'s, which waits until ``release`` is set (an OCR job of many pages)."""

    slow_id = ""
    release = threading.Event()

    def _extract(self, document, deadline):  # type: ignore[no-untyped-def]
        if document.source_id == self.slow_id:
            self.release.wait(60)
        document.content_text = f"inspection report {document.source_id}"
        document.extraction = {"method": "text-layer", "pages": 1, "chars": 20, "truncated": False}


def test_a_slow_extraction_does_not_hold_up_the_reading_of_the_documents_behind_it(settings, state):
    # Each file starts like a PDF, so its text is read on the pool (asynchronously), not decided here.
    files = [FakeFile(f"scan-{i}", b"%PDF-1.7\n" + f"page {i} ".encode() * 20) for i in range(12)]

    class Connector(ListConnector):
        def runner(self) -> Runner:
            runner = _SlowFirstRunner(self, state=self.state, hub=self.hub, settings=self.settings, audit=self.audit)
            runner.slow_id, runner.release = "scan-0", release
            return runner

    release = threading.Event()
    connector = Connector({"a": files}, settings=settings, state=state)
    read_behind: list[bool] = []

    def watch() -> None:
        # While scan-0's text is still being read, every document behind it gets read from the source.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(connector.opened) < len(files):
            time.sleep(0.01)
        read_behind.append(len(connector.opened) == len(files) and not release.is_set())
        release.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    summary = connector.sync_documents({})
    watcher.join(5)
    assert read_behind == [True]
    assert summary.state == "ok" and summary.totals["new"] == 12
    assert connector.acknowledged == [f.source_id for f in files]  # settled in source order all the same
    assert state.get_cursor("fake", "a") == 12
