"""The recent-documents record and the day's totals (base/recent.py), as the pipeline writes them:
real syncs of the fake source on real Redis (db 15), the Hub simulator where a refusal is needed."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from base.hub_client import HttpHub
from base.recent import DAILY_TTL, RECENT_LENGTH, RecentDocument, RecentFilter, ist_day, read_day_totals, read_recent
from base.state import HeldDocument, StateStore
from tests.helpers import FakeFile, ListConnector, fake_files

CIRCULAR_ML = "അഗ്നിശമന മോക്ക് ഡ്രിൽ സർക്കുലർ.txt"
CIRCULAR_TEXT = ("എല്ലാ സ്റ്റേഷനുകളിലും വെള്ളിയാഴ്ച അഗ്നിശമന മോക്ക് ഡ്രിൽ നടത്തും. സുരക്ഷാ ഉദ്യോഗസ്ഥർ "
                 "യാത്രക്കാരെ ഒഴിപ്പിക്കാനുള്ള സമയം രേഖപ്പെടുത്തണം.")


def recent(state: StateStore, **where: str) -> list[RecentDocument]:
    return read_recent(state.redis, state.keys, where=RecentFilter(**where), limit=RECENT_LENGTH)


def today(state: StateStore, source: str = "fake") -> dict[str, int]:
    (totals,) = read_day_totals(state.redis, state.keys, [source])
    return totals.counts


def test_each_delivered_document_is_recorded_with_language_department_and_extraction(settings, state) -> None:
    files = [*fake_files(2), FakeFile("ml-1", CIRCULAR_TEXT.encode(), filename=CIRCULAR_ML, mime_type="text/plain")]
    connector = ListConnector({"a": files}, settings=settings, state=state)
    assert connector.sync_documents({}).totals["new"] == 3
    entries = recent(state)
    assert [e.source_id for e in entries] == ["ml-1", "doc-1", "doc-0"]  # newest first
    circular = entries[0]
    assert circular.filename == CIRCULAR_ML and circular.decision == "uploaded" and circular.scope == "a"
    assert circular.language == "ml" and circular.department == "Safety" and circular.department_terms
    assert circular.extraction["method"] != "none" and circular.extraction["chars"] > 0
    assert circular.hub_id == state.get_item("fake", "a", "ml-1").hub_id
    assert today(state)["new"] == 3
    (totals,) = read_day_totals(state.redis, state.keys, ["fake"])
    assert totals.by_language["new"]["ml"] == 1 and totals.by_department["new"]["Safety"] >= 1


def test_new_versions_deletions_and_failures_are_told_apart(settings, state, hub) -> None:
    def sync(files: list[FakeFile]) -> None:
        ListConnector({"a": files}, settings=settings, state=state,
                      hub=HttpHub(hub.url, hub.token)).sync_documents({})

    first = fake_files(3)
    sync(first)
    hub.sim.set_fault("reject", match="refused.pdf")
    state.clear_cursor("fake", "a")
    sync([FakeFile("doc-0", b"a new version of the first file", version="2"),  # new bytes: updated
          FakeFile("doc-1", first[1].content, version="2"),  # the same bytes again: unchanged
          FakeFile("doc-2", b"", version="gone", deleted=True),
          FakeFile("doc-3", b"unreadable", fail="the archive is encrypted", filename="locked.zip"),
          FakeFile("doc-4", b"the Hub refuses this one", filename="refused.pdf"),
          FakeFile("doc-5", b"and takes this one")])
    decisions = {e.source_id: e.decision for e in reversed(recent(state))}  # the last decision of each
    assert decisions == {"doc-0": "uploaded", "doc-1": "unchanged", "doc-2": "deleted", "doc-3": "dead-lettered",
                         "doc-4": "dead-lettered", "doc-5": "uploaded"}
    refused = next(e for e in recent(state) if e.source_id == "doc-4")
    assert refused.filename == "refused.pdf" and "422" in refused.reason
    assert next(e for e in recent(state) if e.source_id == "doc-3").filename == "locked.zip"
    assert today(state) == {"new": 4, "updated": 1, "unchanged": 1, "reprocessed": 0, "deleted": 1, "held": 0,
                            "failed": 2, "renamed": 0}
    assert [e.source_id for e in recent(state, decision="dead-lettered")] == ["doc-4", "doc-3"]


def test_a_held_document_is_recorded_with_its_rule(state) -> None:
    state.add_held(HeldDocument("sharepoint", "d1", "f-1", "1", "hold-aadhaar", kinds={"aadhaar": 2},
                                filename="ശമ്പളം.xlsx", metadata={"hub": {"language": "ml", "department": "HR"}}),
                   None)
    (entry,) = recent(state)
    assert (entry.decision, entry.filename, entry.language, entry.department) == ("held", "ശമ്പളം.xlsx", "ml", "HR")
    assert entry.reason == "hold-aadhaar (personal data: aadhaar 2)"
    assert today(state, "sharepoint")["held"] == 1


def test_the_record_keeps_the_newest_entries_only(state) -> None:
    entries = [RecentDocument("fake", "a", f"doc-{i}", "uploaded") for i in range(RECENT_LENGTH + 5)]
    state.record_many("fake", [], recent=entries)
    kept = recent(state)
    assert len(kept) == RECENT_LENGTH == state.redis.llen(state.keys.recent())
    assert kept[0].source_id == f"doc-{RECENT_LENGTH + 4}" and kept[-1].source_id == "doc-5"


def test_totals_are_kept_by_the_day_in_ist_and_expire(state) -> None:
    evening_utc = datetime(2025, 5, 1, 19, 0, tzinfo=UTC).timestamp()  # 00:30 on 2 May in Kolkata
    state.record_many("email", [], recent=[RecentDocument("email", "INBOX", "m-1", "uploaded", at=evening_utc,
                                                          language="en")])
    assert ist_day(evening_utc) == "2025-05-02"
    key = state.keys.daily("email", "2025-05-02")
    assert state.redis.hgetall(key) == {"new": "1", "new|language=en": "1", "new|department=unclassified": "1"}
    assert 0 < state.redis.ttl(key) <= DAILY_TTL
    (totals,) = read_day_totals(state.redis, state.keys, ["email"], "2025-05-01")
    assert totals.counts["new"] == 0


def test_the_record_is_written_inside_the_batch_transaction(settings, state, redis_url) -> None:
    # Watch the commands Redis executes: every LPUSH of the record sits inside a MULTI/EXEC, beside
    # the item records it describes, so it costs no round trip of its own.
    monitor_client = StateStore.from_url(redis_url).redis
    commands: list[str] = []
    ready, stop = threading.Event(), threading.Event()

    def watch() -> None:
        with monitor_client.monitor() as monitor:
            ready.set()
            for entry in monitor.listen():
                commands.append(entry["command"])
                if stop.is_set() and "DONE-MARKER" in entry["command"]:
                    return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ready.wait(5)
    assert ListConnector({"a": fake_files(130)}, settings=settings, state=state).sync_documents({}).totals["new"] == 130
    stop.set()
    state.redis.get("DONE-MARKER")
    watcher.join(10)
    transaction: list[str] | None = None
    pushes, outside = [], 0
    for command in commands:
        if command == "MULTI":
            transaction = []
        elif command == "EXEC" and transaction is not None:
            if any(c.startswith(f"LPUSH {state.keys.recent()}") for c in transaction):
                pushes.append(sum(c.startswith(f"HSET {state.keys.items('fake', 'a')}") for c in transaction))
            transaction = None
        elif transaction is not None:
            transaction.append(command)
        elif command.startswith(f"LPUSH {state.keys.recent()}"):
            outside += 1
    assert outside == 0
    assert sum(pushes) == 130 and len(pushes) < 130 / 10  # one push per batch, each with its records
