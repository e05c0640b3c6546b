"""Dovecot going away in the middle of fetching a batch of messages: crashed (SIGKILL) right after a
``UID FETCH ... BODY.PEEK[]`` was sent, or stopped cleanly while one is answered, then started again a
second later. A crash ends the run as a transient error (never a config error, never a dead-lettered
message) and the next ticks resume from the saved UID cursor once the server is back; a session that
outlives a clean stop just goes on. Every attachment is stored once; no message is marked ``\\Seen``.
"""

from __future__ import annotations

import imaplib
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.dovecot import DovecotServer, message_flags, require_dovecot
from sandbox.hub import RunningHub
from tests.reliability.beds import email_bed, service_env
from tests.reliability.checks import assert_delivered_once, assert_settled
from tests.reliability.conftest import FAULT_DOCUMENTS, FULL
from tests.reliability.inprocess import connector_for, tick_until_delivered

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900 if FULL else 300)]

#: Messages per body fetch, and the attachment size: a batch answer of about 640 KB takes a while.
BATCH = 10
ATTACHMENT_BYTES = 64 * 1024
#: The body fetch at which the server goes away (the first ones went through).
FAULT_AT_FETCH = 3
#: How long the server stays down, seconds.
DOWN_FOR = 1.0


@pytest.fixture
def own_dovecot() -> Iterator[DovecotServer]:
    """A Dovecot of this test alone (the suite's shared one must not be restarted under others), in
    a folder we own, so that a plain stop() keeps the mail (a server removes only a folder it made)."""
    require_dovecot()
    folder = tempfile.mkdtemp(prefix="kmrl-rel-dovecot-")  # under /tmp: traversable by Dovecot's mail user
    try:
        with DovecotServer(folder) as server:
            yield server
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class FetchTrap:
    """Calls ``fault`` right after the ``at``-th ``UID FETCH ... BODY.PEEK[]`` was sent, before its
    answer is read (imapclient sends through imaplib's ``_command``, then reads the answer)."""

    def __init__(self, at: int, fault: Any) -> None:
        self.at, self.fault = at, fault
        self.fetches = 0
        self.fired = threading.Event()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = imaplib.IMAP4._command  # type: ignore[attr-defined]  # private, but the one send path

        def spy(imap: imaplib.IMAP4, name: str, *args: Any) -> Any:
            tag = original(imap, name, *args)
            if name == "UID" and args and args[0] == "FETCH" and "BODY.PEEK[]" in str(args[2:]):
                self.fetches += 1
                if self.fetches == self.at:
                    self.fault()
                    self.fired.set()
            return tag

        monkeypatch.setattr(imaplib.IMAP4, "_command", spy)


def _crash_then_start(server: DovecotServer) -> threading.Timer:
    server.kill()  # the FETCH went out; its answer never comes
    return _start_later(server)


def _restart_while_answering(server: DovecotServer) -> threading.Timer:
    server.stop()  # a clean stop while the FETCH is being answered
    return _start_later(server)


def _start_later(server: DovecotServer) -> threading.Timer:
    timer = threading.Timer(DOWN_FOR, server.start)
    timer.start()
    return timer


@pytest.mark.parametrize("how", ["crash", "clean-restart"])
def test_dovecot_gone_mid_fetch_resumes_from_the_cursor_and_loses_nothing(
        how: str, tmp_path: Path, state_url: str, rel_hub: RunningHub, own_dovecot: DovecotServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    with email_bed(own_dovecot, FAULT_DOCUMENTS, size=ATTACHMENT_BYTES) as bed:
        env = {**service_env(tmp_path, state_url, rel_hub), **bed.env, "EMAIL_BATCH_SIZE": str(BATCH),
               "EMAIL_TIMEOUT": "5"}
        connector = connector_for("email", env)
        fault = _crash_then_start if how == "crash" else _restart_while_answering
        restarts: list[threading.Timer] = []
        trap = FetchTrap(FAULT_AT_FETCH, lambda: restarts.append(fault(own_dovecot)))
        trap.install(monkeypatch)

        runs = tick_until_delivered(connector, bed.expected, rel_hub)

        assert trap.fired.is_set(), "the fault never fired"
        restarts[0].join(timeout=30)
        # A crash cuts the session: the run ends as a transient error. After a clean stop the session
        # may live on in its own imap process (Dovecot lets a busy one finish), and the run goes on.
        expected_states = ("error",) if how == "crash" else ("error", "ok")
        assert runs[0].state in expected_states, f"interrupted run: {runs[0].as_dict()}"
        assert own_dovecot.running, "Dovecot should be back"
        assert runs[0].totals["new"] >= (FAULT_AT_FETCH - 1) * BATCH - BATCH, runs[0].as_dict()
        # The next run resumes after the last saved UID; it does not start the mailbox again.
        resumed = sum(r.totals["new"] + r.totals["duplicate"] for r in runs[1:])
        assert resumed <= FAULT_DOCUMENTS - runs[0].totals["new"] + BATCH, [r.totals for r in runs]
    assert_delivered_once(rel_hub, bed.expected, max_repeats=0, context=f"Dovecot {how} mid-fetch")
    assert_settled(state_url, "email")
    flags = message_flags(own_dovecot, bed.sims["user"])
    assert not any(b"\\Seen" in f for f in flags.values()), "a message was marked read"
