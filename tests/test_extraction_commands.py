"""External programs under an extraction's bounds (base/extraction/commands.py): streamed output,
the job's time limit with the whole process group killed, a missing program named, and no program
outliving the process that started it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid

import pytest

from base.extraction import ExtractionCut, ExtractionLimits, Job, TextSink, commands
from tests.extraction_fixtures import left_running, processes_mentioning


def _job(seconds: float) -> Job:
    return Job(path="", filename="", mime_type="", kind="", limits=ExtractionLimits(seconds=seconds),
               deadline=time.monotonic() + seconds, sink=TextSink(1000))


def _marker() -> str:
    return f"{1000 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6}"  # a unique sleep length


def test_output_is_streamed_in_chunks() -> None:
    chunks = list(commands.stream(["sh", "-c", "head -c 300000 /dev/zero"], _job(30), chunk_bytes=65536))
    assert sum(map(len, chunks)) == 300000 and len(chunks) >= 5


def test_a_failure_carries_the_end_of_stderr() -> None:
    with pytest.raises(commands.CommandFailed) as failed:
        commands.run(["sh", "-c", "echo first >&2; echo 'Syntax Error: no trailer' >&2; exit 3"], _job(30))
    assert (failed.value.returncode, str(failed.value)) == (3, "sh exited with status 3: Syntax Error: no trailer")


def test_the_time_limit_kills_the_whole_process_group() -> None:
    marker = _marker()
    with pytest.raises(ExtractionCut, match=r"time limit of 0.5 s reached \(in sh\)"):
        commands.run(["sh", "-c", f"sleep {marker} & sleep {marker}; wait"], _job(0.5))
    assert left_running(f"sleep {marker}") == []


def test_a_reader_that_stops_early_stops_the_program() -> None:
    marker = _marker()
    out = commands.run(["sh", "-c", f"yes; sleep {marker}"], _job(30), max_bytes=1000)
    assert out == b"y\n" * 500
    assert left_running(marker) == []


def test_a_missing_program_is_named_with_its_package() -> None:
    with pytest.raises(commands.CommandMissing,
                       match=r"pdftoppm is not installed .*\(Debian packages: poppler-utils\)"):
        commands.run(["/nonexistent/pdftoppm"], _job(30))


def test_a_program_dies_with_the_process_that_started_it() -> None:
    marker = _marker()
    script = ("import time, sys\nfrom base.extraction import ExtractionLimits, Job, TextSink, commands\n"
              "job = Job(path='', filename='', mime_type='', kind='', limits=ExtractionLimits(), "
              "deadline=time.monotonic() + 60, sink=TextSink(10))\n"
              f"stream = commands.stream(['sleep', '{marker}'], job)\n"
              "print('started', flush=True)\nnext(stream, None)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None and parent.stdout.readline() == "started\n"
    for _ in range(50):
        if processes_mentioning(f"sleep {marker}"):
            break
        time.sleep(0.05)
    assert len(processes_mentioning(f"sleep {marker}")) == 1
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert left_running(f"sleep {marker}") == []
