"""Group commit: concurrent requests of one worker share one Redis round trip.

A notification is answered 200 only once its messages are in the stream, so every request waits
for a Redis round trip, and under load that round trip is most of a request's cost. When several
request threads of a worker want to append at once, the first becomes the *leader*: it takes every
waiting request's messages and appends them in one call (the append script takes any number of
messages); the others wait for that call's outcome. When the leader is done and more requests
have queued meanwhile, it hands the lead to the oldest of them and returns, so no request serves
others for longer than one round trip. A request alone does its own append at once, with no thread
hand-off, so a sync worker pays nothing for this.

A request's answer is the outcome of the call that carried its messages: success, or
``AppendFailed`` caused by what that call raised (the webhook then answers 503 and Meta delivers
again; the wamid dedup makes that safe even after a call that failed half-way).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence

from connectors.whatsapp_inbox import InboundMedia

#: Most messages carried by one append call; a larger backlog goes in the next call.
MAX_BATCH = 500


class AppendFailed(Exception):
    """The call carrying this request's messages failed; ``__cause__`` is what it raised."""


class _Waiter:
    """One request's messages and the outcome of the call that carried them.

    ``lock`` is taken at creation and released once, by the thread that settles this waiter or hands
    it the lead: a plain lock is the cheapest way to park a thread until then (an ``Event`` costs a
    Condition, a second lock and their Python code on both sides, for every request).
    """

    __slots__ = ("error", "lock", "messages", "settled")

    def __init__(self, messages: Sequence[InboundMedia]) -> None:
        self.messages = messages
        self.lock = threading.Lock()
        self.lock.acquire()
        self.settled = False
        self.error: BaseException | None = None


class GroupCommit:
    """Appends messages through ``append`` (e.g. ``Inbox.append``), batching concurrent callers.

    append: called with a list of messages; raises on failure.
    max_batch: most messages per call (default ``MAX_BATCH``); one request's messages are never split.
    """

    def __init__(self, append: Callable[[list[InboundMedia]], object], *, max_batch: int = MAX_BATCH) -> None:
        self._append = append
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: deque[_Waiter] = deque()
        self._leading = False
        #: Append calls made and messages carried (for tests and the benchmark).
        self.calls = 0
        self.carried = 0

    def append(self, messages: Sequence[InboundMedia]) -> None:
        """Returns once ``messages`` are appended; raises ``AppendFailed`` when the carrying call failed."""
        me = _Waiter(messages)
        with self._lock:
            self._queue.append(me)
            lead = not self._leading
            self._leading = True
        if lead:
            self._lead_catching()
        else:
            # Bounded: the leader's call ends within the Redis client's timeouts and retries.
            me.lock.acquire()
            if not me.settled:  # woken to lead the next call
                self._lead_catching()
        if me.error is not None:
            # A fresh exception per request: the same instance raised in many threads would share
            # (and scramble) one traceback.
            raise AppendFailed(type(me.error).__name__) from me.error

    def _lead_catching(self) -> None:
        try:
            self._lead()
        except Exception:  # noqa: BLE001, S110 - recorded on each waiter, raised to each caller by append()
            pass

    def _lead(self) -> None:
        with self._lock:
            batch: list[_Waiter] = []
            carried = 0
            while self._queue and (not batch or carried + len(self._queue[0].messages) <= self._max_batch):
                waiter = self._queue.popleft()
                batch.append(waiter)
                carried += len(waiter.messages)
        error: BaseException | None = None
        try:
            self._append([m for waiter in batch for m in waiter.messages])
        except BaseException as exc:
            error = exc  # every request of the batch gets it; a worker's exit still propagates below
            raise
        finally:
            self.calls += 1
            self.carried += carried
            for waiter in batch:
                waiter.error = error
                waiter.settled = True
                # Held by every waiter here (the leader's own too: taken at creation, or again when
                # it was woken to lead), so this release is always valid; it wakes a parked request.
                waiter.lock.release()
            with self._lock:
                if self._queue:
                    self._queue[0].lock.release()  # not settled: it wakes up to lead the next call
                else:
                    self._leading = False
