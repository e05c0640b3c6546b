"""The failure classes every part of the service speaks in.

DESIGN.md "Every failure is classified": a *config* failure stops the run and marks the scope,
a *transient* failure is retried (by the HTTP layer, then by Celery at run level), an *item*
failure dead-letters one item and the run goes on. Messages never carry a secret.
"""

from __future__ import annotations

import re
import time


class ConnectorError(Exception):
    """Base of every classified failure raised by the service."""


class ConfigError(ConnectorError):
    """A setting is missing or wrong, or the source refused our permissions: stop the run.

    The scope's state becomes ``config_error``; Celery does not retry it.
    """

    state = "config_error"


class AuthError(ConfigError):
    """The source (or the Hub) rejected our credentials: scope state ``auth_failed``."""

    state = "auth_failed"


class OriginNotAllowed(ConfigError):
    """A request carrying a credential was about to go (or be redirected) to an origin that is not
    configured for that credential, or from https to http: nothing was sent there. The message names
    the origin and the setting that allows it, never the credential."""


class PagingLoopError(ConfigError):
    """A source handed out a page link this run had already read: its paging loops, and reading on
    would never end. Not retried at once (the next tick tries again from the saved cursor)."""


class TransientError(ConnectorError):
    """The source or the Hub is unreachable, slow or overloaded; a later attempt may work."""


class ThrottledError(TransientError):
    """The service asked us to wait longer than we retry inline.

    ``retry_at`` is a Unix time (seconds) before which no worker may call ``service`` again.
    """

    def __init__(self, service: str, retry_at: float, message: str = "") -> None:
        self.service = service
        self.retry_at = retry_at
        wait = max(0.0, retry_at - time.time())
        super().__init__(message or f"{service} throttled us for {wait:.0f} s")


class ResponseTooLarge(TransientError):
    """An answer that is read into memory (a JSON page) is larger than the cap for such answers."""


class ItemError(ConnectorError):
    """One item cannot be read, parsed or accepted: dead-letter it and keep going."""


class ItemTooLarge(ItemError):
    """The item is larger than the configured maximum; it is skipped before (or while) reading."""


class LeaseLostError(ConnectorError):
    """Another worker took over this scope's lease: this run must stop at once."""


class SpoolFullError(TransientError):
    """The spool folder is below its free-space guard: the run pauses instead of filling the disk."""


#: Words that name why a connection or a write failed, as the OS, urllib3 or a source says them; the
#: first one found in an error's text is its root cause.
_ROOT_CAUSES = re.compile(
    r"(BMXAA\d{4}[EWI]|AADSTS\d+|OAuthException \d+|\[Errno \d+\] [^:'\"\)\]]+|Connection refused|"
    r"Connection reset by peer|Name or service not known|Temporary failure in name resolution|"
    r"No route to host|Network is unreachable|Read-only file system|No space left on device|Permission denied|"
    r"certificate verify failed|timed out|Read timed out)")


def root_cause_first(message: str) -> str:
    """``message`` with its root cause (a source's error code such as ``BMXAA9549E``, an OS error such as
    ``Connection refused`` or ``Read-only file system``) put in front, ``cause: message``, unless the
    message starts with it already: a column or a line cut at its tail then still shows why. A
    message with no such cause is returned unchanged."""
    found = _ROOT_CAUSES.search(message)
    if not found:
        return message
    cause = found.group(1).strip()
    cause = re.sub(r"^\[Errno \d+\] ", "", cause)
    if message[: found.end()].lstrip().startswith(cause) or message.startswith(cause):
        return message
    return f"{cause}: {message}"
