"""The per-scope state a SharePoint resync and a rename rely on, on a real Redis: the ids a resync has
listed (base/resync.py) and the location digest of an item record (base/relocation.py)."""

from __future__ import annotations

from base import resync
from base.contract import Item
from base.relocation import location_digest, relocated
from base.resync import ResyncLedger
from base.schema import check_keys, migrate
from base.state import ItemRecord, StateStore

RECORD = ItemRecord("c1", "a" * 64, "hub-1")


def record_items(state: StateStore, scope: str, source_ids: list[str]) -> None:
    state.record_many("sharepoint", [(scope, sid, RECORD, "new", 1) for sid in source_ids])


def test_a_new_resync_forgets_the_ids_of_the_one_before(state: StateStore) -> None:
    ledger = ResyncLedger(state, "sharepoint", "drive-1")
    first = ledger.begin()
    ledger.add(["01A", "01B"])
    assert ledger.holds(first)
    second = ledger.begin()
    assert second != first and ledger.holds(second) and not ledger.holds(first) and not ledger.holds("")
    record_items(state, "drive-1", ["01A", "01B"])
    assert sorted(ledger.unlisted()) == ["01A", "01B"]


def test_unlisted_are_the_records_the_resync_did_not_list_across_batches(state: StateStore, monkeypatch) -> None:
    monkeypatch.setattr(resync, "COMPARE_BATCH", 7)  # many batches, and a partial last one
    ids = [f"01F{i:04}" for i in range(60)]
    record_items(state, "drive-1", ids)
    record_items(state, "drive-2", ["01OTHER"])  # another scope's records are not compared
    ledger = ResyncLedger(state, "sharepoint", "drive-1")
    ledger.begin()
    gone = {ids[0], ids[13], ids[59]}
    ledger.add(sid for sid in ids if sid not in gone)
    ledger.add(["01FOLDERLESS-NEW"])  # listed, never recorded: nothing to compare
    assert sorted(ledger.unlisted()) == sorted(gone)


def test_the_comparison_goes_on_while_the_pipeline_forgets_what_it_reports(state: StateStore, monkeypatch) -> None:
    monkeypatch.setattr(resync, "COMPARE_BATCH", 5)
    ids = [f"01G{i:03}" for i in range(40)]
    record_items(state, "drive-1", ids)
    ledger = ResyncLedger(state, "sharepoint", "drive-1")
    ledger.begin()
    ledger.add(ids[::2])
    reported = []
    for sid in ledger.unlisted():
        reported.append(sid)
        state.forget_item("sharepoint", "drive-1", sid)
    assert sorted(set(reported)) == sorted(ids[1::2])
    assert list(ledger.unlisted()) == []


def test_the_ids_go_with_the_scope_and_are_a_known_kind_of_key(state: StateStore) -> None:
    migrate(state)
    ledger = ResyncLedger(state, "sharepoint", "drive-1")
    ledger.begin()
    ledger.add(["01A"])
    assert check_keys(state)["resync"] == 1
    state.forget_scope("sharepoint", "drive-1")
    assert not state.redis.exists(ledger.key)
    ledger.begin()
    ledger.drop()
    assert not state.redis.exists(ledger.key)


def test_an_item_record_keeps_its_location_digest_and_older_records_read_without_one(state: StateStore) -> None:
    with_location = ItemRecord("c1", "a" * 64, "hub-1", location=location_digest("/Safety/drill.pdf"))
    state.record_ingested("sharepoint", "drive-1", "01A", with_location, outcome="new", size=1)
    state.record_ingested("sharepoint", "drive-1", "01B", RECORD, outcome="new", size=1)
    assert state.get_item("sharepoint", "drive-1", "01A") == with_location
    raw = state.redis.hget(state.keys.items("sharepoint", "drive-1"), "01B")
    assert raw is not None and "loc" not in raw  # a record without a location is written as before
    assert state.get_item("sharepoint", "drive-1", "01B") == RECORD


def test_an_item_is_relocated_only_when_its_connector_gives_a_new_place_of_a_delivered_document() -> None:
    here = ItemRecord("c1", "a" * 64, "hub-1", location=location_digest("/Safety/drill.pdf"))
    assert not relocated(here, Item("01A", "c1", location="/Safety/drill.pdf"))
    assert relocated(here, Item("01A", "c1", location="/Safety/drill 2025.pdf"))
    assert not relocated(here, Item("01A", "c1"))  # the connector says nothing of places
    assert not relocated(None, Item("01A", "c1", location="/x.pdf"))
    assert not relocated(ItemRecord("c1", "", "", held="h1"), Item("01A", "c1", location="/x.pdf"))
    assert relocated(RECORD, Item("01A", "c1", location="/x.pdf"))  # recorded before places were kept
    assert location_digest("") == "" and len(location_digest("/x.pdf")) == 20
