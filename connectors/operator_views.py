"""What the operator commands print: the recent documents, the day's totals, one dead letter in full.

``kmrl-connectors recent``, ``status`` and ``deadletter show`` (cli.py) print these; each function
returns text (or rows) and prints nothing, so the CLI stays a list of commands.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from base.recent import KINDS, RecentDocument, department_text, extraction_text
from base.state import DeadLetter
from utils.tables import format_time, render_table

#: The columns of ``recent``.
RECENT_HEADERS = ("TIME (IST)", "SOURCE", "SCOPE", "FILENAME", "LANG", "DEPARTMENT (WHY)", "EXTRACTION", "DECISION",
                  "HUB ID")


def recent_table(entries: Sequence[RecentDocument]) -> str:
    """The recent documents as a table, newest first; a line saying so when there are none."""
    if not entries:
        return "No recent documents (none recorded yet, or none match)."
    rows = [(format_time(e.at).removesuffix(" IST"), e.source, e.scope, e.filename or e.source_id,
             e.language or "-", department_text(e), extraction_text(e.extraction),
             f"{e.decision}: {e.reason}" if e.reason else e.decision, e.hub_id or "-") for e in entries]
    return render_table(RECENT_HEADERS, rows, max_width=48)


def recent_json(entries: Sequence[RecentDocument]) -> str:
    """The recent documents as a JSON list (every field of each entry)."""
    return json.dumps([asdict(e) for e in entries], ensure_ascii=False, indent=2, sort_keys=True)


def _breakdown(by: Mapping[str, Mapping[str, int]]) -> str:
    merged: dict[str, int] = {}
    for counts in by.values():
        for name, count in counts.items():
            merged[name] = merged.get(name, 0) + count
    return ", ".join(f"{name} {count}" for name, count in sorted(merged.items(), key=lambda kv: (-kv[1], kv[0])))


def today_line(today: Mapping[str, Any]) -> str:
    """``today (2025-05-01, IST): new 3 · updated 1 · ... · by language: en 2, ml 2 · by department: ...``"""
    counts = today.get("counts", {})
    line = f"today ({today.get('day', '')}, IST): " + " · ".join(f"{kind} {counts.get(kind, 0)}" for kind in KINDS)
    languages, departments = _breakdown(today.get("by_language", {})), _breakdown(today.get("by_department", {}))
    if languages:
        line += f" · by language: {languages}"
    if departments:
        line += f" · by department: {departments}"
    return line


def dead_letter_rows(entries: Sequence[DeadLetter]) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    """(headers, rows) of ``deadletter list``."""
    rows = [(e.id, e.connector, e.scope, e.display_name or "-", e.source_id, e.attempts, format_time(e.last_failed_at),
             "kept" if e.bytes_path and os.path.isfile(e.bytes_path) else "-", e.reason) for e in entries]
    return ("ID", "SOURCE", "SCOPE", "FILENAME", "SOURCE ID", "TRIES", "LAST FAILED", "BYTES", "REASON"), rows


def dead_letter_text(entry: DeadLetter) -> str:
    """One dead letter in full: every field on its own line, the whole reason, the metadata as JSON."""
    kept = entry.bytes_path and os.path.isfile(entry.bytes_path)
    bytes_text = f"{entry.bytes_path} ({'kept' if kept else 'missing'})" if entry.bytes_path else "not kept"
    lines = [
        f"id:            {entry.id}",
        f"source:        {entry.connector}",
        f"scope:         {entry.scope}",
        f"source id:     {entry.source_id}",
        f"filename:      {entry.display_name or '-'}",
        f"version:       {entry.version or '-'}",
        f"attempts:      {entry.attempts}",
        f"first failed:  {format_time(entry.first_failed_at)}",
        f"last failed:   {format_time(entry.last_failed_at)}",
        f"bytes:         {bytes_text}",
        "reason:",
        *(f"  {line}" for line in (entry.reason or "-").splitlines()),
        "metadata:",
        *(f"  {line}" for line in json.dumps(entry.metadata, ensure_ascii=False, indent=2, sort_keys=True,
                                             default=str).splitlines()),
    ]
    return "\n".join(lines)


def render_dead_letters(entries: Sequence[DeadLetter]) -> str:
    headers, rows = dead_letter_rows(entries)
    return render_table(headers, rows) if rows else "No dead letters."
