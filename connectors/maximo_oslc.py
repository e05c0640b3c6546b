"""The Maximo OSLC JSON API's facts the connector relies on (reference/api-contracts.md part B).

The ``Error`` body and its reason codes, the changedate cursor with the work orders taken at its
exact second, the walk through one changedate second, and the small readers of lean JSON values.
Nothing here sends a request.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import requests

from utils.errors import ConfigError, ItemError, TransientError
from utils.http import json_body

#: Reason codes that mean "these credentials are wrong", with what they mean.
CREDENTIAL_REASON_CODES = {
    "BMXAA7901E": "login failed",
    "BMXAA9549E": "invalid or expired API key",
    "BMXAA2283E": "password expired",
}
#: Maximo's answer to a request whose session is unknown, expired or has no credentials.
NO_SESSION_CODE = "BMXAA0021E"

_TAGS = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class MaximoError:
    """What Maximo said about a failed request (``Error`` body: reasonCode, message, statusCode)."""

    status: int
    reason_code: str
    message: str

    def describe(self) -> str:
        """One line for logs and exceptions: ``HTTP 401 BMXAA9549E: <message>``."""
        code = f" {self.reason_code}" if self.reason_code else ""
        text = f": {self.message}" if self.message else ""
        return f"HTTP {self.status}{code}{text}"


def parse_error(response: requests.Response) -> MaximoError:
    """Reads the lean ``Error`` body (or the namespaced ``oslc:Error``); tolerates any other body."""
    status = response.status_code
    try:
        body = json_body(response)
    except (ValueError, TransientError):  # unreadable, nested too deeply, or too large: show a snippet
        body = None
    error: Any = None
    if isinstance(body, dict):
        error = body.get("Error") or body.get("oslc:Error")
    if not isinstance(error, dict):
        snippet = " ".join(response.text[:200].split()) if response.text else ""
        return MaximoError(status, "", snippet)
    code = str(error.get("reasonCode") or error.get("spi:reasonCode") or "")
    message = str(error.get("message") or error.get("oslc:message") or "")
    if code and message.startswith(code):
        message = message[len(code):].lstrip(" -:")
    # statusCode is a string in the body; the HTTP status is what we classify by.
    return MaximoError(status, code, " ".join(message.split())[:300])


@dataclass
class WorkOrderCursor:
    """Where a scope's feed stands: the last changedate taken and the work orders taken at it."""

    changedate: str | None = None
    taken: set[str] = field(default_factory=set)

    @classmethod
    def from_json(cls, value: Any) -> WorkOrderCursor:
        """Reads a stored cursor (None: from the start); ConfigError when it is not a Maximo cursor."""
        if value is None:
            return cls()
        if not isinstance(value, dict) or not isinstance(value.get("taken", []), list):
            raise ConfigError(f"the stored Maximo cursor {value!r} is not a changedate cursor; clear it to resync")
        changedate = value.get("changedate")
        if changedate is not None:
            parse_date(str(changedate), what="the stored cursor's changedate", error=ConfigError)
        return cls(changedate, {str(key) for key in value.get("taken", [])})

    def to_json(self) -> dict[str, Any]:
        """The JSON form saved by the pipeline."""
        return {"changedate": self.changedate, "taken": sorted(self.taken)}

    def is_taken(self, key: str, changedate: str) -> bool:
        """Whether the work order ``key`` at ``changedate`` was already yielded."""
        if self.changedate is None:
            return False
        return key in self.taken and same_instant(changedate, self.changedate)

    def take(self, key: str, changedate: str) -> None:
        """Records that ``key`` at ``changedate`` is done; the cursor never moves backwards."""
        if self.changedate is None or is_after(changedate, self.changedate):
            self.changedate = changedate
            self.taken = {key}
        elif same_instant(changedate, self.changedate):
            self.taken.add(key)


def parse_date(value: str, *, what: str, error: type[Exception] = ItemError) -> datetime:
    """An ISO 8601 date with its offset; ``error`` (naming ``what``) when it is not one."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise error(f"{what} {value!r} is not an ISO 8601 date") from exc
    if parsed.tzinfo is None:
        raise error(f"{what} {value!r} has no time zone offset")
    return parsed


def same_instant(a: str, b: str) -> bool:
    """Whether two ISO dates name the same instant (offsets may differ)."""
    return a == b or parse_date(a, what="changedate") == parse_date(b, what="changedate")


def is_after(a: str, b: str) -> bool:
    """Whether ISO date ``a`` is later than ``b``."""
    return parse_date(a, what="changedate") > parse_date(b, what="changedate")


def next_second(value: str) -> str:
    """The ISO date one second after ``value`` (Maximo shows seconds; the database may hold less)."""
    return (parse_date(value, what="changedate") + timedelta(seconds=1)).isoformat(timespec="seconds")


@dataclass
class ChangedateBlock:
    """A walk through every work order of one changedate second, and its size when it began."""

    changedate: str
    params: dict[str, str]
    first_total: int | None = None
    last_total: int | None = None

    def observe(self, total: Any) -> None:
        """Notes the ``totalCount`` a page of the walk reported."""
        if isinstance(total, int):
            self.last_total = total
            if self.first_total is None:
                self.first_total = total

    def shrank(self) -> bool:
        """Whether the second held fewer work orders at the end of the walk than at its start (a
        record may then have slid onto a page already read); if so, the next walk starts afresh."""
        if self.first_total is None or self.last_total is None or self.last_total >= self.first_total:
            return False
        self.first_total = self.last_total = None
        return True


def json_object(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (Maximo drops empty children)."""
    return value if isinstance(value, dict) else {}


def plain_text(value: Any) -> str:
    """A Maximo text field as plain text (long descriptions are rich-text HTML)."""
    if not value:
        return ""
    return " ".join(html.unescape(_TAGS.sub(" ", str(value))).split())


def quoted_list(values: Sequence[str], what: str) -> str:
    """``"A","B"`` for an ``in [...]`` term; ConfigError (naming the setting ``what``) for a value
    that would break out of its quotes."""
    for value in values:
        if '"' in value or "\\" in value:
            raise ConfigError(f"{what} value {value!r} contains a quote or backslash")
    return ",".join(json.dumps(value) for value in values)
