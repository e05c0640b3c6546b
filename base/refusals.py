"""Refusals in a row: when the Hub refuses document after document with the same answer, the fault
is the service's (a setting, or a Hub older than the contract we speak), not the documents'.

A refused document is normally dead-lettered at once. With ``HUB_REFUSALS_TO_STOP`` = N (default 3),
the runner keeps each refusal *waiting* instead, with its document and every cursor move after it:

- the next Hub answer is an acknowledgement, or a refusal with another status or reason: the waiting
  ones were refused for themselves, and are dead-lettered as before (in order), then the cursor moves;
- N documents in a row got the same 4xx status and reason: the run stops with
  ``HubRefusesEveryDocument``, a ``ConfigError`` naming the answer (scope state ``config_error``).
  None of them is dead-lettered and the cursor stays before the first of them, so the run after the
  fix (``HUB_TEXT_PART=0``, a Hub upgrade) sends them all again, and nothing is lost;
- the feed ends first: the waiting ones are dead-lettered (too few to tell them from refusals of their
  own; ``kmrl-connectors deadletter replay`` sends them once the Hub takes them);
- the run ends otherwise (time budget, an error): they stay undecided and the cursor before them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from base.contract import Item
from base.document import Document
from base.hub_client import HubRefused
from utils.errors import ConfigError


class HubRefusesEveryDocument(ConfigError):
    """The Hub refused ``count`` documents in a row with one answer (``status``, ``reason``)."""

    def __init__(self, count: int, status: int, reason: str) -> None:
        self.count = count
        self.status = status
        self.reason = reason
        super().__init__(
            f"the Hub refused {count} documents in a row with {status} {reason!r}: set HUB_TEXT_PART=0 or upgrade "
            "the Hub (or fix what the answer names); none of them was dead-lettered, the next run sends them again")


@dataclass
class Waiting:
    """A refused document whose fate waits on the next Hub answer."""

    item: Item
    document: Document
    error: HubRefused


@dataclass
class RefusalStreak:
    """The refusals of one run that came in a row with one answer.

    limit: documents refused in a row that stop the run (``HUB_REFUSALS_TO_STOP``); 0: never wait.
    waiting: the refused documents, oldest first (each keeps its spool file open until decided).
    cursors: the cursor moves (cursor, checkpoint) that came after the first of them, in order.
    """

    limit: int = 0
    waiting: list[Waiting] = field(default_factory=list)
    cursors: list[tuple[Any, bool]] = field(default_factory=list)

    def continues(self, error: HubRefused) -> bool:
        """True when ``error`` is the same answer as the waiting refusals'."""
        if not self.waiting:
            return True
        first = self.waiting[0].error
        return (first.status, first.reason) == (error.status, error.reason)

    def hold(self, item: Item, document: Document, error: HubRefused) -> bool:
        """Keeps the refusal waiting; True when the streak now reaches ``limit``."""
        self.waiting.append(Waiting(item, document, error))
        return len(self.waiting) >= self.limit

    def stop(self) -> HubRefusesEveryDocument:
        """The error that ends the run; closes every waiting document and forgets the cursor moves."""
        first = self.waiting[0].error
        error = HubRefusesEveryDocument(len(self.waiting), first.status, first.reason)
        self.abandon()
        return error

    def release(self) -> tuple[list[Waiting], list[tuple[Any, bool]]]:
        """Ends the streak: the waiting refusals (the caller dead-letters and closes them) and the
        cursor moves that waited behind them."""
        waiting, cursors = self.waiting, self.cursors
        self.waiting, self.cursors = [], []
        return waiting, cursors

    def abandon(self) -> None:
        """Ends the streak undecided: closes the documents, keeps no cursor move (the cursor stays
        before the first of them)."""
        waiting, _ = self.release()
        for entry in waiting:
            entry.document.close()
