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
    """An append that takes ``delay`` seconds, records each call, and can fail on demand."""

    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay
        self.calls: list[list[str]] = []
        self.fail_call: int | None = None
        self.lock = threading.Lock()

    def __call__(self, messages: list[InboundMedia]) -> None:
        with self.lock:
            self.calls.append([m.wamid for m in messages])
            number = len(self.calls)
        time.sleep(self.delay)
        if number == self.fail_call:
            raise redis.ConnectionError("Redis went away")


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
    first = threading.Thread(target=commit.append, args=([media(1)],))
    first.start()
    time.sleep(0.05)
    started = time.monotonic()
    commit.append([media(2)])  # queued behind the first call, then carried by the next
    assert time.monotonic() - started >= 0.3
    first.join()
    assert append.calls == [["wamid.1"], ["wamid.2"]]


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
    time.sleep(0.03)
    followers = [threading.Thread(target=request, args=(n,)) for n in range(1, 6)]
    for thread in followers:
        thread.start()
    for thread in [leader, *followers]:
        thread.join(5)
    assert outcomes[0] == "ok"
    failed = {int(w.split(".")[1]) for w in append.calls[1]}
    assert {n for n, outcome in outcomes.items() if outcome == "failed"} == failed
    assert len(outcomes) == 6


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
