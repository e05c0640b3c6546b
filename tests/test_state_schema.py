"""The schema version and the migration from the state e3367a7 writes (base/schema.py).

The fixture tests/data/e3367a7_state.json is a dump of what e3367a7's own worker tasks, web app
and simulators wrote (tests/data/record_e3367a7_state.py); every test loads it into a real Redis.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from base.keys import SCHEMA_VERSION
from base.schema import SchemaMismatch, SchemaTooNew, check_keys, current_version, migrate, stored_version
from base.state import DeadLetter, StateStore
from connectors.registry import build_connectors
from connectors.whatsapp_inbox import InboundMedia, Inbox
from sandbox.samples import kmrl_samples
from sandbox.stack import RedisLayout, Stack
from tests.conftest import flushed_db_url
from tests.data.record_e3367a7_state import dump_keys
from tests.helpers import ListConnector, fake_files

FIXTURE = Path(__file__).parent / "data" / "e3367a7_state.json"


def load_fixture() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text())


def restore(client: redis.Redis, rows: list[dict[str, Any]]) -> None:
    """Writes every dumped key back: same type, value and (remaining) TTL."""
    for row in rows:
        key, kind, value = row["key"], row["type"], row["value"]
        if kind == "string":
            client.set(key, value)
        elif kind == "hash":
            client.hset(key, mapping=value)
        elif kind == "list":
            client.rpush(key, *value)
        elif kind == "stream":
            for entry_id, fields in value["entries"]:
                client.xadd(key, fields, id=entry_id)
            for group in value["groups"]:
                client.xgroup_create(key, group["name"], id=group["last_delivered_id"], mkstream=True)
                for consumer in group["consumers"]:
                    client.xgroup_createconsumer(key, group["name"], consumer)
                assert not group["pending"], "the fixture has no pending entries to restore"
        else:
            raise AssertionError(f"{key}: {kind} not handled")
        if row["ttl_ms"] > 0:
            client.pexpire(key, row["ttl_ms"])


@pytest.fixture
def old_state(redis_client: redis.Redis) -> dict[str, Any]:
    fixture = load_fixture()
    restore(redis_client, fixture["keys"])
    return fixture


def rows_by_kind(fixture: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    head = fixture["prefix"] + kind + ":"
    return [row for row in fixture["keys"] if row["key"].startswith(head)]


def scope_of(key: str, prefix: str, kind: str) -> tuple[str, str]:
    connector, _, scope = key[len(prefix + kind + ":"):].partition(":")
    return connector, scope


def test_the_fixture_holds_every_kind_of_key_e3367a7_writes() -> None:
    kinds = {row["key"].split(":")[1] for row in load_fixture()["keys"]}
    assert kinds == {"content", "cursor", "deadletter", "health", "history", "item", "lock", "metrics", "scopes",
                     "status", "throttle", "whatsapp"}


def test_migration_stamps_the_version_and_keeps_every_key_as_it_was(redis_client: redis.Redis,
                                                                    old_state: dict[str, Any]) -> None:
    store = StateStore(redis_client, prefix=old_state["prefix"])
    assert stored_version(store) is None
    assert current_version(store) == 1

    result = migrate(store)

    assert (result.before, result.after, result.migrated) == (1, SCHEMA_VERSION, True)
    assert stored_version(store) == SCHEMA_VERSION
    assert result.kinds["item"] == len(rows_by_kind(old_state, "item"))
    after = {row["key"]: row for row in dump_keys(redis_client)}
    assert set(after) == {row["key"] for row in old_state["keys"]} | {store.keys.schema_version()}
    for row in old_state["keys"]:
        assert after[row["key"]]["type"] == row["type"]
        assert after[row["key"]]["value"] == row["value"], row["key"]
        assert (after[row["key"]]["ttl_ms"] > 0) == (row["ttl_ms"] > 0), row["key"]
    # Again: nothing to do, nothing changed.
    again = migrate(store)
    assert (again.before, again.after, again.migrated) == (SCHEMA_VERSION, SCHEMA_VERSION, False)


def test_after_the_migration_this_release_reads_every_cursor_and_record(redis_client: redis.Redis,
                                                                         old_state: dict[str, Any]) -> None:
    prefix = old_state["prefix"]
    store = StateStore(redis_client, prefix=prefix)
    migrate(store)

    for row in rows_by_kind(old_state, "cursor"):
        assert store.get_cursor(*scope_of(row["key"], prefix, "cursor")) == json.loads(row["value"])
    for row in rows_by_kind(old_state, "item"):
        connector, scope = scope_of(row["key"], prefix, "item")
        assert store.count_items(connector, scope) == len(row["value"])
        for source_id, raw in row["value"].items():
            record, wrote = store.get_item(connector, scope, source_id), json.loads(raw)
            assert record is not None
            assert (record.version, record.sha256, record.hub_id) == (wrote["v"], wrote["sha256"], wrote["hub_id"])
            assert store.get_content(record.sha256) == record.hub_id
    statuses = {(c, s): status for c, s, status in store.iter_statuses()}
    assert statuses == {scope_of(r["key"], prefix, "status"): r["value"] for r in rows_by_kind(old_state, "status")}
    runs = list(store.iter_history())
    assert len(runs) == len(rows_by_kind(old_state, "history"))
    assert {(run["connector"], run["scope"]) for run in runs} == {
        scope_of(r["key"], prefix, "history") for r in rows_by_kind(old_state, "history")}
    dead = store.list_dead_letters()
    wrote_dead = [DeadLetter(**json.loads(raw)) for r in rows_by_kind(old_state, "deadletter")
                  for raw in r["value"].values()]
    assert dead == wrote_dead and dead
    assert store.get_dead_letter(dead[0].connector, dead[0].scope, dead[0].source_id) == dead[0]
    counters, gauges = store.metrics()
    wrote_metrics = {r["key"]: r["value"] for r in rows_by_kind(old_state, "metrics")}
    assert counters == {k: float(v) for k, v in wrote_metrics[store.keys.counters()].items()}
    assert gauges == {k: float(v) for k, v in wrote_metrics[store.keys.gauges()].items()}
    assert store.throttle_gate("hub", "default").blocked_until() > time.time()
    assert store.lock_holder("maximo", "all")
    assert store.cached_scopes("maximo", "0") == ["MUTTOM", "ALUVA"]
    assert (store.load_health() or {}).get("checked_at")

    # The WhatsApp inbox: the entry queued after the last run is still there for the next one, and
    # a wamid queued before the upgrade is still a duplicate when Meta delivers it again.
    inbox = Inbox.for_prefix(redis_client, prefix)
    unread = next(r for r in old_state["keys"] if r["type"] == "stream")["value"]["entries"]
    assert [e.entry_id for e in inbox.read_new("after-upgrade")] == [entry_id for entry_id, _ in unread]
    seen = next(r["key"] for r in rows_by_kind(old_state, "whatsapp") if ":seen:" in r["key"]).rsplit(":", 1)[1]
    assert inbox.append([InboundMedia(wamid=seen, type="image", media_id="again")]) == []


def test_a_sync_after_the_migration_uploads_nothing_again_and_resumes_from_the_cursors(
        tmp_path: Path, old_state: dict[str, Any], redis_url: str) -> None:
    """The Maximo simulator seeded as when the dump was made: its work orders carry the same dates,
    so the dumped cursors and records are valid against it."""
    layout = RedisLayout(*(flushed_db_url(db) for db in (5, 6, 7)), redis_url)
    with Stack(root=tmp_path / "stack", redis=layout, sources=["maximo"]) as stack:
        stack.seed(kmrl_samples(old_state["seed"]))
        store = StateStore.from_url(redis_url, prefix=old_state["prefix"])
        store.redis.delete(store.keys.lock("maximo", "all"))  # the dead worker's lease, not in this test
        migrate(store)
        (connector,) = build_connectors("maximo", stack.settings(), state=store)
        before = {scope: store.get_cursor("maximo", scope) for scope in ("MUTTOM", "ALUVA")}

        resumed = connector.sync_documents()
        assert {r.scope: r.counts["fetched"] for r in resumed.scopes} == {"MUTTOM": 0, "ALUVA": 0}
        assert {scope: store.get_cursor("maximo", scope) for scope in before} == before

        full = connector.sync_documents(full=True)
        assert sum(r.counts["fetched"] for r in full.scopes) == 6
        # Re-read from the start, every document is known by its content record: none is uploaded.
        assert sum(r.counts["new"] for r in full.scopes) == 0
        assert sum(r.counts["duplicate"] for r in full.scopes) == 6
        assert not stack.running.hub.state()["documents"]


def test_an_empty_prefix_is_stamped_with_the_current_version(state: StateStore) -> None:
    result = migrate(state)
    assert (result.before, result.after, result.migrated) == (SCHEMA_VERSION, SCHEMA_VERSION, False)
    assert stored_version(state) == SCHEMA_VERSION


def test_state_newer_than_this_release_is_refused(state: StateStore) -> None:
    state.redis.set(state.keys.schema_version(), SCHEMA_VERSION + 1)
    with pytest.raises(SchemaTooNew, match=f"schema version {SCHEMA_VERSION + 1}, newer than this release's"):
        migrate(state)
    assert stored_version(state) == SCHEMA_VERSION + 1


def test_a_key_of_a_known_kind_but_the_wrong_type_stops_the_migration(state: StateStore) -> None:
    state.redis.hset(state.keys.cursor("email", "inbox"), "not", "a string")
    with pytest.raises(SchemaMismatch, match="is a hash, not the string"):
        migrate(state)
    assert stored_version(state) is None


def test_the_recent_record_and_the_daily_totals_are_kinds_the_migration_knows(settings, state: StateStore) -> None:
    assert ListConnector({"a": fake_files(2)}, settings=settings, state=state).sync_documents({}).totals["new"] == 2
    kinds = check_keys(state)
    assert kinds["recent"] == 1 and kinds["daily"] == 1 and "other" not in kinds, kinds


def test_a_recent_record_of_the_wrong_type_stops_the_migration(state: StateStore) -> None:
    state.redis.hset(state.keys.recent(), "not", "a list")
    with pytest.raises(SchemaMismatch, match="is a hash, not the list a recent key is"):
        migrate(state)


def _migrate_in_child(url: str, prefix: str, results: Any) -> None:
    result = migrate(StateStore.from_url(url, prefix=prefix))
    results.put((result.before, result.after, result.migrated))


def test_processes_starting_at_once_migrate_once(redis_url: str, old_state: dict[str, Any]) -> None:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    children = [context.Process(target=_migrate_in_child, args=(redis_url, old_state["prefix"], results))
                for _ in range(4)]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    assert sum(1 for _, _, migrated in outcomes if migrated) == 1
    assert {after for _, after, _ in outcomes} == {SCHEMA_VERSION}


def test_watcher_records_and_leases_are_kinds_the_schema_knows(state: StateStore) -> None:
    from base.schema import check_keys
    from watchers.board import WatcherBoard, WatcherRecord

    WatcherBoard(state).publish(WatcherRecord(name="email:ops@imap.kmrl.test", state="connected", host="vm-1:7"),
                                ttl=60, holder=True)
    state.redis.set(state.keys.watcher_lease("email:ops@imap.kmrl.test"), "token", px=60_000)
    counts = check_keys(state)
    assert (counts["watcher"], counts["lock"], counts["metrics"]) == (1, 1, 1) and "other" not in counts
    state.redis.set(state.keys.watcher("email:finance@imap.kmrl.test"), "not a hash")
    with pytest.raises(SchemaMismatch, match="is a string, not the hash"):
        migrate(state)
