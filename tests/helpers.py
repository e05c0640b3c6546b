"""A small in-memory connector for pipeline tests, and helpers to build settings and hubs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from base.base_connector import BaseConnector
from base.contract import Checkpoint, HealthResult, Item, ItemFailure
from utils.errors import ItemError


@dataclass
class FakeFile:
    """One file of the fake source. ``fail`` makes ``open()`` raise ItemError."""

    source_id: str
    content: bytes
    version: str = "1"
    filename: str = ""
    mime_type: str = "application/pdf"
    text: str = ""
    deleted: bool = False
    fail: str = ""
    unreadable: str = ""  # reported by the connector as an ItemFailure
    hints: dict[str, str] = field(default_factory=dict)


class ListConnector(BaseConnector):
    """A source whose scopes are lists of FakeFiles; the cursor is the index of the next file.

    ``opened`` counts how many times each source_id's bytes were read.
    """

    name = "fake"

    def __init__(self, files: Mapping[str, list[FakeFile]], *, checkpoint_every: int = 0, chunk_size: int = 7,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.chunk_size = chunk_size  # tiny by default, so tests exercise streaming across many chunks
        self.files = files
        self.checkpoint_every = checkpoint_every
        self.opened: dict[str, int] = {}
        self.acknowledged: list[str] = []

    def scopes(self) -> list[str]:
        return list(self.files)

    def list_changes(self, scope: str, cursor: Any) -> Iterator[Item | ItemFailure | Checkpoint]:
        start = int(cursor or 0)
        for index, fake in enumerate(self.files[scope][start:], start=start):
            if fake.unreadable:
                yield ItemFailure(fake.source_id, fake.unreadable, version=fake.version, cursor_after=index + 1)
                continue
            yield Item(
                source_id=fake.source_id, version=fake.version, filename=fake.filename or f"{fake.source_id}.pdf",
                open=self._opener(fake), mime_type=fake.mime_type, size=len(fake.content), text=fake.text,
                deleted=fake.deleted, hints=fake.hints, cursor_after=None if self.checkpoint_every else index + 1,
            )
            if self.checkpoint_every and (index + 1) % self.checkpoint_every == 0:
                yield Checkpoint(index + 1)

    def _opener(self, fake: FakeFile) -> Any:
        def open_() -> Iterator[bytes]:
            self.opened[fake.source_id] = self.opened.get(fake.source_id, 0) + 1
            if fake.fail:
                raise ItemError(fake.fail)
            step = self.chunk_size
            for i in range(0, len(fake.content), step):
                yield fake.content[i:i + step]
        return open_

    def acknowledge(self, item: Item) -> None:
        self.acknowledged.append(item.source_id)

    def health_check(self, credentials: Mapping[str, Any] | None = None) -> HealthResult:
        return HealthResult(True, "healthy", f"{len(self.files)} scopes")

    def default_credentials(self) -> Mapping[str, Any]:
        return {}


def fake_files(n: int, prefix: str = "doc", size: int = 64) -> list[FakeFile]:
    """``n`` files with distinct contents."""
    return [FakeFile(f"{prefix}-{i}", (f"{prefix} {i} ".encode() * size)[:size] + str(i).encode())
            for i in range(n)]
