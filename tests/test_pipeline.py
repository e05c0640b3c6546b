"""The one pipeline (base/runner.py, run through BaseConnector), end to end on a real Redis and the Hub simulator."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from base.enrichment.rules import ContentRules
from base.hub_client import HttpHub, OutboxHub
from config.settings import Settings
from tests.helpers import FakeFile, ListConnector, fake_files


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def http_connector(files: dict[str, list[FakeFile]], settings: Settings, hub, **kw) -> ListConnector:
    return ListConnector(files, settings=settings, hub=HttpHub(hub.url, hub.token), **kw)


def test_sync_uploads_every_file_to_the_hub_over_http(settings, hub):
    files = {"a": fake_files(5, "a"), "b": fake_files(3, "b")}
    connector = http_connector(files, settings, hub)
    summary = connector.sync_documents({})
    assert summary.state == "ok"
    assert summary.totals["new"] == 8
    stored = {d.sha256 for d in hub.sim.documents.values()}
    assert stored == {sha(f.content) for scope in files.values() for f in scope}
    assert all(count == 1 for count in hub.sim.uploads_per_key.values())
    doc = next(iter(hub.sim.documents.values()))
    assert doc.metadata["source"] == "fake" and doc.metadata["language"] and doc.metadata["department"]


def test_second_sync_reads_nothing_already_ingested(settings, hub):
    files = {"a": fake_files(4)}
    connector = http_connector(files, settings, hub)
    connector.sync_documents({})
    connector.opened.clear()
    connector.state.clear_cursor("fake", "a")  # even without a cursor, (source_id, version) dedup holds
    summary = connector.sync_documents({})
    assert summary.totals["duplicate"] == 4 and summary.totals["new"] == 0
    assert connector.opened == {}
    assert sum(hub.sim.uploads_per_key.values()) == 4


def test_cursor_advances_and_is_saved(settings, state):
    connector = ListConnector({"a": fake_files(3)}, settings=settings, state=state)
    connector.sync_documents({})
    assert state.get_cursor("fake", "a") == 3
    connector.files["a"].extend(fake_files(2, "later"))
    summary = connector.sync_documents({})
    assert summary.totals["fetched"] == 2 and summary.totals["new"] == 2
    assert state.get_cursor("fake", "a") == 5


def test_failing_item_is_dead_lettered_and_the_run_goes_on(settings, state):
    files = fake_files(4)
    files[1].fail = "corrupt attachment"
    files[2].unreadable = "message could not be parsed"
    connector = ListConnector({"a": files}, settings=settings, state=state)
    summary = connector.sync_documents({})
    assert summary.state == "ok"
    assert summary.totals["new"] == 2 and summary.totals["failed"] == 2 and summary.totals["dead_lettered"] == 2
    entries = {e.source_id: e for e in state.list_dead_letters("fake")}
    assert entries["doc-1"].reason == "corrupt attachment"
    assert entries["doc-2"].reason == "message could not be parsed"
    assert state.get_cursor("fake", "a") == 4
    assert "doc-1" in connector.acknowledged  # a dead-lettered item is done for the source too


def test_hub_refusal_keeps_the_bytes_for_replay(settings, hub):
    files = fake_files(3)
    hub.sim.set_fault("reject", match=sha(files[1].content))
    connector = http_connector({"a": files}, settings, hub)
    summary = connector.sync_documents({})
    assert summary.totals["new"] == 2 and summary.totals["dead_lettered"] == 1
    (entry,) = connector.state.list_dead_letters("fake")
    assert "422" in entry.reason
    assert Path(entry.bytes_path).read_bytes() == files[1].content
    assert entry.metadata["hub"]["sha256"] == sha(files[1].content)


def test_cursor_does_not_advance_past_failed_upload(settings, hub):
    files = fake_files(6)
    connector = http_connector({"a": files[:3]}, settings, hub)
    connector.hub.client.policy = type(connector.hub.client.policy)(attempts=2, backoff_base=0.01)
    connector.sync_documents({})
    assert connector.state.get_cursor("fake", "a") == 3
    connector.files["a"] = files
    hub.sim.set_fault("error", status=503, endpoint="upload")
    summary = connector.sync_documents({})
    assert summary.state == "error" and "503" in summary.scopes[0].error
    assert connector.state.get_cursor("fake", "a") == 3
    hub.sim.clear_faults()
    summary = connector.sync_documents({})
    assert summary.state == "ok" and summary.totals["new"] == 3
    assert {d.sha256 for d in hub.sim.documents.values()} == {sha(f.content) for f in files}


def test_same_content_from_another_item_is_linked_not_uploaded(settings, hub):
    payload = b"the same circular, twice" * 10
    files = [FakeFile("mail-1", payload), FakeFile("mail-2", payload, filename="copy.pdf")]
    connector = http_connector({"a": files}, settings, hub)
    summary = connector.sync_documents({})
    assert summary.totals["new"] == 1 and summary.totals["duplicate"] == 1
    assert hub.sim.uploads_per_key[sha(payload)] == 1
    (doc,) = hub.sim.documents.values()
    assert {s["source_id"] for s in doc.sources} == {"mail-1", "mail-2"}


def test_new_version_carries_previous_sha256(settings, hub):
    files = [FakeFile("wo-1", b"revision one")]
    connector = http_connector({"a": files}, settings, hub)
    connector.sync_documents({})
    connector.files["a"] = [FakeFile("wo-1", b"revision two", version="2")]
    connector.state.clear_cursor("fake", "a")
    summary = connector.sync_documents({})
    assert summary.totals["new"] == 1
    newest = hub.sim.document_by_sha256(sha(b"revision two"))
    assert newest is not None and newest.metadata["previous_sha256"] == sha(b"revision one")


def test_deletion_of_an_item_never_ingested_does_not_reach_the_hub(settings, hub):
    connector = http_connector({"a": [FakeFile("folder-9", b"", deleted=True)]}, settings, hub)
    summary = connector.sync_documents({})
    assert summary.totals["deleted"] == 0 and summary.totals["skipped"] == 1
    assert hub.sim.deletions == []


def test_deletion_reaches_the_hub_and_forgets_the_item(settings, hub):
    connector = http_connector({"a": [FakeFile("f-1", b"to be deleted")]}, settings, hub)
    connector.sync_documents({})
    connector.files["a"].append(FakeFile("f-1", b"", version="gone", deleted=True))
    summary = connector.sync_documents({})
    assert summary.totals["deleted"] == 1
    assert connector.state.get_item("fake", "a", "f-1") is None
    assert hub.sim.deletions and hub.sim.deletions[-1]["source_id"] == "f-1"


def test_content_rules_skip_before_download_and_are_counted(settings, state):
    files = [FakeFile("x", b"MZ...", filename="tool.exe"), FakeFile("y", b"%PDF", filename="wo.pdf")]
    rules = ContentRules.from_mapping({"exclude": [{"name": "executables", "extensions": ["exe"]}]})
    connector = ListConnector({"a": files}, settings=settings, state=state, rules=rules)
    summary = connector.sync_documents({})
    assert summary.totals["skipped"] == 1 and summary.totals["new"] == 1
    assert "x" not in connector.opened
    audit = [json.loads(line) for line in Path(settings.audit_log).read_text().splitlines()]
    assert {"decision": "skipped", "reason": "rule:executables"}.items() <= audit[0].items()


def test_oversized_document_is_skipped_without_reading_it_all(settings, state):
    big = FakeFile("big", b"x" * 5000)
    big_liar = FakeFile("liar", b"y" * 5000)
    connector = ListConnector({"a": [big, big_liar]}, settings=settings, state=state)
    connector.max_document_bytes = 1000
    summary = connector.sync_documents({})
    assert summary.totals["skipped"] == 2
    assert "big" not in connector.opened  # its claimed size was enough


def test_dry_run_changes_nothing(settings, state):
    connector = ListConnector({"a": fake_files(3)}, settings=settings, state=state)
    summary = connector.sync_documents({}, dry_run=True)
    (scope,) = summary.scopes
    assert [d.action for d in scope.decisions] == ["ingest"] * 3
    assert connector.opened == {} and state.get_cursor("fake", "a") is None
    assert not os.path.exists(settings.hub_outbox_dir) or not os.listdir(settings.hub_outbox_dir)


def test_fetch_documents_yields_complete_documents_and_changes_nothing(settings, state):
    connector = ListConnector({"a": fake_files(2)}, settings=settings, state=state)
    docs = list(connector.fetch_documents({}))
    assert [d.source_id for d in docs] == ["doc-0", "doc-1"]
    assert docs[0].read_bytes() == connector.files["a"][0].content
    assert docs[0].sha256 == sha(docs[0].read_bytes()) and docs[0].language
    assert state.get_cursor("fake", "a") is None and connector.acknowledged == []


def test_locked_scope_is_skipped(settings, state):
    connector = ListConnector({"a": fake_files(2)}, settings=settings, state=state)
    other = state.lease("fake", "a", ttl=30)
    assert other.acquire()
    summary = connector.sync_documents({})
    assert summary.scopes[0].state == "locked" and connector.opened == {}
    other.release()
    assert connector.sync_documents({}).totals["new"] == 2


def test_status_records_the_run(settings, state):
    connector = ListConnector({"a": fake_files(2)}, settings=settings, state=state)
    connector.sync_documents({})
    status = state.get_status("fake", "a")
    assert status["state"] == "ok" and status["new"] == "2" and float(status["last_success"]) > 0


def test_spool_guard_pauses_the_run(settings, state, tmp_path):
    low = Settings(**{**settings.__dict__, "spool_min_free_mb": 10**9})
    connector = ListConnector({"a": fake_files(2)}, settings=low, state=state)
    summary = connector.sync_documents({})
    assert summary.scopes[0].state == "paused"
    assert state.get_cursor("fake", "a") is None


def test_outbox_is_the_default_hub(settings, state):
    connector = ListConnector({"a": fake_files(2)}, settings=settings, state=state)
    assert isinstance(connector.hub, OutboxHub)
    connector.sync_documents({})
    folders = [p for p in Path(settings.hub_outbox_dir).iterdir() if not p.name.startswith(("_", "."))]
    assert len(folders) == 2
    meta = json.loads((folders[0] / "metadata.json").read_text())
    assert (folders[0] / meta["stored_as"]).read_bytes()


def test_a_connector_needs_a_name(settings, state):
    class Nameless(ListConnector):
        name = ""

    with pytest.raises(TypeError):
        Nameless({}, settings=settings, state=state)


def count_round_trips(state, settings, n: int) -> int:
    """Redis round trips (commands and pipeline executions) of one sync of ``n`` new documents."""
    state.redis.flushdb()
    connector = ListConnector({"a": fake_files(n)}, settings=settings, state=state)
    connector.settings = Settings(**{**settings.__dict__, "cursor_save_every": 10_000, "lock_ttl": 600})
    calls = {"n": 0}
    client = state.redis
    original = client.execute_command
    original_pipeline = client.pipeline

    def counting(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    def counting_pipeline(*args, **kwargs):
        pipe = original_pipeline(*args, **kwargs)
        real_execute = pipe.execute

        def execute(*a, **k):
            calls["n"] += 1
            return real_execute(*a, **k)

        pipe.execute = execute
        return pipe

    client.execute_command = counting
    client.pipeline = counting_pipeline
    try:
        assert connector.sync_documents({}).totals["new"] == n
    finally:
        client.execute_command = original
        client.pipeline = original_pipeline
    return calls["n"]


def test_a_fifth_of_a_round_trip_per_new_document_at_most(settings, state):
    # Batched (base/state.py): a window's versions, a group's contents and a batch's records with
    # the cursor each cost one round trip per ACK_BATCH_SIZE (64) documents.
    small, large = count_round_trips(state, settings, 128), count_round_trips(state, settings, 640)
    per_document = (large - small) / 512
    assert per_document <= 0.2, per_document

def test_soft_time_limit_stops_the_run_and_keeps_the_cursor(settings, state):
    from celery.exceptions import SoftTimeLimitExceeded

    files = fake_files(5)
    connector = ListConnector({"a": files}, settings=settings, state=state)
    real_open = connector._opener

    def opener(fake):
        if fake.source_id == "doc-3":
            def interrupted():
                raise SoftTimeLimitExceeded()
                yield b""  # pragma: no cover
            return interrupted
        return real_open(fake)

    connector._opener = opener  # type: ignore[method-assign]
    summary = connector.sync_documents({}, time_up=(SoftTimeLimitExceeded,))
    assert summary.scopes[0].state == "partial"
    assert summary.totals["new"] == 3 and summary.totals["dead_lettered"] == 0
    assert state.get_cursor("fake", "a") == 3


def test_time_budget_ends_the_run_as_partial_and_resumes(settings, state):
    import time as _time

    connector = ListConnector({"a": fake_files(4)}, settings=settings, state=state)
    summary = connector.sync_documents({}, deadline=_time.monotonic())
    assert summary.scopes[0].state == "partial" and summary.totals["new"] == 1
    assert state.get_cursor("fake", "a") == 1
    summary = connector.sync_documents({})
    assert summary.totals["new"] == 3 and summary.totals["fetched"] == 3


def test_redis_outage_ends_the_run_as_error_and_dead_letters_nothing(settings, state):
    import redis

    one_by_one = Settings(**{**settings.__dict__, "ack_batch_size": 1})
    connector = ListConnector({"a": fake_files(5)}, settings=one_by_one, state=state)
    real = state.record_ingested
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise redis.ConnectionError("Connection refused")
        return real(*args, **kwargs)

    state.record_ingested = flaky  # type: ignore[method-assign]
    summary = connector.sync_documents({})
    assert summary.scopes[0].state == "error" and "ConnectionError" in summary.scopes[0].error
    assert state.list_dead_letters("fake") == []
    assert state.get_cursor("fake", "a") == 2
    assert state.lock_holder("fake", "a") is None


def test_a_later_successful_ingest_resolves_the_dead_letter(settings, state):
    files = fake_files(2)
    files[0].fail = "temporarily unreadable"
    connector = ListConnector({"a": files}, settings=settings, state=state)
    connector.sync_documents({})
    assert [e.source_id for e in state.list_dead_letters("fake")] == ["doc-0"]
    files[0].fail = ""
    summary = connector.sync_documents({}, full=True)
    assert summary.totals["new"] == 1
    assert state.list_dead_letters("fake") == []


def test_outbox_batch_is_acknowledged_only_after_its_flush(settings, state):
    batched = Settings(**{**settings.__dict__, "ack_batch_size": 4, "cursor_save_every": 1})
    connector = ListConnector({"a": fake_files(10)}, settings=batched, state=state)
    flushes = []
    real_flush = connector.hub.flush  # type: ignore[attr-defined]

    def flush():
        flushes.append(state.get_cursor("fake", "a"))
        real_flush()

    connector.hub.flush = flush  # type: ignore[attr-defined]
    summary = connector.sync_documents({})
    assert summary.totals["new"] == 10
    assert flushes == [None, 4, 8]  # the cursor never ran ahead of the flushed, recorded documents
    assert state.get_cursor("fake", "a") == 10
    assert len(connector.acknowledged) == 10


def test_failed_outbox_flush_keeps_the_cursor_and_dead_letters_nothing(settings, state):
    batched = Settings(**{**settings.__dict__, "ack_batch_size": 4})
    connector = ListConnector({"a": fake_files(6)}, settings=batched, state=state)

    def broken_flush():
        raise OSError(28, "No space left on device")

    connector.hub._fsync_folders = lambda folders: broken_flush()  # type: ignore[attr-defined]
    summary = connector.sync_documents({})
    assert summary.scopes[0].state == "error" and "No space left" in summary.scopes[0].error
    assert state.get_cursor("fake", "a") is None
    assert state.list_dead_letters("fake") == [] and connector.acknowledged == []


def test_same_content_twice_in_one_batch_is_uploaded_once(settings, state):
    payload = b"one circular mailed to two lists"
    connector = ListConnector({"a": [FakeFile("m-1", payload), FakeFile("m-2", payload)]}, settings=settings,
                              state=state)
    summary = connector.sync_documents({})
    assert summary.totals["new"] == 1 and summary.totals["duplicate"] == 1
    (folder,) = [p for p in Path(settings.hub_outbox_dir).iterdir() if not p.name.startswith(("_", "."))]
    assert len((folder / "sources.jsonl").read_text().splitlines()) == 1


def test_the_runner_and_the_connector_base_import_no_celery():
    """The pipeline is given its deadline and its time-up exceptions by the task; it never imports
    Celery itself (a fresh interpreter, so no earlier test's import can hide one)."""
    import subprocess
    import sys

    probe = ("import sys, base.runner, base.base_connector, base.contract; "
             "print(sorted(m for m in sys.modules if m == 'celery' or m.startswith(('celery.', 'kombu', 'billiard'))))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parent.parent, check=True)
    assert result.stdout.strip() == "[]", result.stdout
