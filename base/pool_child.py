"""One child of the process pool (base/pool.py): runs the tasks its parent sends, one at a time.

    python -m base.pool_child <request fd> <reply fd> <memory limit, bytes>

A request is ``pickle((function, data, seconds, memory_bytes))``; the reply is
``pickle(("ok", value))``, ``pickle(("memory", ""))`` or ``pickle(("raised", type name, message,
exception or None))``. The child exits when the request pipe closes (its parent closed the pool,
or died). It keeps no parent alive and outlives none by long:

- the address space is capped (RLIMIT_AS) at the pool's limit for the whole life of the child and
  at the task's limit while a task runs, so a task that allocates too much gets a MemoryError
  (replied, then the child exits: an interpreter that ran out of memory is not trusted again);
- each task runs under ``alarm(seconds + ALARM_GRACE)`` with SIGALRM left at its default action, so
  the kernel ends a task that overruns even when its parent is gone and cannot kill it (the parent
  kills it sooner, at ``seconds``).
"""

from __future__ import annotations

import math
import pickle
import resource
import signal
import sys
from multiprocessing.connection import Connection
from typing import Any

#: Seconds past a task's own time limit after which the kernel ends the child by itself.
ALARM_GRACE = 5


def _cap_memory(soft: int, hard: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _reply_to_exception(exc: BaseException) -> tuple[str, str, str, BaseException | None]:
    """What the parent needs to rebuild the failure: the exception itself when it pickles (the parent
    re-raises the service's own classified errors as they are), its type and message always."""
    try:
        pickle.dumps(exc)
        carried: BaseException | None = exc
    except Exception:  # noqa: BLE001 - an exception that does not pickle travels as type and message
        carried = None
    return ("raised", f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc)[:2000], carried)


def serve(requests: Connection, replies: Connection, hard_limit: int) -> None:
    """Answers requests until the request pipe closes."""
    while True:
        try:
            request = requests.recv_bytes()
        except (EOFError, OSError):
            return
        function, data, seconds, memory = pickle.loads(request)  # noqa: S301 - from our parent only
        del request
        out_of_memory = False
        reply: Any = None
        signal.alarm(max(1, math.ceil(seconds)) + ALARM_GRACE)
        try:
            _cap_memory(min(memory, hard_limit), hard_limit)
            try:
                reply = ("ok", function(data))
                del data
                payload = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
            except MemoryError:
                out_of_memory = True
                reply = data = None
                payload = b""
            except BaseException as exc:  # noqa: BLE001 - every failure of a task is replied, never fatal
                payload = pickle.dumps(_reply_to_exception(exc), protocol=pickle.HIGHEST_PROTOCOL)
            finally:
                _cap_memory(hard_limit, hard_limit)
        finally:
            signal.alarm(0)
        del reply
        if out_of_memory:
            replies.send_bytes(pickle.dumps(("memory", "")))
            return
        try:
            replies.send_bytes(payload)
        except (BrokenPipeError, OSError):
            return  # the parent is gone
        del payload


def main(argv: list[str]) -> int:
    request_fd, reply_fd, hard_limit = int(argv[0]), int(argv[1]), int(argv[2])
    # Ctrl-C reaches the whole process group; the parent decides when its children stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hard_limit > 0:
        _cap_memory(hard_limit, hard_limit)
    else:
        hard_limit = resource.RLIM_INFINITY
    serve(Connection(request_fd, writable=False), Connection(reply_fd, readable=False), hard_limit)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
