"""Typed reading of environment variables: the one place a setting's text becomes a number, a
duration, a list, a flag or one of a few words, and the one wording of what is wrong with it.

Accepted forms (every reader strips surrounding blanks; a variable unset or empty takes its default):

- whole number: what Python's ``int()`` reads in base 10: ``42``, ``+42``, ``-3``, ``1_000``.
  ``1.5`` and ``1e3`` are refused.
- number: what Python's ``float()`` reads: ``0.5``, ``.5``, ``120``, ``1e3``; ``nan`` and ``inf`` are
  refused.
- duration: a number (or a whole number, where the caller asks for one) in the unit the variable's
  name gives: ``LOCK_TTL_SECONDS=120``, ``EMAIL_SYNC_MINUTES=5``, ``RETENTION_SPOOL_DAYS=1``, or the
  unit its documentation gives (``HUB_READ_TIMEOUT`` is in seconds). There are no unit suffixes:
  ``5m`` is refused, so a value never means two things.
- list: comma-separated; items are stripped and empty items dropped (``"a, b,,c"`` is a, b, c).
- flag: ``1``, ``true``, ``yes``, ``on`` or ``0``, ``false``, ``no``, ``off``, in any case;
  anything else is refused rather than read as false.
- choice: one of a fixed set of words, in any case; returned in lower case.
- time of day: ``HH:MM`` on a 24-hour clock (``02:00``, ``2:0``, ``23:59``).

A value that cannot be used raises ``SettingError`` (a ``ConfigError``, so a scope run records
``config_error``, and a ``ValueError``). Its message is one line that names the variable, says what
it must be and quotes the value, e.g. ``HUB_READ_TIMEOUT must be a number of seconds, not 'abc'``;
the value of a variable named like a secret (``*_TOKEN``, ``*_PASSWORD``, ``*_SECRET``, ...) is
never quoted.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

from utils.errors import ConfigError

#: What is shown instead of the value of a variable named like a secret.
HIDDEN = "***"
#: Words in a variable's name that mark its value as a secret.
SECRET_NAME_WORDS = ("token", "password", "passwd", "secret", "apikey", "api_key", "credential", "private_key",
                     "signing_key", "access_key", "client_key")
#: The words a flag accepts, and what each means.
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
#: Units a duration may be read in (the unit its variable's name or documentation gives).
DURATION_UNITS = ("seconds", "minutes", "hours", "days")
#: A quoted value longer than this is cut (a whole file pasted into a variable is not a message).
MAX_SHOWN_CHARS = 80


class SettingError(ConfigError, ValueError):
    """A setting whose value cannot be used; the message names the variable, what it must be and the value.
    A ``ConfigError`` (scope state ``config_error``) and, for callers of ``Settings.from_env``, a ``ValueError``."""


def is_secret_name(name: str) -> bool:
    """True when ``name`` (a variable or field) is named like a secret; its value is never shown."""
    lowered = name.lower()
    return any(word in lowered for word in SECRET_NAME_WORDS)


def shown(name: str, raw: str) -> str:
    """``raw`` as a message may quote it: hidden for a secret's variable, cut when very long."""
    if is_secret_name(name):
        return repr(HIDDEN)
    return repr(raw if len(raw) <= MAX_SHOWN_CHARS else raw[:MAX_SHOWN_CHARS] + "...")


def refuse(name: str, raw: str, what: str) -> SettingError:
    """The error for variable ``name`` holding ``raw``, which must be ``what`` (e.g. "a number of seconds")."""
    return SettingError(f"{name} must be {what}, not {shown(name, raw)}")


def parse_number(raw: str, name: str, *, whole: bool, what: str, minimum: float | None = None,
                 above: float | None = None, maximum: float | None = None) -> float:
    """``raw`` read as a whole number or a finite number, then bounded: at least ``minimum``, more
    than ``above``, at most ``maximum`` when given. ``SettingError`` naming ``name`` otherwise."""
    text = raw.strip()
    try:
        value: float = int(text) if whole else float(text)
    except ValueError:
        raise refuse(name, raw, what) from None
    if not math.isfinite(value):
        raise refuse(name, raw, what)
    if minimum is not None and value < minimum:
        raise refuse(name, raw, f"at least {minimum:g}")
    if above is not None and value <= above:
        raise refuse(name, raw, f"more than {above:g}")
    if maximum is not None and value > maximum:
        raise refuse(name, raw, f"at most {maximum:g}")
    return value


def parse_flag(raw: str, name: str) -> bool:
    """``raw`` as a flag (see the module docstring); ``SettingError`` naming ``name`` otherwise."""
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise refuse(name, raw, f"one of {'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)}")


def split_list(value: str | None) -> list[str]:
    """A comma-separated value as a list of stripped, non-empty strings."""
    return [part.strip() for part in (value or "").split(",") if part.strip()]


class EnvReader:
    """Reads typed values from one mapping of variables (``os.environ``, or the environment a
    ``Settings`` was built from). Each method takes the variable's name and its default, returned
    when the variable is unset or empty; the default is not checked against the bounds."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def raw(self, name: str) -> str | None:
        """The variable's text, or None when it is unset or empty (blanks only count as empty)."""
        value = self.environ.get(name)
        return value if value is not None and value.strip() != "" else None

    def text(self, name: str, default: str = "") -> str:
        """The variable as it is written (not stripped); ``default`` when unset or empty."""
        value = self.environ.get(name)
        return value if value not in (None, "") else default

    def whole(self, name: str, default: int, *, what: str, minimum: float | None = None, above: float | None = None,
              maximum: float | None = None) -> int:
        """A whole number (``what`` says of what, e.g. "a whole number of documents")."""
        raw = self.raw(name)
        if raw is None:
            return default
        return int(parse_number(raw, name, whole=True, what=what, minimum=minimum, above=above, maximum=maximum))

    def number(self, name: str, default: float, *, what: str, minimum: float | None = None,
               above: float | None = None, maximum: float | None = None) -> float:
        """A finite number (``what`` says of what, e.g. "a number of MB")."""
        raw = self.raw(name)
        if raw is None:
            return default
        return parse_number(raw, name, whole=False, what=what, minimum=minimum, above=above, maximum=maximum)

    def duration(self, name: str, default: float, *, unit: str, whole: bool = False, minimum: float | None = None,
                 above: float | None = None, maximum: float | None = None) -> float:
        """A duration in ``unit`` (seconds, minutes, hours or days), returned in that unit; a whole
        number of them when ``whole``."""
        if unit not in DURATION_UNITS:
            raise ValueError(f"unit must be one of {', '.join(DURATION_UNITS)}, not {unit!r}")
        raw = self.raw(name)
        if raw is None:
            return default
        what = f"a whole number of {unit}" if whole else f"a number of {unit}"
        return parse_number(raw, name, whole=whole, what=what, minimum=minimum, above=above, maximum=maximum)

    def flag(self, name: str, default: bool) -> bool:
        """A flag: 1/true/yes/on or 0/false/no/off, in any case."""
        raw = self.raw(name)
        return default if raw is None else parse_flag(raw, name)

    def items(self, name: str, default: str = "") -> list[str]:
        """A comma-separated list (``default`` is written the same way)."""
        return split_list(self.text(name, default))

    def choice(self, name: str, default: str, choices: Collection[str]) -> str:
        """One of ``choices`` (lower-case words), in any case; returned in lower case."""
        raw = self.raw(name)
        if raw is None:
            return default
        word = raw.strip().lower()
        if word not in choices:
            raise refuse(name, raw, "one of " + ", ".join(choices))
        return word

    def time_of_day(self, name: str, default: str) -> tuple[int, int]:
        """A time of day written ``HH:MM`` (24-hour clock) as (hour, minute); ``default`` is written the same way."""
        raw = self.text(name, default)
        hour, sep, minute = raw.partition(":")
        try:
            h, m = int(hour), int(minute)
        except ValueError:
            h = m = -1
        if not sep or not (0 <= h < 24 and 0 <= m < 60):
            raise refuse(name, raw, "a time of day as HH:MM")
        return h, m
