"""Documents carrying personal data: flagged and delivered by default; held back by a ``[[hold]]``
content rule (bytes kept, the cursor moving on), then released, dropped, or expired by the daily
cleanup. Real Redis (db 15), the local outbox as the Hub, a fake source; the CLI through cli.main.

Every number here is synthetic (sandbox/personal_data.py)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

import cli
from base.cleanup import DAY, expire_held, purge_expired_held, purge_orphaned_held_bytes
from base.enrichment import steps
from base.enrichment.rules import ContentRules
from base.enrichment.sensitive import flag_sensitive
from base.held import FAILED, REFUSED, RELEASED, drop, release
from base.keys import SCHEMA_VERSION
from base.schema import migrate, stored_version
from base.state import EXPIRED, HELD, StateStore
from config.settings import Settings
from connectors import registry
from sandbox.personal_data import aadhaar
from tests.conftest import make_settings
from tests.helpers import FakeFile, ListConnector
from tests.scheduler_fakes import FAKE_SOURCES
from utils.errors import ConfigError
from web.metrics import render_metrics

RNG = random.Random(1414)
AADHAAR = aadhaar(RNG)
AADHAAR_SPACED = f"{AADHAAR[:4]} {AADHAAR[4:8]} {AADHAAR[8:]}"
MOBILE = "98470 12345"
#: What a field officer's WhatsApp caption might say: two kinds of personal data.
PERSONAL = f"KYC form of the new contract staff, Aadhaar {AADHAAR_SPACED}, mobile {MOBILE}"
VALUES = (AADHAAR, AADHAAR_SPACED, MOBILE, MOBILE.replace(" ", ""))
HOLD_AADHAAR = {"hold": [{"name": "kyc-aadhaar", "sources": ["fake"], "sensitive": ["aadhaar", "pan"]}]}


def test_the_pipeline_flags_personal_data() -> None:
    assert flag_sensitive in steps.DEFAULT_ENRICHERS


def files() -> list[FakeFile]:
    return [FakeFile("clean-1", b"duty roster week 42", text="Crew duty roster"),
            FakeFile("kyc-2", b"%PDF scanned KYC form", filename="kyc.pdf", text=PERSONAL),
            FakeFile("clean-3", b"escalator log", text="Escalator at Aluva repaired")]


def connector(settings: Settings, rules: dict[str, Any] | None = None,
              scope_files: list[FakeFile] | None = None) -> ListConnector:
    return ListConnector({"a": scope_files if scope_files is not None else files()}, settings=settings,
                         rules=ContentRules.from_mapping(rules or {}))


def outbox_metadata(settings: Settings) -> dict[str, dict[str, Any]]:
    """source_id -> the metadata.json of every document in the outbox."""
    folder = Path(settings.hub_outbox_dir)
    found = {}
    for path in folder.glob("*/metadata.json") if folder.is_dir() else []:
        meta = json.loads(path.read_text(encoding="utf-8"))
        found[meta["source_id"]] = meta
    return found


def audit_lines(settings: Settings) -> list[dict[str, Any]]:
    path = Path(settings.audit_log)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def held_files(settings: Settings) -> list[Path]:
    return sorted(p for p in Path(settings.held_dir).rglob("*") if p.is_file())


def assert_no_values(text: str) -> None:
    for value in VALUES:
        assert value not in text


# -- flagged by default -------------------------------------------------------------------------------

def test_personal_data_is_flagged_by_default_and_the_document_delivered(settings: Settings) -> None:
    with structlog.testing.capture_logs() as logs:
        summary = connector(settings).sync_documents({})
    assert summary.state == "ok" and summary.totals["new"] == 3 and summary.totals["held"] == 0
    delivered = outbox_metadata(settings)
    assert delivered["kyc-2"]["sensitive"] == {"aadhaar": 1, "mobile": 1}
    assert delivered["clean-1"]["sensitive"] == {} and delivered["clean-3"]["sensitive"] == {}
    (ingested,) = [a for a in audit_lines(settings) if a["source_id"] == "kyc-2"]
    assert ingested["decision"] == "ingested" and ingested["sensitive"] == {"aadhaar": 1, "mobile": 1}
    # Kinds and counts only: no value in any metadata, log event or audit line.
    assert_no_values(json.dumps(delivered))
    assert_no_values(json.dumps(logs, default=str))
    assert_no_values(Path(settings.audit_log).read_text(encoding="utf-8"))
    assert held_files(settings) == []


@pytest.mark.parametrize("rules", [
    {"hold": [{"name": "pan-only", "sensitive": ["pan"]}]},  # another kind
    {"hold": [{"name": "email-only", "sources": ["email"], "sensitive": ["aadhaar"]}]},  # another source
    {"hold": [{"name": "images-only", "mime_types": ["image/*"], "sensitive": ["aadhaar"]}]},  # another type
])
def test_a_hold_rule_that_does_not_match_leaves_the_document_flagged_and_delivered(settings, rules):
    summary = connector(settings, rules).sync_documents({})
    assert summary.totals["new"] == 3 and summary.totals["held"] == 0
    assert outbox_metadata(settings)["kyc-2"]["sensitive"] == {"aadhaar": 1, "mobile": 1}


# -- held by a rule -----------------------------------------------------------------------------------

def test_a_hold_rule_keeps_the_document_back_and_the_scope_moves_on(settings: Settings) -> None:
    conn = connector(settings, HOLD_AADHAAR)
    with structlog.testing.capture_logs() as logs:
        summary = conn.sync_documents({})
    assert summary.state == "ok"
    assert {k: summary.totals[k] for k in ("fetched", "new", "held", "failed")} == {
        "fetched": 3, "new": 2, "held": 1, "failed": 0}
    assert sorted(outbox_metadata(settings)) == ["clean-1", "clean-3"]  # not uploaded
    assert conn.state.get_cursor("fake", "a") == 3  # the scope never stalls behind it
    assert sorted(conn.acknowledged) == ["clean-1", "clean-3", "kyc-2"]
    (entry,) = conn.state.list_held()
    assert (entry.connector, entry.scope, entry.source_id, entry.filename) == ("fake", "a", "kyc-2", "kyc.pdf")
    assert entry.rule == "rule:kyc-aadhaar" and entry.kinds == {"aadhaar": 1, "mobile": 1} and entry.state == HELD
    kept = Path(entry.bytes_path)
    assert kept.parent.parent == Path(settings.held_dir).resolve() and kept.read_bytes() == b"%PDF scanned KYC form"
    assert entry.sha256 == hashlib.sha256(kept.read_bytes()).hexdigest()
    assert entry.metadata["hub"]["sensitive"] == {"aadhaar": 1, "mobile": 1}
    record = conn.state.get_item("fake", "a", "kyc-2")
    assert record is not None and record.held == entry.id and record.hub_id == ""
    (held_line,) = [a for a in audit_lines(settings) if a["decision"] == "held"]
    assert held_line["source_id"] == "kyc-2" and "rule:kyc-aadhaar" in held_line["reason"]
    assert "aadhaar=1" in held_line["reason"] and "mobile=1" in held_line["reason"]
    assert_no_values(json.dumps(logs, default=str) + Path(settings.audit_log).read_text(encoding="utf-8"))
    assert_no_values(json.dumps(entry.metadata) + json.dumps(conn.state.get_status("fake", "a")))
    assert conn.state.get_status("fake", "a")["held"] == "1"
    metrics = render_metrics(conn.state)
    assert 'kmrl_held_documents{source="fake"} 1' in metrics
    assert 'kmrl_documents_total{outcome="held",source="fake"} 1' in metrics


def test_personal_data_in_the_extracted_text_holds_the_document_and_its_text_is_kept_and_released(
        settings: Settings) -> None:
    content = f"Staff KYC register\nName: Contract staff 7\nAadhaar: {AADHAAR_SPACED}\n".encode()
    conn = connector(settings, HOLD_AADHAAR, [FakeFile("register-1", content, filename="register.txt",
                                                       mime_type="text/plain")])
    assert conn.sync_documents({}).totals["held"] == 1  # the connector's text says nothing: the content does
    (entry,) = conn.state.list_held()
    assert entry.kinds == {"aadhaar": 1} and entry.metadata["hub"]["extraction"]["chars"] > 0
    assert AADHAAR_SPACED in Path(entry.text_path).read_text(encoding="utf-8")
    assert release(conn, entry).result == RELEASED
    folder = Path(settings.hub_outbox_dir) / entry.sha256
    assert AADHAAR_SPACED in (folder / "text.txt").read_text(encoding="utf-8")  # the text part, as any document's
    assert json.loads((folder / "metadata.json").read_text(encoding="utf-8"))["sensitive"] == {"aadhaar": 1}
    assert not Path(entry.bytes_path).exists() and not Path(entry.text_path).exists()


def test_retention_deletes_the_kept_text_with_the_bytes(settings: Settings) -> None:
    content = f"Aadhaar: {AADHAAR_SPACED}\n".encode()
    conn = connector(settings, HOLD_AADHAAR,
                     [FakeFile("register-1", content, filename="r.txt", mime_type="text/plain")])
    conn.sync_documents({})
    (entry,) = conn.state.list_held()
    assert Path(entry.text_path).exists()
    now = time.time()
    assert purge_orphaned_held_bytes(conn.state, settings.held_dir, older_than=now + DAY) == 0  # both kept
    entry.held_at = now - settings.held_retention_days * DAY - 1
    conn.state.update_held(entry)
    assert expire_held(conn.state, older_than=now - settings.held_retention_days * DAY, now=now) == 1
    assert held_files(settings) == []


def test_a_held_item_is_not_fetched_again(settings: Settings) -> None:
    conn = connector(settings, HOLD_AADHAAR)
    conn.sync_documents({})
    conn.state.clear_cursor("fake", "a")  # as if a crash had kept the cursor before it
    summary = conn.sync_documents({})
    assert summary.totals["held"] == 0 and summary.totals["duplicate"] == 3
    assert conn.opened["kyc-2"] == 1
    assert len(conn.state.list_held()) == 1


def test_a_reprocess_run_leaves_held_and_dropped_items_alone(settings: Settings) -> None:
    from base.runner import Reprocess

    conn = connector(settings, HOLD_AADHAAR)
    conn.sync_documents({})
    (entry,) = conn.state.list_held()
    summary = conn.sync_documents({}, reprocess=Reprocess())
    assert summary.totals["held"] == 0 and conn.opened["kyc-2"] == 1
    assert conn.state.list_held() == [entry]
    drop(conn.state, conn.audit, entry)
    assert conn.sync_documents({}, reprocess=Reprocess()).totals["held"] == 0 and conn.state.list_held() == []


def test_a_dry_run_says_the_held_item_is_held(settings: Settings) -> None:
    conn = connector(settings, HOLD_AADHAAR)
    conn.sync_documents({})
    (result,) = conn.sync_documents({}, dry_run=True, full=False).scopes
    assert result.decisions == []  # the cursor is past everything
    conn.state.clear_cursor("fake", "a")
    (result,) = conn.sync_documents({}, dry_run=True).scopes
    assert [(d.source_id, d.reason) for d in result.decisions if d.source_id == "kyc-2"] == [("kyc-2", "already held")]


# -- release ------------------------------------------------------------------------------------------

def test_release_uploads_the_held_document_once_and_records_the_item(settings: Settings) -> None:
    conn = connector(settings, HOLD_AADHAAR)
    conn.sync_documents({})
    (entry,) = conn.state.list_held()
    outcome = release(conn, entry)
    assert outcome.result == RELEASED
    meta = outbox_metadata(settings)["kyc-2"]
    assert meta["sensitive"] == {"aadhaar": 1, "mobile": 1} and meta["filename"] == "kyc.pdf"
    assert meta["sha256"] == entry.sha256
    record = conn.state.get_item("fake", "a", "kyc-2")
    assert record is not None and not record.held and record.hub_id == outcome.hub_id and record.sha256 == entry.sha256
    assert conn.state.list_held() == [] and not Path(entry.bytes_path).exists()
    decisions = [a["decision"] for a in audit_lines(settings) if a["source_id"] == "kyc-2"]
    assert decisions == ["held", "ingested", "released"]
    # Not fetched again, and the entry a second release would need is gone.
    conn.state.clear_cursor("fake", "a")
    assert conn.sync_documents({}).totals["new"] == 0 and conn.opened["kyc-2"] == 1
    assert conn.state.get_held(entry.id) is None


def test_a_held_new_version_is_released_as_the_successor_of_the_delivered_one(settings: Settings) -> None:
    first = [FakeFile("kyc-2", b"blank KYC form", text="KYC form (blank)")]
    conn = connector(settings, HOLD_AADHAAR, first)
    conn.sync_documents({})
    delivered = conn.state.get_item("fake", "a", "kyc-2")
    assert delivered is not None
    conn.files["a"] = [FakeFile("kyc-2", b"filled KYC form", version="2", text=PERSONAL)]
    conn.state.clear_cursor("fake", "a")
    assert conn.sync_documents({}).totals["held"] == 1
    held_record = conn.state.get_item("fake", "a", "kyc-2")
    assert held_record is not None and held_record.version == "2"
    assert (held_record.sha256, held_record.hub_id) == (delivered.sha256, delivered.hub_id)  # what the Hub has
    (entry,) = conn.state.list_held()
    assert release(conn, entry).result == RELEASED
    newest = max(outbox_metadata_versions(settings), key=lambda m: m["version"])
    assert newest["version"] == "2" and newest["previous_sha256"] == delivered.sha256


def outbox_metadata_versions(settings: Settings) -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in Path(settings.hub_outbox_dir).glob("*/metadata.json")]


def test_release_is_refused_when_a_newer_version_was_delivered_since(settings: Settings) -> None:
    conn = connector(settings, HOLD_AADHAAR)
    conn.sync_documents({})
    (entry,) = conn.state.list_held()
    conn.files["a"][1] = FakeFile("kyc-2", b"form, personal data removed", version="2", text="KYC form")
    conn.state.clear_cursor("fake", "a")
    assert conn.sync_documents({}).totals["new"] == 1
    outcome = release(conn, entry)
    assert outcome.result == REFUSED and "version 2" in outcome.detail
    assert outbox_metadata(settings)["kyc-2"]["version"] == "2"


def test_release_keeps_the_entry_when_the_hub_refuses_it(settings: Settings, hub: Any) -> None:
    from base.hub_client import HttpHub

    conn = ListConnector({"a": files()}, settings=settings, rules=ContentRules.from_mapping(HOLD_AADHAAR),
                         hub=HttpHub(hub.url, hub.token))
    conn.sync_documents({})
    (entry,) = conn.state.list_held()
    hub.sim.set_fault("reject", match=entry.sha256)
    outcome = release(conn, entry)
    assert outcome.result == FAILED and "422" in outcome.detail
    assert conn.state.get_held(entry.id) is not None and Path(entry.bytes_path).exists()
    hub.sim.clear_faults()
    assert release(conn, entry).result == RELEASED
    assert [d.metadata["source_id"] for d in hub.sim.documents.values()].count("kyc-2") == 1


# -- drop and retention -------------------------------------------------------------------------------

def test_drop_deletes_the_bytes_and_the_entry_and_the_item_stays_done(settings: Settings) -> None:
    conn = connector(settings, HOLD_AADHAAR)
    conn.sync_documents({})
    (entry,) = conn.state.list_held()
    drop(conn.state, conn.audit, entry)
    assert conn.state.list_held() == [] and held_files(settings) == []
    conn.state.clear_cursor("fake", "a")
    summary = conn.sync_documents({})
    assert summary.totals["held"] == 0 and conn.opened["kyc-2"] == 1 and "kyc-2" not in outbox_metadata(settings)
    assert [a["decision"] for a in audit_lines(settings) if a["source_id"] == "kyc-2"] == ["held", "held_dropped"]


def test_retention_deletes_held_bytes_after_the_period_and_marks_the_entry_expired(settings: Settings) -> None:
    conn = connector(settings, HOLD_AADHAAR)
    conn.sync_documents({})
    (entry,) = conn.state.list_held()
    now = time.time()
    period = settings.held_retention_days * DAY
    assert expire_held(conn.state, older_than=now - period, now=now) == 0  # within the period
    assert Path(entry.bytes_path).exists()
    # The same entry, held a period and an hour ago.
    entry.held_at = now - period - 3600
    conn.state.update_held(entry)
    assert expire_held(conn.state, older_than=now - period, now=now) == 1
    (expired,) = conn.state.list_held()
    assert expired.state == EXPIRED and expired.expired_at == now and not Path(entry.bytes_path).exists()
    outcome = release(conn, expired)
    assert outcome.result == REFUSED and "retention" in outcome.detail
    assert purge_expired_held(conn.state, older_than=now - period) == 0  # expired just now: listed a while
    assert purge_expired_held(conn.state, older_than=now + period) == 1
    assert conn.state.list_held() == []


def test_the_daily_cleanup_task_applies_held_retention_days(tmp_path: Path, redis_url: str) -> None:
    import scheduler

    settings = make_settings(tmp_path, redis_url, result_backend=redis_url, held_retention_days=2.0)
    conn = connector(settings, HOLD_AADHAAR)
    conn.sync_documents({})
    (entry,) = conn.state.list_held()
    entry.held_at = time.time() - 3 * DAY
    conn.state.update_held(entry)
    scheduler.service.reset(settings)
    try:
        removed = scheduler.cleanup()
    finally:
        scheduler.service.reset(Settings.from_env())
    assert removed["held_expired"] == 1 and not Path(entry.bytes_path).exists()
    assert [e.state for e in conn.state.list_held()] == [EXPIRED]


def test_held_retention_days_is_read_from_the_environment() -> None:
    assert Settings.from_env({}).held_retention_days == 30
    assert Settings.from_env({"HELD_RETENTION_DAYS": "7"}).held_retention_days == 7
    with pytest.raises(ConfigError, match="HELD_RETENTION_DAYS must be more than 0"):
        Settings.from_env({"HELD_RETENTION_DAYS": "0"})


# -- a crash between keeping the bytes and recording the entry ----------------------------------------

def crash_while_holding(redis_url: str, root: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "tests.held_crash_child", redis_url, str(root), PERSONAL],
                            capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == -9, result.stdout + result.stderr


def test_a_crash_after_keeping_the_bytes_leaves_a_file_the_next_run_takes_over(tmp_path: Path, redis_url: str):
    crash_while_holding(redis_url, tmp_path)
    settings = make_settings(tmp_path, redis_url, lock_ttl=2.0)
    state = StateStore.from_url(redis_url)
    (kept,) = held_files(settings)
    assert state.list_held() == [] and state.get_item("fake", "a", "form-1") is None
    assert state.get_cursor("fake", "a") is None  # the item is not done: the next run meets it again
    time.sleep(2.5)  # the killed run's lease lapses
    conn = connector(settings, HOLD_AADHAAR, [FakeFile("form-1", b"scanned form", text=PERSONAL)])
    assert conn.sync_documents({}).totals["held"] == 1
    (entry,) = conn.state.list_held()
    assert held_files(settings) == [kept] and Path(entry.bytes_path) == kept  # the same file, no orphan


def test_a_crash_after_keeping_the_bytes_of_an_item_gone_since_is_cleaned_up(tmp_path: Path, redis_url: str):
    crash_while_holding(redis_url, tmp_path)
    settings = make_settings(tmp_path, redis_url)
    state = StateStore.from_url(redis_url)
    (orphan,) = held_files(settings)
    now = time.time()
    assert purge_orphaned_held_bytes(state, settings.held_dir, older_than=now - DAY) == 0  # a day's grace
    os.utime(orphan, (now - 2 * DAY, now - 2 * DAY))
    assert purge_orphaned_held_bytes(state, settings.held_dir, older_than=now - DAY) == 1
    assert held_files(settings) == []


def test_orphan_cleanup_keeps_the_bytes_of_held_entries(settings: Settings) -> None:
    conn = connector(settings, HOLD_AADHAAR)
    conn.sync_documents({})
    (entry,) = conn.state.list_held()
    assert purge_orphaned_held_bytes(conn.state, settings.held_dir, older_than=time.time() + DAY) == 0
    assert Path(entry.bytes_path).exists()


# -- rules and schema ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("rules", "message"), [
    ({"hold": [{"name": "x"}]}, "must name the kinds of personal data"),
    ({"hold": [{"name": "x", "sensitive": ["passport"]}]}, "unknown sensitive kinds passport"),
    ({"exclude": [{"name": "x", "sensitive": ["aadhaar"]}]}, "sensitive belongs to \\[\\[hold\\]\\] rules"),
])
def test_hold_rules_that_cannot_work_are_refused(rules, message):
    with pytest.raises(ConfigError, match=message):
        ContentRules.from_mapping(rules)


def test_the_shipped_content_rules_hold_nothing_and_their_commented_example_parses():
    import tomllib

    from base.enrichment.rules import DEFAULT_RULES_FILE

    assert ContentRules.load().hold == ()
    lines = Path(DEFAULT_RULES_FILE).read_text(encoding="utf-8").splitlines()
    start = lines.index("# [[hold]]")
    block = []
    for line in lines[start:]:
        if not line.startswith("# "):
            break
        block.append(line[2:])
    (rule,) = ContentRules.from_mapping(tomllib.loads("\n".join(block))).hold
    assert rule.sources == ("whatsapp",) and "aadhaar" in rule.sensitive


def test_version_2_state_is_migrated_to_3_keeping_its_records(state: StateStore) -> None:
    state.redis.set(state.keys.schema_version(), 2)
    state.redis.hset(state.keys.items("fake", "a"), "doc-1", json.dumps({"v": "1", "sha256": "ab", "hub_id": "h1"}))
    result = migrate(state)
    assert (result.before, result.after, result.migrated) == (2, SCHEMA_VERSION, True) and SCHEMA_VERSION == 3
    assert stored_version(state) == 3
    record = state.get_item("fake", "a", "doc-1")
    assert record is not None and (record.version, record.sha256, record.hub_id, record.held) == ("1", "ab", "h1", "")


# -- the CLI ------------------------------------------------------------------------------------------

@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str,
        capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., tuple[int, str]]]:
    """Runs the CLI against the fake sources, a hold rule for Aadhaar numbers and the outbox."""
    rules = tmp_path / "rules.toml"
    rules.write_text('[[hold]]\nname = "kyc-aadhaar"\nsensitive = ["aadhaar"]\n', encoding="utf-8")
    for name in list(os.environ):
        if name.startswith(("EMAIL_", "MAXIMO_", "SHAREPOINT_", "WHATSAPP_", "FAKE", "HUB_", "CONTENT_RULES",
                            "RETENTION_", "HELD_", "CELERY_", "REDBEAT_", "STATE_REDIS")):
            monkeypatch.delenv(name)
    env = {
        "KMRL_ENV_FILE": str(tmp_path / "no.env"), "REDIS_URL": redis_url, "STATE_REDIS_URL": redis_url,
        "HUB_OUTBOX_DIR": str(tmp_path / "outbox"), "SPOOL_DIR": str(tmp_path / "spool"),
        "DEADLETTER_DIR": str(tmp_path / "deadletter"), "HELD_DIR": str(tmp_path / "held"), "SPOOL_MIN_FREE_MB": "1",
        "LOG_FILE": str(tmp_path / "logs" / "service.log"), "AUDIT_LOG": str(tmp_path / "logs" / "audit.log"),
        "CONTENT_RULES_FILE": str(rules), "FAKE_FILES": "1", "FAKE_EXTRA": "kyc.pdf", "FAKE_EXTRA_TEXT": PERSONAL,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    def invoke(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        code = cli.main(list(argv), sources=registry.sources_with(*FAKE_SOURCES))
        return code, capsys.readouterr().out

    yield invoke


def test_held_list_release_and_drop_through_the_cli(run: Callable[..., tuple[int, str]], redis_url: str,
                                                    tmp_path: Path) -> None:
    code, output = run("-v", "sync", "fake")
    assert code == 0 and "new=1" in output and "held=1" in output
    state = StateStore.from_url(redis_url)
    (entry,) = state.list_held()
    code, output = run("held", "list")
    assert code == 0 and entry.id in output and "fake" in output and "kyc.pdf" in output
    assert "aadhaar 1, mobile 1" in output and "kyc-aadhaar" in output and "held" in output
    code, output = run("held", "list", "email")
    assert code == 0 and output.strip() == "No held documents."
    code, output = run("status")
    assert "held: 1" in output
    code, output = run("held", "release")
    assert code == 2 and "needs the ID" in output
    code, output = run("held", "release", entry.id)
    assert code == 0 and f"{entry.id} fake extra-kyc.pdf: released: delivered as Hub document" in output
    assert "extra-kyc.pdf" in outbox_metadata(make_settings(tmp_path, redis_url))
    code, output = run("held", "release", entry.id)  # a second release is refused
    assert code == 1 and f"No held document with id {entry.id}" in output
    code, output = run("held", "drop", entry.id)
    assert code == 1
    # Nothing in the service log (INFO, with -v) carries a value.
    assert_no_values((tmp_path / "logs" / "service.log").read_text(encoding="utf-8"))


def test_held_drop_through_the_cli_deletes_the_bytes_and_keeps_the_item_done(run, redis_url, tmp_path):
    run("sync", "fake")
    state = StateStore.from_url(redis_url)
    (entry,) = state.list_held()
    code, output = run("held", "drop", entry.id)
    assert code == 0 and f"{entry.id} fake extra-kyc.pdf: dropped" in output
    assert state.list_held() == [] and not Path(entry.bytes_path).exists()
    state.clear_cursor("fake", "a")
    code, output = run("sync", "fake")
    assert code == 0 and "held=0" in output and "new=0" in output
