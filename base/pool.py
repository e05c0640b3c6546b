"""A bounded pool of long-lived child processes for CPU-heavy work on one item at a time.

``pool.run(function, data)`` runs ``function(data)`` in a child and returns its value, or raises a
``PoolError``, an ``ItemError``: the pipeline dead-letters that one item and the run goes on.
``function`` is a module-level function (or a ``functools.partial`` of one), ``data`` anything that
pickles: the bytes of an item, or the path of its spool file, which the child reads itself.
``pool.map(function, inputs)`` keeps every child busy and yields, in input order, each value or
the ``PoolError`` of that one input.

What a caller may rely on:

- at most ``size`` children (POOL_SIZE), started when first needed and kept for the next task;
- each task has a wall-time limit (POOL_TASK_SECONDS): past it the child is killed and replaced,
  and the task raises ``TaskTimedOut``; and a memory limit (POOL_TASK_MEMORY_MB, the child's address
  space, RLIMIT_AS): past it the task raises ``TaskOutOfMemory`` and the child is replaced;
- a child that dies (a segfault, the OOM killer) raises ``ChildCrashed`` for the task it was
  running, and only for that one; the next task gets a fresh child;
- an exception raised by ``function`` comes back as itself when it is one of the service's
  classified errors (``ConnectorError``: an ``ItemTooLarge`` stays an ``ItemTooLarge``), otherwise
  as ``TaskFailed`` naming its type and message;
- ``close()`` ends every child and waits for it; the process-wide pool (``shared_pool``) is closed
  at interpreter exit and, in a Celery worker, on ``worker_process_shutdown`` / ``worker_shutdown``
  (scheduler.py). Children never outlive their parent by long either: an idle child exits when its
  request pipe closes, a busy one at the latest ``ALARM_GRACE`` seconds after its time limit
  (base/pool_child.py).

Children are started with ``subprocess`` (fork + exec of a fresh interpreter), not
``multiprocessing``: a Celery prefork child is a daemonic process, and multiprocessing refuses to
start children from one; a fresh interpreter also inherits no locks, threads or sockets.
"""

from __future__ import annotations

import atexit
import collections
import fcntl
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from config.settings import Settings
from utils.errors import ConnectorError, ItemError
from utils.logging import get_logger

log = get_logger(__name__)

R = TypeVar("R")

#: Children in a pool when nothing says otherwise (POOL_SIZE): one per core of a two-core host.
DEFAULT_SIZE = Settings.pool_size
#: Wall-time limit of one task, seconds (POOL_TASK_SECONDS).
DEFAULT_TASK_SECONDS = Settings.pool_task_seconds
#: Address-space limit of a child while it runs one task, MiB (POOL_TASK_MEMORY_MB; virtual memory, not resident).
DEFAULT_TASK_MEMORY_MB = Settings.pool_task_memory_mb
#: Kernel buffer of each pipe to a child, bytes (Linux's default ceiling, /proc/sys/fs/pipe-max-size).
PIPE_BYTES = 1024 * 1024
#: Seconds an abandoned ``map`` waits for each of its running tasks before killing the child.
DRAIN_SECONDS = 1.0
#: Seconds ``close()`` waits for an idle child to exit by itself before killing it.
CLOSE_GRACE = 2.0


class PoolError(ItemError):
    """A task in the pool did not produce a value; the item it was for is dead-lettered."""


class TaskTimedOut(PoolError):
    """The task ran past its time limit; its child was killed and replaced."""


class TaskOutOfMemory(PoolError):
    """The task needed more memory than its limit; its child was replaced."""


class ChildCrashed(PoolError):
    """The child running the task died (a signal or an exit) before it replied."""


class TaskFailed(PoolError):
    """The task raised an exception that is not one of the service's classified errors.

    ``type_name`` is the exception's qualified type name; the message is "<type>: <message>"."""

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name = type_name
        super().__init__(f"{type_name.rpartition('.')[2]}: {message}" if message else type_name.rpartition(".")[2])


@dataclass(frozen=True)
class Limits:
    """The limits of one task: ``seconds`` of wall time and ``memory_mb`` MiB of address space."""

    seconds: float = DEFAULT_TASK_SECONDS
    memory_mb: int = DEFAULT_TASK_MEMORY_MB


def _describe(function: Callable[..., Any]) -> str:
    inner = getattr(function, "func", function)  # functools.partial
    return f"{getattr(inner, '__module__', '?')}.{getattr(inner, '__qualname__', repr(inner))}"


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "it stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the system may have run out of memory)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with status {code}"


class _Child:
    """One child process and the two pipes to it."""

    def __init__(self, hard_limit_bytes: int) -> None:
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        for fd in (request_write, reply_read):
            _widen_pipe(fd)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "base.pool_child", str(request_read), str(reply_write),
                 str(hard_limit_bytes)],
                pass_fds=(request_read, reply_write), stdin=subprocess.DEVNULL, env=_child_environ(),
                close_fds=True)
        finally:
            os.close(request_read)
            os.close(reply_write)
        self.requests = Connection(request_write, readable=False)
        self.replies = Connection(reply_read, writable=False)
        self.pid = self.process.pid

    def kill(self) -> None:
        """Kills the child at once and reaps it."""
        try:
            self.process.kill()
        except OSError:
            pass
        self._reap(timeout=10)

    def stop(self, grace: float) -> None:
        """Closes the request pipe (an idle child exits by itself), then kills it after ``grace``."""
        self.requests.close()
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()
        self.replies.close()

    def _reap(self, timeout: float) -> None:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("pool_child_unreaped", pid=self.pid)
        for conn in (self.requests, self.replies):
            if not conn.closed:
                conn.close()

    def forget(self) -> None:
        """After a fork: closes this process's copies of the pipes; the child belongs to the parent."""
        for conn in (self.requests, self.replies):
            try:
                conn.close()
            except OSError:
                pass


def _widen_pipe(fd: int) -> None:
    """Makes the pipe's kernel buffer PIPE_BYTES large where the system allows it. A message moves in
    one read instead of dozens of 64 KiB reads, each of which, in a thread, must win the GIL back from
    the pipeline's thread (up to ``sys.getswitchinterval()`` of waiting each time)."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (OSError, AttributeError):
        pass  # above /proc/sys/fs/pipe-max-size, or not Linux: the default buffer still works


def _child_environ() -> dict[str, str]:
    """The parent's environment, with its import path, so the child imports what the parent can."""
    environ = dict(os.environ)
    paths = [p or os.getcwd() for p in sys.path]
    environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return environ


class ProcessPool:
    """At most ``size`` children running one task each (see the module docstring).

    size: children at most (default 2). seconds: default wall-time limit of a task (default 120).
    memory_mb: default and highest memory limit of a task, MiB of address space (default 2048; 0 for
    none). A task may ask for a lower limit, or a longer time, in ``run`` / ``map``.
    Safe to use from several threads; a pool used after ``os.fork`` starts children of its own.
    """

    def __init__(self, *, size: int = DEFAULT_SIZE, seconds: float = DEFAULT_TASK_SECONDS,
                 memory_mb: int = DEFAULT_TASK_MEMORY_MB) -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least one child, not {size}")
        self.size = size
        self.limits = Limits(seconds, memory_mb)
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[_Child] = []
        self._all: set[_Child] = set()
        self._closed = False
        self._pid = os.getpid()
        _POOLS.add(self)

    # -- what callers use ------------------------------------------------------------------------

    def run(self, function: Callable[[Any], R], data: Any, *, seconds: float | None = None,
            memory_mb: int | None = None) -> R:
        """``function(data)`` in a child; its value, or a ``PoolError`` / the task's classified error."""
        self._slots.acquire()
        try:
            child, deadline, limits = self._send(function, data, seconds, memory_mb)
            return self._receive(child, deadline, limits, function)  # type: ignore[no-any-return]
        finally:
            self._slots.release()

    def map(self, function: Callable[[Any], R], inputs: Iterable[Any], *, seconds: float | None = None,
            memory_mb: int | None = None) -> Generator[R | ConnectorError, None, None]:
        """``function(x)`` for each input, up to ``size`` at once; yields in input order each value, or the
        error of that input (a ``PoolError`` or the task's classified error), never raising it. Inputs are
        read only as children free up, so a long iterable is not held in memory. Closing the generator
        early waits up to DRAIN_SECONDS for each task still running (its value is dropped), then kills
        the child of any that is not done."""
        pending: collections.deque[tuple[_Child, float, Limits]] = collections.deque()
        source = iter(inputs)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < self.size:
                    if not self._slots.acquire(blocking=not pending):
                        break  # other threads hold the rest of the children; go on with ours
                    try:
                        data = next(source)
                    except StopIteration:
                        self._slots.release()
                        exhausted = True
                        break
                    try:
                        pending.append(self._send(function, data, seconds, memory_mb))
                    except BaseException:
                        self._slots.release()
                        raise
                    del data
                if not pending:
                    return
                child, deadline, limits = pending.popleft()
                try:
                    outcome: R | ConnectorError = self._receive(child, deadline, limits, function)
                except ConnectorError as exc:
                    outcome = exc
                finally:
                    self._slots.release()
                yield outcome
        finally:
            while pending:
                child, deadline, _limits = pending.popleft()
                try:
                    self._drain(child, min(deadline, time.monotonic() + DRAIN_SECONDS))
                finally:
                    self._slots.release()

    def close(self, *, grace: float = CLOSE_GRACE) -> None:
        """Ends every child (idle ones exit by themselves within ``grace`` seconds, others are killed)
        and waits for each. Tasks still running raise ``ChildCrashed``. Idempotent."""
        with self._lock:
            self._closed = True
            children = list(self._all) if os.getpid() == self._pid else []
            self._all.clear()
            self._idle.clear()
        for child in children:  # no log line: this also runs at interpreter exit, after logging may be gone
            child.stop(grace)

    @property
    def pids(self) -> list[int]:
        """The process ids of the children alive now (for operators and tests)."""
        with self._lock:
            return sorted(c.pid for c in self._all)

    def __enter__(self) -> ProcessPool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- the round trip --------------------------------------------------------------------------

    def _limits(self, seconds: float | None, memory_mb: int | None) -> Limits:
        memory = self.limits.memory_mb if memory_mb is None else memory_mb
        if self.limits.memory_mb:
            memory = min(memory or self.limits.memory_mb, self.limits.memory_mb)
        return Limits(self.limits.seconds if seconds is None else seconds, memory)

    def _checkout(self) -> _Child:
        with self._lock:
            if self._closed:
                raise RuntimeError("the process pool is closed")
            if os.getpid() != self._pid:
                self._after_fork()
            if self._idle:
                return self._idle.pop()
        child = _Child(self.limits.memory_mb * 1024 * 1024)
        with self._lock:
            self._all.add(child)
        log.debug("pool_child_started", pid=child.pid)
        return child

    def _checkin(self, child: _Child) -> None:
        with self._lock:
            if child in self._all and not self._closed:
                self._idle.append(child)
                return
        child.stop(0)

    def _discard(self, child: _Child) -> None:
        with self._lock:
            self._all.discard(child)
        child.kill()

    def _send(self, function: Callable[[Any], Any], data: Any, seconds: float | None,
              memory_mb: int | None) -> tuple[_Child, float, Limits]:
        limits = self._limits(seconds, memory_mb)
        memory = limits.memory_mb * 1024 * 1024 if limits.memory_mb else 2**63 - 1
        request = pickle.dumps((function, data, limits.seconds, memory), protocol=pickle.HIGHEST_PROTOCOL)
        for attempt in (1, 2):
            child = self._checkout()
            try:
                child.requests.send_bytes(request)
                return child, time.monotonic() + limits.seconds, limits
            except OSError:
                # The child died while idle (killed from outside): a fresh one takes the task.
                self._discard(child)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _receive(self, child: _Child, deadline: float, limits: Limits, function: Callable[..., Any]) -> Any:
        what = _describe(function)
        try:
            ready = child.replies.poll(max(0.0, deadline - time.monotonic()))
        except OSError:
            ready = True  # the pipe is broken: recv_bytes says how
        if not ready:
            self._discard(child)
            log.warning("pool_task_timed_out", task=what, seconds=limits.seconds, pid=child.pid)
            raise TaskTimedOut(f"{what} ran longer than its limit of {limits.seconds:g} s; "
                               "its worker process was stopped (POOL_TASK_SECONDS)")
        try:
            # Our own child, running our code: the pipe is private to the two processes. (A child
            # whose parser a hostile input could take over would need a plainer reply format.)
            reply = pickle.loads(child.replies.recv_bytes())  # noqa: S301
        except (EOFError, OSError):
            self._discard(child)
            reason = _exit_reason(child.process.returncode)
            log.warning("pool_child_crashed", task=what, pid=child.pid, reason=reason)
            raise ChildCrashed(f"the worker process running {what} died: {reason}") from None
        kind = reply[0]
        if kind == "memory":
            self._discard(child)
            log.warning("pool_task_out_of_memory", task=what, memory_mb=limits.memory_mb, pid=child.pid)
            raise TaskOutOfMemory(f"{what} needed more than its limit of {limits.memory_mb} MB of memory "
                                  "(POOL_TASK_MEMORY_MB)")
        self._checkin(child)
        if kind == "ok":
            return reply[1]
        _kind, type_name, message, exc = reply
        if isinstance(exc, ConnectorError):
            raise exc
        raise TaskFailed(type_name, message)

    def _drain(self, child: _Child, deadline: float) -> None:
        """Waits for a reply nobody will read; keeps the child when it comes by ``deadline``."""
        try:
            if child.replies.poll(max(0.0, deadline - time.monotonic())):
                kind = pickle.loads(child.replies.recv_bytes())[0]  # noqa: S301 - our own child, as above
                if kind != "memory":
                    self._checkin(child)
                    return
        except (EOFError, OSError):
            pass
        self._discard(child)

    def _after_fork(self) -> None:
        """In a forked process: this process's copies of the parent's pipes are closed (the parent's
        children must see EOF when the parent closes them) and children of its own are started."""
        for child in self._all:
            child.forget()
        self._all.clear()
        self._idle.clear()
        self._slots = threading.BoundedSemaphore(self.size)
        self._pid = os.getpid()


#: Every pool of this process, so a fork can close the copies of their pipes at once.
_POOLS: weakref.WeakSet[ProcessPool] = weakref.WeakSet()


def _forget_pools_after_fork() -> None:
    for pool in list(_POOLS):
        pool._lock = threading.Lock()
        pool._after_fork()


os.register_at_fork(after_in_child=_forget_pools_after_fork)

_shared: ProcessPool | None = None
_shared_lock = threading.Lock()


def shared_pool(*, size: int = DEFAULT_SIZE, seconds: float = DEFAULT_TASK_SECONDS,
                memory_mb: int = DEFAULT_TASK_MEMORY_MB) -> ProcessPool:
    """The process-wide pool with these limits (built on first use, rebuilt when they change; the old
    one is closed). Closed at interpreter exit and by ``shutdown_shared_pool``."""
    global _shared
    with _shared_lock:
        current = _shared
        if current is not None and not current._closed and os.getpid() == current._pid and (
                current.size, current.limits) == (size, Limits(seconds, memory_mb)):
            return current
        _shared = ProcessPool(size=size, seconds=seconds, memory_mb=memory_mb)
    if current is not None:
        current.close()
    return _shared


def pool_for(settings: Settings) -> ProcessPool:
    """The process-wide pool sized and limited by ``settings`` (POOL_SIZE, POOL_TASK_SECONDS,
    POOL_TASK_MEMORY_MB)."""
    return shared_pool(size=settings.pool_size, seconds=settings.pool_task_seconds,
                       memory_mb=settings.pool_task_memory_mb)


def shutdown_shared_pool() -> None:
    """Closes the process-wide pool, if there is one (worker shutdown, interpreter exit)."""
    global _shared
    with _shared_lock:
        current, _shared = _shared, None
    if current is not None:
        current.close()


atexit.register(shutdown_shared_pool)
