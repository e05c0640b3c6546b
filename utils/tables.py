"""Plain-text tables and human-readable times for the command line (no terminal library needed)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from wcwidth import wcswidth, wcwidth

#: Operators read times in the service's time zone.
DISPLAY_ZONE = ZoneInfo("Asia/Kolkata")


def display_width(text: str) -> int:
    """Columns ``text`` takes on a terminal: Malayalam vowel signs and viramas take none, wide East Asian
    characters two (``wcwidth``); a character wcwidth cannot measure (a control character) counts one."""
    width = wcswidth(text)
    if width >= 0:
        return width
    return sum(max(wcwidth(char), 0) if wcwidth(char) >= 0 else 1 for char in text)


def clip(text: str, max_width: int) -> str:
    """``text`` cut to ``max_width`` columns with ``…`` at the end when it is wider; never cut between a
    letter and the signs that follow it (a Malayalam vowel sign stays with its consonant or goes with it)."""
    if display_width(text) <= max_width:
        return text
    room, kept, used = max_width - 1, 0, 0
    for at, char in enumerate(text):
        used += max(wcwidth(char), 0) if wcwidth(char) >= 0 else 1
        if used > room:
            break
        kept = at + 1
    while kept and kept < len(text) and wcwidth(text[kept]) == 0:
        kept -= 1  # the next character is a sign of the last letter kept: drop the letter too
    return text[:kept] + "…"


def pad(text: str, width: int) -> str:
    """``text`` followed by spaces up to ``width`` display columns."""
    return text + " " * max(width - display_width(text), 0)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, max_width: int = 60,
                 wide_columns: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell by display width (``display_width``), so a Malayalam file name
    never shifts the columns after it; cells cut to ``max_width`` columns with ``…`` (cut at the tail: a
    message that matters puts its cause first). Columns whose index is in ``wide_columns`` are never cut
    (the last column of a table, e.g. an error, can run on)."""
    def cell(value: object, index: int) -> str:
        text = " ".join(str(value if value is not None else "").split())
        return text if index in wide_columns else clip(text, max_width)

    table = [[cell(h, i) for i, h in enumerate(headers)],
             *([cell(v, i) for i, v in enumerate(row)] for row in rows)]
    widths = [max(display_width(r[i]) for r in table) for i in range(len(headers))]
    lines = ["  ".join(pad(r[i], widths[i]) for i in range(len(headers))).rstrip() for r in table]
    return "\n".join(lines)


def format_time(unix: float | None) -> str:
    """``2025-05-01 15:30:05 IST`` for a Unix time; ``never`` for 0/None."""
    if not unix:
        return "never"
    return datetime.fromtimestamp(unix, DISPLAY_ZONE).strftime("%Y-%m-%d %H:%M:%S IST")


def format_duration(seconds: float | None) -> str:
    """``45s``, ``12m 5s``, ``3h 20m``, ``2d 4h``; ``-`` for None."""
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {secs}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def ago(unix: float | None, *, now: float | None = None) -> float | None:
    """Seconds since ``unix`` (None when it is 0/None)."""
    if not unix:
        return None
    return (time.time() if now is None else now) - unix


def safe_url(url: str) -> str:
    """``url`` without its user and password, for output and messages."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url
