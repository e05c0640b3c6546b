"""External programs run for an extraction (pdftotext, pdftoppm, tesseract, ...), bounded by the job.

What a caller may rely on:

- ``stream(argv, job)`` yields the program's standard output in chunks as it comes, so a caller holds
  no more of it than it keeps; ``run(argv, job)`` returns it whole, up to ``max_bytes``;
- every program runs in a process group of its own, with the job's remaining wall time
  (``job.time_left()``): when that is spent the whole group is killed and ``ExtractionCut`` raised;
  when the caller stops reading early (closes the generator), the group is killed too;
- every program is started with ``PR_SET_PDEATHSIG = SIGKILL``: when our process dies (the pool kills
  a child past its time or memory limit, base/pool.py), the kernel kills the program as well, so no
  pdftotext or tesseract is left running for nobody;
- a program that is not installed raises ``CommandMissing`` naming the Debian packages that bring it;
  one that exits with a failure raises ``CommandFailed`` with the end of what it wrote to stderr.

Programs inherit the process's resource limits, so in a pool child they live under the task's
address-space limit (RLIMIT_AS) as well.
"""

from __future__ import annotations

import ctypes
import functools
import os
import selectors
import signal
import subprocess
from collections.abc import Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from base.extraction import Job

#: Debian packages that install each program (named in errors when one is missing).
PACKAGES: dict[str, str] = {
    "pdftotext": "poppler-utils",
    "pdftoppm": "poppler-utils",
    "pdfinfo": "poppler-utils",
    "pdffonts": "poppler-utils",
    "tesseract": "tesseract-ocr, tesseract-ocr-mal, tesseract-ocr-eng",
}
#: Bytes read from a program's output at a time.
CHUNK_BYTES = 64 * 1024
#: Bytes of a program's stderr kept for the error message (the rest is read and dropped).
STDERR_TAIL_BYTES = 2048
#: prctl(2) option: the signal this process gets when its parent dies.
PR_SET_PDEATHSIG = 1


class CommandMissing(Exception):
    """The program is not installed; the message names the Debian packages that install it."""


class CommandFailed(Exception):
    """The program exited with a failure; ``returncode`` and ``stderr`` (its tail, text) say how."""

    def __init__(self, program: str, returncode: int, stderr: str) -> None:
        self.program, self.returncode, self.stderr = program, returncode, stderr
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else "no message"
        super().__init__(f"{program} exited with status {returncode}: {detail}")


def missing_message(program: str) -> str:
    packages = PACKAGES.get(program)
    hint = f" (Debian packages: {packages})" if packages else ""
    return f"{program} is not installed or not on PATH{hint}"


_prctl: Any = None


def _die_with_parent(parent: int) -> None:
    """Runs in the forked child before exec: the kernel sends it SIGKILL when its parent dies. If the
    parent died before the request took effect (between fork and prctl), the child exits at once."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _load_prctl() -> None:
    # Resolved in the parent: the forked child only calls it (preexec_fn runs between fork and exec,
    # where as little as possible should happen; the pool child that runs extractions has one thread).
    global _prctl
    if _prctl is None:
        try:
            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):  # not Linux: the process-group kill on timeout still holds
            _prctl = None


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _time_cut(job: Job, program: str) -> Exception:
    from base.extraction import ExtractionCut

    return ExtractionCut(f"time limit of {job.limits.seconds:g} s reached (in {program})")


def stream(argv: Sequence[str], job: Job, *, env: Mapping[str, str] | None = None,
           chunk_bytes: int = CHUNK_BYTES) -> Generator[bytes, None, None]:
    """The standard output of ``argv`` in chunks (see the module docstring). The program's exit is
    checked after its last chunk: a failure raises ``CommandFailed``."""
    program = os.path.basename(argv[0])
    if job.time_left() <= 0:
        raise _time_cut(job, program)
    _load_prctl()
    try:
        process = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None, start_new_session=True,
            preexec_fn=functools.partial(_die_with_parent, os.getpid()))
    except FileNotFoundError:
        raise CommandMissing(missing_message(program)) from None
    assert process.stdout is not None and process.stderr is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    selector.register(process.stderr, selectors.EVENT_READ)
    stderr_tail = b""
    finished = False
    try:
        open_streams = 2
        while open_streams:
            left = job.time_left()
            if left <= 0:
                raise _time_cut(job, program)
            for key, _events in selector.select(left):
                data = os.read(key.fd, chunk_bytes)
                if not data:
                    selector.unregister(key.fileobj)
                    open_streams -= 1
                elif key.fileobj is process.stderr:
                    stderr_tail = (stderr_tail + data)[-STDERR_TAIL_BYTES:]
                else:
                    yield data
        try:
            returncode = process.wait(max(job.time_left(), 0.001))
        except subprocess.TimeoutExpired:
            raise _time_cut(job, program) from None
        finished = True
        if returncode != 0:
            raise CommandFailed(program, returncode, stderr_tail.decode("utf-8", "replace"))
    finally:
        selector.close()
        if not finished:
            _kill_group(process)
        process.stdout.close()
        process.stderr.close()


def run(argv: Sequence[str], job: Job, *, env: Mapping[str, str] | None = None,
        max_bytes: int = 16 * 1024 * 1024) -> bytes:
    """The standard output of ``argv``, whole; output past ``max_bytes`` is dropped (the program is
    stopped there)."""
    parts: list[bytes] = []
    size = 0
    chunks = stream(argv, job, env=env)
    try:
        for chunk in chunks:
            parts.append(chunk[: max_bytes - size])
            size += len(parts[-1])
            if size >= max_bytes:
                break
    finally:
        chunks.close()
    return b"".join(parts)
