"""Every run ends on time, in bounded disk, and with a status, whatever the source does.

- the deadline is checked after every change, Checkpoints included (a feed of empty pages);
- the deadline and the spool's free space are checked while a download streams;
- a default size cap large enough for real documents;
- an exception nobody classified ends the run as ``error`` with its (masked) message, status written
  and lease released.

Real Redis, a real spool folder on the real disk; the connector is the in-memory ListConnector.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from base.contract import Checkpoint, Item, ItemFailure
from base.state import StateStore
from config.settings import Settings
from tests.helpers import FakeFile, ListConnector
from utils.logging import MASK, register_secret

MIB = 1024 * 1024


def open_spool_files(spool_dir: str) -> list[str]:
    """Files under ``spool_dir`` that this process still holds open (deleted ones included)."""
    root = os.path.realpath(spool_dir)
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(root + os.sep):
            held.append(target)
    return held


def spool_files(spool_dir: str) -> list[str]:
    return os.listdir(spool_dir) if os.path.isdir(spool_dir) else []


class EmptyPages(ListConnector):
    """A feed that is nothing but Checkpoints: empty pages, or a page link that loops."""

    def __init__(self, pages: int, **kwargs: Any) -> None:
        super().__init__({"a": []}, **kwargs)
        self.pages = pages
        self.yielded = 0

    def list_changes(self, scope: str, cursor: Any) -> Iterator[Item | ItemFailure | Checkpoint]:
        for page in range(self.pages):
            self.yielded += 1
            yield Checkpoint(page + 1)


class EndlessDownload(ListConnector):
    """One item whose bytes keep coming, 1 MiB at a time, up to ``limit`` chunks."""

    def __init__(self, *, limit: int, wait_until: float | None = None, **kwargs: Any) -> None:
        super().__init__({"a": [FakeFile("endless", b"", filename="endless.pdf")]}, **kwargs)
        self.limit = limit
        self.wait_until = wait_until
        self.chunks = 0
        self.closed = False

    def _opener(self, fake: FakeFile) -> Any:
        def open_() -> Iterator[bytes]:
            chunk = b"\x00" * MIB
            try:
                while self.chunks < self.limit:
                    self.chunks += 1
                    yield chunk
                    if self.wait_until is not None:
                        # The deadline passes while the download is under way.
                        while time.monotonic() < self.wait_until:
                            time.sleep(0.01)
            finally:
                self.closed = True
        return open_

    def list_changes(self, scope: str, cursor: Any) -> Iterator[Item | ItemFailure | Checkpoint]:
        for change in super().list_changes(scope, cursor):
            if isinstance(change, Item):
                change.size = None  # a source that does not say how large the file is
            yield change


def assert_stopped_cleanly(connector: ListConnector, state: StateStore, settings: Settings, expected: str) -> None:
    """The run ended as ``expected``, recorded and dead-lettered nothing, left the cursor where it
    was, freed the spool file and the lease, and wrote its status."""
    assert state.get_item("fake", "a", "endless") is None
    assert state.get_cursor("fake", "a") is None
    assert state.list_dead_letters("fake") == []
    assert state.item_failures("fake", "a") == {}
    assert spool_files(settings.spool_dir) == [] and open_spool_files(settings.spool_dir) == []
    assert state.lock_holder("fake", "a") is None
    assert state.get_status("fake", "a")["state"] == expected


def test_a_feed_of_checkpoints_stops_at_the_deadline(settings: Settings, state: StateStore) -> None:
    connector = EmptyPages(1000, settings=settings, state=state)
    summary = connector.sync_documents({}, deadline=time.monotonic())
    assert summary.scopes[0].state == "partial"
    assert connector.yielded == 1  # looked at the deadline right after the first Checkpoint
    assert state.get_cursor("fake", "a") == 1  # and kept what that page was worth


def test_deadline_passing_mid_download_stops_the_run_as_partial(settings: Settings, state: StateStore) -> None:
    deadline = time.monotonic() + 0.3
    connector = EndlessDownload(limit=64, wait_until=deadline, settings=settings, state=state)
    summary = connector.sync_documents({}, deadline=deadline)
    assert summary.scopes[0].state == "partial", summary.as_dict()
    assert connector.chunks <= 2 and connector.closed  # stopped at the first look after the deadline
    assert summary.totals["new"] == 0 and connector.acknowledged == []
    assert_stopped_cleanly(connector, state, settings, "partial")


def test_spool_free_space_is_checked_again_while_a_download_streams(settings: Settings, state: StateStore) -> None:
    os.makedirs(settings.spool_dir, exist_ok=True)
    free_mib = shutil.disk_usage(settings.spool_dir).free // MIB
    # Enough room to start; the guard is crossed once about 200 MiB have streamed in.
    guarded = Settings(**{**settings.__dict__, "spool_min_free_mb": free_mib - 200, "max_document_mb": 0})
    connector = EndlessDownload(limit=512, settings=guarded, state=state)
    summary = connector.sync_documents({})
    assert summary.scopes[0].state == "paused", summary.as_dict()
    assert "below the guard" in summary.scopes[0].error
    assert 0 < connector.chunks < connector.limit and connector.closed
    assert_stopped_cleanly(connector, state, guarded, "paused")


def test_default_size_cap_holds_real_documents_and_stops_endless_ones() -> None:
    assert Settings().max_document_bytes == 4096 * MIB
    assert Settings.from_env({}).max_document_bytes == 4096 * MIB
    assert Settings.from_env({"MAX_DOCUMENT_MB": "0"}).max_document_bytes is None


def test_endless_download_past_the_cap_is_skipped_not_spooled_whole(settings: Settings, state: StateStore) -> None:
    capped = Settings(**{**settings.__dict__, "max_document_mb": 3})
    connector = EndlessDownload(limit=64, settings=capped, state=state)
    summary = connector.sync_documents({})
    assert summary.scopes[0].state == "ok" and summary.totals["skipped"] == 1
    assert connector.chunks == 4 and connector.closed
    assert open_spool_files(settings.spool_dir) == []


class Exploding(ListConnector):
    """A source whose listing raises what nobody classified."""

    def __init__(self, error: BaseException, **kwargs: Any) -> None:
        super().__init__({"a": []}, **kwargs)
        self.error = error

    def list_changes(self, scope: str, cursor: Any) -> Iterator[Item | ItemFailure | Checkpoint]:
        raise self.error
        yield  # pragma: no cover - makes this a generator, as connectors are


def deeply_nested_json_error() -> RecursionError:
    try:
        json.loads("[" * 200_000 + "]" * 200_000)
    except RecursionError as exc:
        return exc
    pytest.fail("json.loads did not raise RecursionError on 200,000 nested arrays")


@pytest.mark.parametrize("make_error", [deeply_nested_json_error, lambda: RuntimeError("parser broke")],
                         ids=["RecursionError", "RuntimeError"])
def test_unexpected_exception_ends_the_run_as_error_with_status_and_lease_released(
        settings: Settings, state: StateStore, make_error: Any) -> None:
    error = make_error()
    connector = Exploding(error, settings=settings, state=state)
    summary = connector.sync_documents({})
    (scope,) = summary.scopes
    assert scope.state == "error" and scope.error.startswith(type(error).__name__ + ":")
    status = state.get_status("fake", "a")
    assert status["state"] == "error" and status["last_error"] == scope.error
    assert state.lock_holder("fake", "a") is None
    history = state.redis.lrange(state.key("history", "fake", "a"), 0, -1)
    assert json.loads(history[0])["state"] == "error"


def test_secret_in_an_unexpected_error_is_masked(settings: Settings, state: StateStore) -> None:
    register_secret("hunter2-secret")
    connector = Exploding(RuntimeError("parser broke on token=hunter2-secret"), settings=settings, state=state)
    (scope,) = connector.sync_documents({}).scopes
    assert "hunter2-secret" not in scope.error and MASK in scope.error


def test_unexpected_exception_while_connecting_is_a_scope_less_error(settings: Settings, state: StateStore) -> None:
    class BrokenScopes(ListConnector):
        def scopes(self) -> list[str]:
            raise RuntimeError("drive list could not be parsed")

    summary = BrokenScopes({"a": []}, settings=settings, state=state).sync_documents({})
    (scope,) = summary.scopes
    assert scope.scope == "*" and scope.state == "error" and "RuntimeError" in scope.error
    assert state.get_status("fake", "*")["state"] == "error"
