"""A Hub that refuses document after document with one answer stops the run as a configuration error,
over real sockets: an older Hub simulator that does not take the text part, the pipeline on real Redis."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from base.document import Document
from base.hub_client import HttpHub
from base.refusals import HubRefusesEveryDocument
from base.replay import replay
from base.runner import Runner
from config.settings import Settings
from sandbox.hub import RunningHub, running_hub
from tests.conftest import make_settings
from tests.helpers import FakeFile, ListConnector

TOKEN = "hub-token-for-refusal-tests"


class _TextRunner(Runner):
    """The pipeline, with each item's text standing for what extraction read from its content (the
    extraction step itself is off in these tests, which are about delivery)."""

    def _extract(self, document: Document, deadline: float | None) -> None:
        document.content_text = document.text
        document.extraction = {"method": "text-layer", "pages": 1, "chars": len(document.text), "truncated": False}


class TextConnector(ListConnector):
    """The fake source, whose documents come out of the pipeline with extracted text."""

    def runner(self) -> Runner:
        return _TextRunner(self, state=self.state, hub=self.hub, settings=self.settings, audit=self.audit)


def circulars(n: int) -> list[FakeFile]:
    return [FakeFile(f"circular-{i}", f"%PDF-1.7 circular {i}".encode(), text=f"Safety circular {i}: track access")
            for i in range(n)]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def old_hub(tmp_path: Path) -> Iterator[RunningHub]:
    """A Hub simulator that behaves like a Hub older than the text part: it refuses it with 400."""
    with running_hub(token=TOKEN, data_dir=tmp_path / "hub", text_part=False) as running:
        yield running


def connector(files: Mapping[str, list[FakeFile]], settings: Settings, hub: RunningHub, *,
              text_part: bool) -> TextConnector:
    return TextConnector(files, settings=settings, hub=HttpHub(hub.url, TOKEN, text_part=text_part))


def test_older_hub_stops_the_run_as_a_config_error_then_text_part_off_delivers_everything_once(
        tmp_path: Path, redis_url: str, old_hub: RunningHub) -> None:
    settings = make_settings(tmp_path, redis_url, extract_text=False, hub_refusals_to_stop=3)
    files = circulars(6)
    first = connector({"drive-1": files}, settings, old_hub, text_part=True)
    summary = first.sync_documents({})
    (scope,) = summary.scopes
    assert scope.state == "config_error"
    assert "the Hub refused 3 documents in a row with 400 'unknown multipart part: text'" in scope.error
    assert "HUB_TEXT_PART=0" in scope.error
    assert first.state.list_dead_letters("fake") == []
    assert scope.counts["dead_lettered"] == 0 and scope.counts["new"] == 0
    assert first.state.get_cursor("fake", "drive-1") is None
    assert first.acknowledged == []
    assert first.state.get_status("fake", "drive-1")["state"] == "config_error"
    # It stopped at the third refusal: the later documents were not even sent.
    assert old_hub.sim.uploads_per_key == {sha(f.content): 1 for f in files[:3]}
    assert not list(Path(settings.deadletter_dir).rglob("*.bin"))

    second = connector({"drive-1": files}, settings, old_hub, text_part=False)
    summary = second.sync_documents({})
    assert summary.state == "ok", summary.as_dict()
    assert summary.totals["new"] == 6 and summary.totals["dead_lettered"] == 0
    assert old_hub.sim.stored_per_key == {sha(f.content): 1 for f in files}
    assert len(old_hub.sim.documents) == 6
    assert old_hub.sim.uploads_per_key == {sha(f.content): 2 if i < 3 else 1 for i, f in enumerate(files)}
    assert second.state.get_cursor("fake", "drive-1") == 6
    assert second.acknowledged == [f.source_id for f in files]


def test_a_run_stopped_by_refusals_stops_again_without_dead_letters_until_fixed(
        tmp_path: Path, redis_url: str, old_hub: RunningHub) -> None:
    settings = make_settings(tmp_path, redis_url, extract_text=False, hub_refusals_to_stop=2)
    files = circulars(4)
    for _ in range(3):  # every tick of the schedule meets the same answer
        summary = connector({"drive-1": files}, settings, old_hub, text_part=True).sync_documents({})
        assert summary.state == "config_error" and "refused 2 documents in a row" in summary.scopes[0].error
    source = connector({"drive-1": files}, settings, old_hub, text_part=True)
    assert source.state.list_dead_letters("fake") == []
    assert old_hub.sim.uploads_per_key == {sha(f.content): 3 for f in files[:2]}
    assert old_hub.sim.documents == {}


def test_refusals_in_a_row_that_end_before_the_limit_are_dead_lettered_in_order(
        tmp_path: Path, redis_url: str, hub: Any) -> None:
    settings = make_settings(tmp_path, redis_url, extract_text=False, hub_refusals_to_stop=3)
    files = circulars(4)
    hub.sim.set_fault("error", status=422, count=2, endpoint="upload")  # one answer, twice
    source = TextConnector({"drive-1": files}, settings=settings, hub=HttpHub(hub.url, hub.token))
    summary = source.sync_documents({})
    assert summary.state == "ok", summary.as_dict()
    assert summary.totals["new"] == 2 and summary.totals["dead_lettered"] == 2
    entries = {entry.source_id: entry for entry in source.state.list_dead_letters("fake")}
    assert set(entries) == {"circular-0", "circular-1"}
    assert "422" in entries["circular-0"].reason
    assert Path(entries["circular-1"].bytes_path).read_bytes() == files[1].content
    assert source.acknowledged == [f.source_id for f in files]
    assert source.state.get_cursor("fake", "drive-1") == 4


def test_refusals_at_the_end_of_the_feed_are_dead_lettered_and_the_cursor_moves(
        tmp_path: Path, redis_url: str, old_hub: RunningHub) -> None:
    settings = make_settings(tmp_path, redis_url, extract_text=False, hub_refusals_to_stop=3)
    files = circulars(2)
    source = connector({"drive-1": files}, settings, old_hub, text_part=True)
    summary = source.sync_documents({})
    assert summary.state == "ok" and summary.totals["dead_lettered"] == 2
    assert source.state.get_cursor("fake", "drive-1") == 2


def test_different_refusals_do_not_add_up(tmp_path: Path, redis_url: str, hub: Any) -> None:
    settings = make_settings(tmp_path, redis_url, extract_text=False, hub_refusals_to_stop=2)
    files = circulars(3)
    for fake in files:  # each refusal names its document: three answers, not one
        hub.sim.set_fault("reject", match=sha(fake.content), status=422)
    source = TextConnector({"drive-1": files}, settings=settings, hub=HttpHub(hub.url, hub.token))
    summary = source.sync_documents({})
    assert summary.state == "ok" and summary.totals["dead_lettered"] == 3
    assert source.state.get_cursor("fake", "drive-1") == 3


def test_refusals_to_stop_zero_dead_letters_every_refusal_as_before(
        tmp_path: Path, redis_url: str, old_hub: RunningHub) -> None:
    settings = make_settings(tmp_path, redis_url, extract_text=False, hub_refusals_to_stop=0)
    files = circulars(5)
    source = connector({"drive-1": files}, settings, old_hub, text_part=True)
    summary = source.sync_documents({})
    assert summary.state == "ok" and summary.totals["dead_lettered"] == 5
    assert source.state.get_cursor("fake", "drive-1") == 5


def test_the_error_names_the_answer() -> None:
    error = HubRefusesEveryDocument(3, 400, "unknown multipart part: text")
    assert str(error).startswith("the Hub refused 3 documents in a row with 400 'unknown multipart part: text': "
                                 "set HUB_TEXT_PART=0 or upgrade the Hub")
    assert "\n" not in str(error)


def test_a_dead_lettered_document_keeps_its_text_and_replay_sends_it(
        tmp_path: Path, redis_url: str, hub: Any) -> None:
    settings = make_settings(tmp_path, redis_url, extract_text=False, hub_refusals_to_stop=3)
    files = circulars(2)
    hub.sim.set_fault("reject", match=sha(files[0].content), status=415)
    source = TextConnector({"drive-1": files}, settings=settings, hub=HttpHub(hub.url, hub.token))
    assert source.sync_documents({}).totals["dead_lettered"] == 1
    (entry,) = source.state.list_dead_letters("fake")
    assert Path(entry.text_path).read_text(encoding="utf-8") == files[0].text
    hub.sim.clear_faults()
    outcome = replay(source, entry)
    assert outcome.result == "replayed", outcome.detail
    stored = hub.sim.document_by_sha256(sha(files[0].content))
    assert stored is not None and stored.text() == files[0].text
    assert stored.metadata["extraction"]["method"] == "text-layer"
    assert not Path(entry.bytes_path).exists() and not Path(entry.text_path).exists()
