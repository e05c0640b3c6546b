"""Plain-text tables and human-readable times for the command line (no terminal library needed)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

#: Operators read times in the service's time zone.
DISPLAY_ZONE = ZoneInfo("Asia/Kolkata")


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, max_width: int = 60) -> str:
    """Columns padded to their widest cell (cells cut to ``max_width`` characters with ``…``)."""
    def cell(value: object) -> str:
        text = " ".join(str(value if value is not None else "").split())
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    table = [[cell(h) for h in headers], *([cell(v) for v in row] for row in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(len(headers))).rstrip() for r in table]
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
