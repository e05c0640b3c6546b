"""Group commit (web/group_commit.py): concurrent appends share a call; each learns its call's outcome."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from connectors.whatsapp_inbox import InboundMedia, Inbox
from web.group_commit import AppendFailed, GroupCommit


def media(n: int) -> InboundMedia:
    return InboundMedia(wamid=f"wamid.{n}", type="document", media_id=str(n))


class SlowAppend:
    """An append that takes ``delay`` seconds, records each call, and can fail on demand.

    ``log`` holds ("start", n) and ("end", n) for call n (from 1) in the order they happened;
    ``started`` is set once the first call has begun, so a test can wait for it instead of guessing.
    """

    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay
        self.calls: list[list[str]] = []
        self.log: list[tuple[str, int | str]] = []
        self.fail_call: int | None = None
        self.lock = threading.Lock()
        self.started = threading.Event()

    def __call__(self, messages: list[InboundMedia]) -> None:
        with self.lock:
            self.calls.append([m.wamid for m in messages])
            number = len(self.calls)
            self.log.append(("start", number))
        self.started.set()
        try:
            time.sleep(self.delay)
            if number == self.fail_call:
                raise redis.ConnectionError("Redis went away")
        finally:
            with self.lock:
                self.log.append(("end", number))

    def note(self, event: str, wamid: str) -> None:
        """Records that the request carrying ``wamid`` did ``event`` (e.g. returned)."""
        with self.lock:
            self.log.append((event, wamid))

    def call_carrying(self, wamid: str) -> int:
        return next(n for n, call in enumerate(self.calls, start=1) if wamid in call)


def test_a_lone_request_appends_at_once_in_its_own_thread():
    seen: list[str] = []
    commit = GroupCommit(lambda messages: seen.append(threading.current_thread().name))
    commit.append([media(1)])
    assert seen == [threading.current_thread().name] and commit.calls == 1


def test_concurrent_requests_share_calls_and_every_message_is_appended_once():
    append = SlowAppend()
    commit = GroupCommit(append)
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda n: commit.append([media(n)]), range(64)))
    carried = [w for call in append.calls for w in call]
    assert sorted(carried) == sorted(f"wamid.{n}" for n in range(64))
    assert len(append.calls) < 64 / 2  # requests waiting on a call went together in the next one
    assert commit.carried == 64


def test_a_request_returns_only_after_the_call_carrying_it():
    append = SlowAppend(delay=0.2)
    commit = GroupCommit(append)

    def request(n: int) -> None:
        commit.append([media(n)])
        append.note("returned", f"wamid.{n}")

    first = threading.Thread(target=request, args=(1,))
    first.start()
    assert append.started.wait(10), "the first request never began its call"
    request(2)  # queued behind the first call, then carried by the next
    first.join(10)
    assert append.calls == [["wamid.1"], ["wamid.2"]]
    for n in (1, 2):
        carried_by = append.call_carrying(f"wamid.{n}")
        assert append.log.index(("end", carried_by)) < append.log.index(("returned", f"wamid.{n}")), append.log
    # The second request was not carried by the call already under way when it arrived.
    assert append.log.index(("start", 2)) > append.log.index(("end", 1)), append.log


def test_a_failed_call_fails_every_request_it_carried_and_only_those():
    append = SlowAppend(delay=0.1)
    append.fail_call = 2
    commit = GroupCommit(append)
    outcomes: dict[int, str] = {}

    def request(n: int) -> None:
        try:
            commit.append([media(n)])
            outcomes[n] = "ok"
        except AppendFailed as exc:
            assert isinstance(exc.__cause__, redis.ConnectionError)
            outcomes[n] = "failed"

    leader = threading.Thread(target=request, args=(0,))
    leader.start()
    assert append.started.wait(10), "the leader never began its call"  # the followers queue behind it
    followers = [threading.Thread(target=request, args=(n,)) for n in range(1, 6)]
    for thread in followers:
        thread.start()
    for thread in [leader, *followers]:
        thread.join(30)
    assert len(outcomes) == 6
    assert append.calls[0] == ["wamid.0"] and outcomes[0] == "ok"
    failed = {int(w.split(".")[1]) for w in append.calls[1]}
    assert {n for n, outcome in outcomes.items() if outcome == "failed"} == failed


def test_after_a_failure_the_next_requests_are_served():
    append = SlowAppend(delay=0)
    append.fail_call = 1
    commit = GroupCommit(append)
    with pytest.raises(AppendFailed):
        commit.append([media(1)])
    commit.append([media(2)])
    assert append.calls == [["wamid.1"], ["wamid.2"]]


def test_calls_carry_at_most_max_batch_messages_but_never_split_a_request():
    append = SlowAppend(delay=0.05)
    commit = GroupCommit(append, max_batch=5)
    with ThreadPoolExecutor(max_workers=12) as pool:
        list(pool.map(lambda n: commit.append([media(n), media(100 + n)]), range(12)))
        commit.append([media(n) for n in range(200, 208)])  # alone larger than the batch: one call
    assert all(len(call) <= 5 for call in append.calls[:-1])
    assert len(append.calls[-1]) == 8
    for call in append.calls:
        for wamid in call:
            n = int(wamid.split(".")[1])
            if n < 100:
                assert f"wamid.{100 + n}" in call


def test_with_the_real_inbox_concurrent_duplicates_are_stored_once(redis_client):
    inbox = Inbox(redis_client)
    commit = GroupCommit(inbox.append)
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda n: commit.append([media(n % 10)]), range(100)))
    assert redis_client.xlen("kmrl:whatsapp:inbox") == 10
