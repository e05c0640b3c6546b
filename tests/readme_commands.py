"""The shell commands README.md shows: every line of its ``sh`` blocks, and every inline ``code``
span that starts with a command the project ships or uses. Shared by the tests that run them."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
#: Programs whose inline mentions are commands (not file names or settings).
PROGRAMS = ("make", "python", "celery", "kmrl-connectors", "gunicorn", "docker", "flask")

_FENCE = re.compile(r"```sh\n(.*?)```", re.S)
_INLINE = re.compile(r"`([^`\n]+)`")


def _strip_comment(line: str) -> str:
    """The command without a trailing ``# comment`` (a '#' inside quotes is part of the command)."""
    quote = ""
    for at, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (at == 0 or line[at - 1].isspace()):
            return line[:at].strip()
    return line.strip()


def readme_commands(text: str | None = None) -> list[str]:
    """Every command README.md shows, in order, without duplicates or trailing comments."""
    text = README.read_text(encoding="utf-8") if text is None else text
    commands: list[str] = []
    for block in _FENCE.findall(text):
        commands += [_strip_comment(line) for line in block.splitlines() if line.strip()]
    outside = _FENCE.sub("", text)
    for span in _INLINE.findall(outside):
        if span.split(" ", 1)[0] in PROGRAMS and " " in span:
            commands.append(span.strip())
    return [c for c in dict.fromkeys(commands) if c]


def readme_command(prefix: str) -> str:
    """The README command that starts with ``prefix`` (AssertionError naming it when there is none)."""
    for command in readme_commands():
        if command.startswith(prefix):
            return command
    raise AssertionError(f"README.md shows no command starting with {prefix!r}")
