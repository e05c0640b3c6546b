"""A gate in front of a simulator: requests pass up to an allowance, the rest wait where the test can see them.

Fault tests interrupt a worker at a point of its progress (the n-th upload, a 429 answered). A test
that only watches progress races the worker: on a fast machine the sync ends before the kill lands,
on a loaded one the fault comes late. ``Gate`` takes the race away: the requests it matches pass
while it is open, or until ``allow(n)``'s allowance is spent; later ones wait inside the server
until the test opens the gate again (they then reach the simulator) or drops them (they answer 503
and never reach it, as when the client died first). The test waits on what the gate saw
(``wait_for``), never on the clock.

``gated_hub()`` is the Hub simulator behind a gate on its upload endpoint.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sandbox.hub import HubSimulator, RunningHub
from sandbox.servers import ServerThread

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Environ = dict[str, Any]


class Gate:
    """WSGI middleware: requests for which ``match(environ)`` is true pass only while the gate allows
    (``match`` may be changed at any time; a request is judged as it arrives).

    Counts, for the test to wait on: ``arrived`` (matching requests that reached the gate), ``passed``
    (handed to ``app``), ``inside`` (in ``app`` now), ``waiting`` (the environs held now), ``dropped``.
    The gate starts open. Other requests are passed straight through, uncounted.
    """

    def __init__(self, app: WsgiApp, match: Callable[[Environ], bool]) -> None:
        self.app = app
        self.match = match
        self.arrived = 0
        self.passed = 0
        self.inside = 0
        self.dropped = 0
        self.waiting: list[Environ] = []
        self._limit: int | None = None  # ``passed`` may grow to this; None: open
        self._drops = 0  # generation: a request held before drop_held() answers 503
        self._on_status: tuple[set[int], Callable[[], object]] | None = None
        self._cond = threading.Condition()

    # ----- steering (from the test) --------------------------------------------------------------

    def allow(self, more: int | None) -> None:
        """From now on at most ``more`` matching requests pass (None: any number, held ones included)."""
        with self._cond:
            self._limit = None if more is None else self.passed + more
            self._cond.notify_all()

    def open(self) -> None:
        self.allow(None)

    def close(self) -> None:
        self.allow(0)

    def on_status(self, *statuses: int, call: Callable[[], object]) -> None:
        """``call()`` runs in the serving thread as an answer with one of ``statuses`` leaves ``app``, before
        the client has it (e.g. ``self.close``: what the client does next is held until the test has
        seen the consequences of that answer)."""
        with self._cond:
            self._on_status = (set(statuses), call)

    def drop_held(self) -> int:
        """Every request held now answers 503 without reaching ``app``; returns how many."""
        with self._cond:
            dropped = len(self.waiting)
            self._drops += 1
            self._cond.notify_all()
            return dropped

    def wait_for(self, condition: Callable[[Gate], bool], timeout: float) -> bool:
        """Waits until ``condition(self)`` holds (checked at every change of the gate) or ``timeout``
        seconds passed; returns whether it holds."""
        with self._cond:
            return self._cond.wait_for(lambda: condition(self), timeout)

    # ----- serving ---------------------------------------------------------------------------------

    def _may_pass(self) -> bool:
        return self._limit is None or self.passed < self._limit

    def __call__(self, environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not self.match(environ):
            return self.app(environ, start_response)
        with self._cond:
            self.arrived += 1
            generation = self._drops
            self.waiting.append(environ)
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._drops != generation or self._may_pass())
            del self.waiting[next(i for i, held in enumerate(self.waiting) if held is environ)]
            passing = self._drops == generation
            if passing:
                self.passed += 1
                self.inside += 1
            else:
                self.dropped += 1
            self._cond.notify_all()
        if not passing:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("Content-Length", "0")])
            return []

        def watch(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            hook = self._on_status
            if hook is not None and int(status.split(" ", 1)[0]) in hook[0]:
                hook[1]()
            return start_response(status, headers, *exc)

        try:
            # The answer is read whole here (simulator answers are small): the app's work is done when
            # ``inside`` drops, whatever the server does with a client that is gone.
            body = self.app(environ, watch)
            try:
                return [b"".join(body)]
            finally:
                close = getattr(body, "close", None)
                if callable(close):
                    close()
        finally:
            with self._cond:
                self.inside -= 1
                self._cond.notify_all()


def is_upload(environ: Environ) -> bool:
    """The Hub's upload endpoint: ``POST /api/v1/documents``."""
    return environ.get("REQUEST_METHOD") == "POST" and environ.get("PATH_INFO", "").rstrip("/") == "/api/v1/documents"


@contextmanager
def gated_hub(*, token: str, data_dir: str | Path) -> Iterator[tuple[RunningHub, Gate]]:
    """A Hub simulator serving on loopback (as ``sandbox.hub.running_hub``) behind an open ``Gate`` on uploads."""
    sim = HubSimulator(token=token, data_dir=data_dir)
    gate = Gate(sim.app, is_upload)
    try:
        with ServerThread(gate) as server:
            try:
                yield RunningHub(url=server.url, sim=sim, token=token, server=server), gate
            finally:
                gate.drop_held()  # no server thread left waiting at the gate
                gate.open()
    finally:
        sim.close()
