"""Structured logging: JSON lines to a rotated file, readable lines on the console, secrets redacted.

``configure_logging()`` wires structlog through the stdlib ``logging`` module once per process.
Processors are small functions composed in one list (``_shared_processors``); ``redact`` runs last
before rendering, after exceptions have been turned into text, so a secret inside an exception
message is masked too. Context is bound per run (connector, scope, run_id) and per item (source_id)
with ``bind_context`` / ``structlog.contextvars``.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

import structlog

from utils.env import EnvReader

#: What replaces a secret in a log line.
MASK = "***"
#: Field names whose values are always masked, whatever they hold.
SECRET_FIELD = re.compile(r"(passw|secret|token|authoriz|api_?key|apikey|credential|cookie|signature)", re.I)
#: Secrets shorter than this are not searched for inside other strings (too many false hits).
MIN_SECRET_LENGTH = 4
#: Rotated log file size and how many old files are kept (the audit log's limits, kept for readers of
#: older logs; log files are now rotated from outside, see ``shared_file_handler``).
LOG_MAX_BYTES = 20 * 1024 * 1024  # bytes
LOG_BACKUPS = 5
#: Levels LOG_LEVEL accepts (the names the ``logging`` module knows), in lower case as ``EnvReader.choice`` reads them.
LOG_LEVELS = ("debug", "info", "warning", "warn", "error", "critical", "fatal", "notset")
#: Console renderings LOG_FORMAT accepts.
LOG_FORMATS = ("console", "json")
#: Defaults of LOG_FILE, LOG_LEVEL and LOG_FORMAT.
DEFAULT_LOG_FILE = "./logs/kmrl-connectors.log"
DEFAULT_LOG_LEVEL = "INFO"
DEFAULT_LOG_FORMAT = "console"

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_configured_for: tuple[str, str, str, str] | None = None


def register_secret(*values: str | None) -> None:
    """Adds values that must never appear in a log line (passwords, tokens, client secrets)."""
    with _secrets_lock:
        for value in values:
            if value and len(value) >= MIN_SECRET_LENGTH:
                _secrets.add(value)


def registered_secrets() -> frozenset[str]:
    """The values currently masked in logs (for tests that scan files for leaks)."""
    with _secrets_lock:
        return frozenset(_secrets)


def mask_text(text: str) -> str:
    """``text`` with every registered secret replaced by ``MASK`` and every URL in it redacted
    (``redact_urls_in_text``): an exception that quotes a URL must not carry its token along."""
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return redact_urls_in_text(text)


#: An absolute URL inside free text (up to a space, quote, bracket or parenthesis).
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>()\[\]{}]+")
#: A request target as urllib3 quotes it: ``Max retries exceeded with url: /path?query`` in an
#: exception, ``"GET /path?query HTTP/1.1" 200`` in its debug log.
_PATH_IN_TEXT = re.compile(r"(?:(?<=url: )|(?<=GET )|(?<=POST )|(?<=PUT )|(?<=DELETE )|(?<=HEAD )|(?<=PATCH ))"
                           r"/[^\s'\"<>()]*")
#: One ``name=value`` of a query string or fragment.
_QUERY_PAIR = re.compile(r"([^&;=]*=)?([^&;]*)")


def _redact_query(query: str) -> str:
    """``a=1&b=2`` as ``a=***&b=***``; a bare value (no ``=``) becomes ``***``."""
    def pair(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        if not name and not value:
            return ""
        return (name or "") + (MASK if value else "")
    return _QUERY_PAIR.sub(pair, query)


def redact_url(url: str) -> str:
    """``url`` without what may be a credential: user and password (``user:pass@``) and the values of
    its query and fragment become ``***``; scheme, host, port, path and query names stay, so a
    person can still tell which endpoint was meant. Text that is not a URL is returned unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rsplit("@", 1)[1]
    redacted = SplitResult(parts.scheme, netloc, parts.path,
                           _redact_query(parts.query) if parts.query else "",
                           _redact_query(parts.fragment) if parts.fragment else "")
    return urlunsplit(redacted)


def _redact_match(match: re.Match[str]) -> str:
    # A sentence may end right after a URL: its full stop or comma is not part of the URL.
    url = match.group(0)
    stripped = url.rstrip(".,;:!?")
    return redact_url(stripped) + url[len(stripped):]


def redact_urls_in_text(text: str) -> str:
    """``text`` with every URL in it (absolute, or a request target quoted by urllib3) redacted by
    ``redact_url``: the one place error and log text passes through before anyone reads it."""
    if "://" not in text and " /" not in text:
        return text
    text = _URL_IN_TEXT.sub(_redact_match, text)
    return _PATH_IN_TEXT.sub(_redact_match, text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: (MASK if SECRET_FIELD.search(str(k)) and v else _redact_value(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redact_value(v) for v in value)
    return value


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: masks secret-named fields and any registered secret value anywhere."""
    for key in list(event_dict):
        value = event_dict[key]
        if SECRET_FIELD.search(key) and value not in (None, "", False):
            event_dict[key] = MASK
        else:
            event_dict[key] = _redact_value(value)
    return event_dict


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        structlog.processors.UnicodeDecoder(),
        redact,
    ]


class _RedactingFilter(logging.Filter):
    """Masks secrets in records from libraries that log through stdlib logging directly."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            try:
                record.msg = mask_text(record.getMessage())
                record.args = None
            except Exception:  # noqa: BLE001, S110 - a bad format string must not kill logging
                pass
        return True


def shared_file_handler(path: str) -> logging.Handler:
    """A handler appending to ``path`` (its folder created) that several processes can share: worker,
    beat, web and the command line all write whole lines with O_APPEND, and none rotates the file
    itself (a ``RotatingFileHandler`` in each would rename the file under the others, the stdlib warns).
    Rotation is logrotate's (README "Logs"): the handler notices the file was moved and reopens its path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return logging.handlers.WatchedFileHandler(path, encoding="utf-8")


def configure_logging(
    *, log_file: str | None = None, level: str | None = None, console_format: str | None = None,
    console_level: str | None = None, force: bool = False
) -> None:
    """Configures structlog and stdlib logging for this process (idempotent unless ``force``).

    log_file: JSON-lines file (default from LOG_FILE, then ./logs/kmrl-connectors.log), shared by the
        processes that write it (``shared_file_handler``); an empty string disables the file.
    level: DEBUG/INFO/WARNING/ERROR (default LOG_LEVEL, then INFO).
    console_format: "console" (readable) or "json" (default LOG_FORMAT, then console).
    console_level: a higher level for the console only (the command line shows warnings, while its
        log file still gets ``level``'s lines); default: ``level``.

    A default read from the environment that is not one of ``LOG_LEVELS`` / ``LOG_FORMATS`` raises
    ``SettingError`` naming the variable and the value.
    """
    global _configured_for
    env = EnvReader(os.environ)
    log_file = log_file if log_file is not None else env.text("LOG_FILE", DEFAULT_LOG_FILE)
    level = (level or env.choice("LOG_LEVEL", DEFAULT_LOG_LEVEL.lower(), LOG_LEVELS)).upper()
    console_format = console_format or env.choice("LOG_FORMAT", DEFAULT_LOG_FORMAT, LOG_FORMATS)
    console_level = (console_level or level).upper()
    key = (log_file, level, console_format, console_level)
    if _configured_for == key and not force:
        return

    shared = _shared_processors()
    structlog.configure(
        # The level first: a line below it (the pipeline's DEBUG line per document) is dropped before any
        # processor builds it (14.6 -> about 3 us a call at INFO).
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_kmrl", False):
            root.removeHandler(handler)
            handler.close()

    console = logging.StreamHandler(sys.stderr)
    console.setLevel(console_level)
    console_renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if console_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    console.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared, processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                                                  console_renderer]
        )
    )
    handlers: list[logging.Handler] = [console]
    if log_file:
        file_handler = shared_file_handler(log_file)
        file_handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                foreign_pre_chain=shared,
                processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                            structlog.processors.JSONRenderer(ensure_ascii=False)],
            )
        )
        handlers.append(file_handler)
    for handler in handlers:
        handler._kmrl = True  # type: ignore[attr-defined]
        handler.addFilter(_RedactingFilter())
        root.addHandler(handler)
    root.setLevel(level)
    # Chatty libraries stay at WARNING unless we debug.
    for noisy in ("urllib3", "msal", "imapclient", "kombu", "amqp", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level != "DEBUG" else logging.DEBUG)
    # urllib3 warns "Retrying (Retry(...)) after connection broken by ..." for each connection attempt it
    # retries itself: hundreds of characters each, while utils/http.py reports the outcome once, root
    # cause first. Its errors still show.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR if level != "DEBUG" else logging.DEBUG)
    _configured_for = key


class _FirstUseLogger:
    """A structlog logger that configures logging with the defaults (``configure_logging()``) when it
    is first used, not when it is made: modules make their loggers at import, and importing a module
    must neither read the environment nor create a log file."""

    __slots__ = ("_logger",)

    def __init__(self, name: str | None) -> None:
        self._logger = structlog.get_logger(name)

    def __getattr__(self, attribute: str) -> Any:
        if _configured_for is None:
            configure_logging()
        return getattr(self._logger, attribute)


def get_logger(name: str | None = None) -> Any:
    """A structlog logger; the first call of any of its methods configures logging with the defaults
    when no entry point has configured it yet."""
    return _FirstUseLogger(name)


@contextmanager
def bind_context(**fields: Any) -> Iterator[None]:
    """Binds ``fields`` to every log line emitted inside the ``with`` block (this thread/task)."""
    tokens = structlog.contextvars.bind_contextvars(**fields)
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


def secret_values_in(paths: Iterable[str]) -> list[tuple[str, str]]:
    """(path, secret) pairs for every registered secret found in the given files (for leak tests)."""
    found: list[tuple[str, str]] = []
    secrets = registered_secrets()
    for path in paths:
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as fh:
            content = fh.read()
        found.extend((path, s) for s in secrets if s in content)
    return found
