"""What the extraction tests share: text comparison, finding leftover processes, running an extraction."""

from __future__ import annotations

import difflib
import os
import shutil
import time
from pathlib import Path

import pytest

from base.extraction import Extraction, ExtractionLimits, extract_path

PROGRAMS = ("pdftotext", "pdftoppm", "pdfinfo", "pdffonts", "tesseract", "pango-view", "pdfunite")


def require_programs() -> None:
    from tests.conftest import skip_or_fail

    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if missing:
        skip_or_fail(f"not installed: {', '.join(missing)} (make install installs them)")


def similarity(expected: str, got: str) -> float:
    """Character-level similarity of two texts, whitespace ignored (1.0: the same characters in order)."""
    a, b = "".join(expected.split()), "".join(got.split())
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def extract(path: Path, **limits: object) -> Extraction:
    return extract_path(str(path), filename=path.name, mime_type="", limits=ExtractionLimits(**limits))  # type: ignore[arg-type]


def left_running(marker: str, *, within: float = 5.0) -> list[tuple[int, str]]:
    """The processes mentioning ``marker`` still alive after waiting up to ``within`` seconds for them to go:
    a process sent SIGKILL is gone once the kernel has torn it down, a moment after the signal."""
    give_up = time.monotonic() + within
    while True:
        found = processes_mentioning(marker)
        if not found or time.monotonic() >= give_up:
            return found
        time.sleep(0.02)


def processes_mentioning(marker: str) -> list[tuple[int, str]]:
    """(pid, state) of every live process whose command line contains ``marker`` (zombies excluded)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z" and int(entry) != os.getpid():
            found.append((int(entry), state))
    return found


@pytest.fixture(scope="session")
def programs() -> None:
    require_programs()
