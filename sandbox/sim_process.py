"""A simulator served from a process of its own, steered by calls from the process that started it.

A benchmark that serves a simulator from its own threads makes the simulator compete with the code it
measures for one interpreter lock: every request the connector sends is answered only when the
simulator's thread wins the lock back. ``SimulatorProcess`` builds the simulator in a child process
(multiprocessing, spawn: nothing of the parent's threads or sockets is inherited), serves it there,
and runs the parent's calls on it through a pipe:

    cert = CertAuthority(folder).issue("maximo")
    with SimulatorProcess(maximo_over_tls, cert, doclinks_inline=True) as maximo:
        maximo.call("populate", 2000, sites=["MUTTOM"])     # a method of the simulator, by name
        maximo.call("reset_counts")
        count = maximo.call(request_count)                   # request_count(sim) run in the child

``serve`` and every function passed to ``call`` must be importable module-level functions (spawn
pickles them by name); arguments and results must pickle. The child imports the parent's main module
again (as multiprocessing's spawn does), so a script run by path starts a SimulatorProcess only under
``if __name__ == "__main__":``. A call that raises in the child raises
``SimulatorError`` in the parent with the child's traceback. The child stops serving when ``stop()``
is called, when the parent's end of the pipe closes (the parent died), and, being a daemon process,
when the parent exits.
"""

from __future__ import annotations

import multiprocessing
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

from sandbox.tls import ServerCert

#: Seconds the child gets to build and start serving its simulator.
START_TIMEOUT = 60.0
#: Seconds a call may take in the child (populating thousands of work orders included).
CALL_TIMEOUT = 600.0
#: Seconds the child gets to stop serving before it is terminated.
STOP_TIMEOUT = 10.0


class SimulatorError(RuntimeError):
    """The simulator process could not start, or a call raised in it (the message has its traceback)."""


@dataclass
class Served:
    """What a ``serve`` function returns in the child: the simulator that calls act on, what the parent
    learns (``info``: URLs and the like, picklable), and how to stop serving."""

    sim: Any
    info: dict[str, Any]
    stop: Callable[[], None] = field(default=lambda: None)


def _child(conn: Connection, serve: Callable[..., Served], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    try:
        served = serve(*args, **kwargs)
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    try:
        conn.send(("ok", served.info))
        while True:
            try:
                message = conn.recv()
            except EOFError:  # the parent is gone
                break
            if message is None:
                break
            target, call_args, call_kwargs = message
            try:
                function = getattr(served.sim, target) if isinstance(target, str) else target
                result = function(*call_args, **call_kwargs) if isinstance(target, str) \
                    else function(served.sim, *call_args, **call_kwargs)
                conn.send(("ok", result))
            except Exception:
                conn.send(("error", traceback.format_exc()))
    finally:
        served.stop()
        conn.close()


class SimulatorProcess:
    """``serve(*args, **kwargs)`` run in a child process; see the module docstring.

    ``info``: what ``serve`` reported (e.g. ``info["url"]``); ``pid``: the child's process id.
    Use as a context manager, or call ``stop()`` (safe to call twice).
    """

    def __init__(self, serve: Callable[..., Served], *args: Any, **kwargs: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(target=_child, args=(child_conn, serve, args, kwargs), daemon=True,
                                        name=f"sim-{getattr(serve, '__name__', 'serve')}")
        self._process.start()
        child_conn.close()  # the child's end lives in the child only, so its exit shows here as EOF
        try:
            self.info: dict[str, Any] = self._answer(START_TIMEOUT, "start")
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return int(self._process.pid or 0)

    def alive(self) -> bool:
        return self._process.is_alive()

    def call(self, target: str | Callable[..., Any], *args: Any, timeout: float = CALL_TIMEOUT,
             **kwargs: Any) -> Any:
        """Runs ``sim.target(*args, **kwargs)`` (a method name) or ``target(sim, *args, **kwargs)`` (a
        module-level function) in the child and returns its result."""
        if not self._process.is_alive():
            raise SimulatorError(f"the simulator process has exited ({self._process.exitcode})")
        self._conn.send((target, args, kwargs))
        return self._answer(timeout, target if isinstance(target, str) else target.__name__)

    def _answer(self, timeout: float, what: str) -> Any:
        try:
            ready = self._conn.poll(timeout)
            if not ready:
                raise SimulatorError(f"the simulator process did not answer {what} within {timeout:.0f} s")
            status, value = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise SimulatorError(f"the simulator process ended during {what} "
                                 f"(exit {self._process.exitcode})") from exc
        if status != "ok":
            raise SimulatorError(f"{what} failed in the simulator process:\n{value}")
        return value

    def stop(self) -> None:
        if self._process.is_alive():
            try:
                self._conn.send(None)
            except OSError:
                pass
            self._process.join(STOP_TIMEOUT)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(STOP_TIMEOUT)
        self._conn.close()

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# -- serve functions for the simulators that benchmarks run this way ------------------------------------

def maximo_over_tls(cert: ServerCert, **options: Any) -> Served:
    """The Maximo simulator (``MaximoSimulator(**options)``) over HTTPS with keep-alive, as a real Maximo
    is served. info: ``url`` (append ``/maximo`` for MAXIMO_URL)."""
    from sandbox.keepalive_server import KeepAliveServer
    from sandbox.maximo import MaximoSimulator

    sim = MaximoSimulator(**options)
    server = KeepAliveServer(sim, cert).start()
    return Served(sim, {"url": server.url}, server.stop)


def graph_over_tls(cert: ServerCert, **options: Any) -> Served:
    """The Graph + Entra simulator (``GraphSimulator(**options)``) over HTTPS with keep-alive; ``cert``
    must name 127.0.0.1. info: ``url``, ``graph_url``, ``authority_host``, ``sharepoint_url``,
    ``tenant_id``, ``client_id``, ``client_secret``."""
    from sandbox.graph import GraphSimulator
    from sandbox.keepalive_server import KeepAliveServer

    sim = GraphSimulator(**options)
    sim.server = KeepAliveServer(sim, cert).start()
    info = {"url": sim.url, "graph_url": sim.graph_url, "authority_host": sim.authority_host,
            "sharepoint_url": sim.sharepoint_url, "tenant_id": sim.tenant_id, "client_id": sim.client_id,
            "client_secret": sim.client_secret}
    return Served(sim, info, sim.stop)


def request_count(sim: Any) -> int:
    """How many requests the Maximo simulator has logged since its last ``reset_counts``."""
    return len(sim.requests)
