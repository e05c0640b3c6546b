"""Module-level functions for tests/test_pool.py to run in pool children (a child imports them by name)."""

from __future__ import annotations

import os
import signal
import time

from utils.errors import ItemTooLarge


def child_pid(_data: object) -> int:
    return os.getpid()


def echo(data: object) -> object:
    return data


def length(data: bytes) -> int:
    return len(data)


def read_file_size(path: str) -> int:
    with open(path, "rb") as fh:
        return len(fh.read())


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def spin(_data: object) -> None:
    while True:  # pure Python, never releases the child: only a kill ends it
        pass


def allocate(megabytes: int) -> int:
    block = bytearray(megabytes * 1024 * 1024)
    return len(block)


def segfault(_data: object) -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def hard_exit(_data: object) -> None:
    os._exit(3)


def raise_value_error(data: object) -> None:
    raise ValueError(f"cannot read {data!r}")


def raise_too_large(data: object) -> None:
    raise ItemTooLarge(f"{data} is larger than allowed")


def unpicklable_result(_data: object) -> object:
    return lambda: None


def crash_on(data: bytes) -> bytes:
    """Kills its child on the input b"crash", echoes any other."""
    if data == b"crash":
        os.kill(os.getpid(), signal.SIGKILL)
    return data
