"""Settings from the environment and an optional ``.env`` file (python-dotenv).

``Settings.from_env()`` reads the service-wide variables once; source- and component-specific
variables are read where they are used, from ``Settings.environ`` through ``Settings.reader`` (typed:
utils/env.py says which forms each kind accepts). Every variable is documented in env.example. Real
environment variables win over ``.env``. Nothing is read when this module is imported.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dotenv import load_dotenv

from utils.env import EnvReader, SettingError, is_secret_name, refuse, split_list
from utils.logging import LOG_FORMATS, LOG_LEVELS, MASK, redact_url

__all__ = ["PROJECT_ROOT", "EnvFile", "SettingError", "Settings", "find_env_file", "get_settings", "redis_db_url",
           "split_list"]

#: The project's root folder (where env.example and config/ live).
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def redis_db_url(url: str, db: int) -> str:
    """``url`` pointing at database ``db`` (any database already in the path is replaced)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


@dataclass(frozen=True)
class EnvFile:
    """Which ``.env`` file the settings were read over: ``path`` ("" when none), and ``note``, a warning
    for the operator when none was found where one was expected ("" otherwise)."""

    path: str = ""
    note: str = ""


def find_env_file(dotenv_path: str | None = None, *, cwd: str | None = None) -> EnvFile:
    """The ``.env`` to read: ``dotenv_path`` when given; else KMRL_ENV_FILE when set (empty: none, on
    purpose, no note); else ``.env`` in the current folder; else ``.env`` beside the install (the project
    root, where env.example is), so a command run from another folder reads the same settings. Without
    any, ``note`` says where it looked: the defaults (a local Redis, ./var, ./logs) would otherwise be
    used silently."""
    if dotenv_path is not None:
        return EnvFile(dotenv_path if os.path.isfile(dotenv_path) else "")
    chosen = os.environ.get("KMRL_ENV_FILE")
    if chosen is not None:
        if not chosen:
            return EnvFile()
        if os.path.isfile(chosen):
            return EnvFile(os.path.abspath(chosen))
        return EnvFile("", f"KMRL_ENV_FILE={chosen} is not a file: using the environment and the defaults")
    here = os.path.join(cwd or os.getcwd(), ".env")
    beside = str(PROJECT_ROOT / ".env")
    for path in (here, beside):
        if os.path.isfile(path):
            return EnvFile(os.path.abspath(path))
    return EnvFile("", f"no .env file in {os.path.dirname(here)} nor beside the install ({PROJECT_ROOT}): "
                       "using the environment and the defaults (set KMRL_ENV_FILE to name one)")


def _load_environ(dotenv_path: str | None) -> tuple[dict[str, str], EnvFile]:
    found = find_env_file(dotenv_path)
    if found.path:
        # Into os.environ (never over a real variable), so modules that read a variable directly,
        # such as the classifier's DEPARTMENTS_FILE, see .env values too.
        load_dotenv(found.path, override=False)
    return dict(os.environ), found


@dataclass(frozen=True)
class Settings:
    """Service-wide settings. Defaults are safe for a fresh checkout (local outbox, local Redis)."""

    redis_url: str = "redis://localhost:6379/0"
    broker_url: str = "redis://localhost:6379/0"
    result_backend: str = "redis://localhost:6379/1"
    redbeat_redis_url: str = "redis://localhost:6379/2"
    state_redis_url: str = "redis://localhost:6379/3"
    key_prefix: str = "kmrl:"
    redis_ca_file: str = ""  # PEM bundle that rediss:// certificates are verified against (empty: system CAs)
    hub_api_url: str = ""
    hub_api_token: str = field(default="", repr=False)
    hub_outbox_dir: str = "./var/outbox"
    hub_ca_file: str = ""
    hub_connect_timeout: float = 5.0  # seconds
    hub_read_timeout: float = 120.0  # seconds
    hub_fsync: bool = True
    hub_text_part: bool = True  # send a document's extracted text as the upload's ``text`` part
    hub_text_max_bytes: int = 1024 * 1024  # bytes of UTF-8; the text part is cut on a character boundary
    hub_refusals_to_stop: int = 3  # documents refused in a row with one 4xx answer that stop a run; 0: never
    hub_uploads_in_flight: int = 4  # uploads to an HTTP Hub sent at once by one run (the cursor stays in order)
    spool_dir: str = "./var/spool"
    spool_min_free_mb: int = 512  # MiB
    deadletter_dir: str = "./var/deadletter"
    held_dir: str = "./var/held"  # bytes of documents a [[hold]] content rule kept back
    held_retention_days: float = 30.0  # days held bytes are kept before the daily cleanup deletes them
    max_document_mb: float = 4096.0  # MiB; 0 means no limit (the spool free-space guard still holds)
    lock_ttl: float = 120.0  # seconds; renewed while a run lasts
    cursor_save_every: int = 50  # items
    item_transient_runs: int = 3  # runs in which one item's download failed transiently before it is dead-lettered
    ack_batch_size: int = 64  # documents read ahead and acknowledged together (one flush, one Redis transaction)
    pool_size: int = 2  # child processes for CPU-heavy work (base/pool.py), per worker process
    pool_task_seconds: float = 120.0  # seconds one task in the pool may run before its child is killed
    pool_task_memory_mb: int = 2048  # MiB of address space one task in the pool may use; 0 means no limit
    extract_text: bool = True  # read each document's text (base/extraction) on the pool
    extract_max_chars: int = 1_000_000  # characters of text kept per document
    extract_max_pages: int = 2_000  # pages, slides or sheets read per document
    extract_seconds: float = 120.0  # seconds one document's extraction may take; it stops with what it has
    extract_memory_mb: int = 1024  # MiB of address space one extraction may use (its OCR programs each too)
    ocr_max_pages: int = 20  # pages or images put through OCR per document
    ocr_languages: str = "mal+eng"  # Tesseract models
    ocr_dpi: int = 300  # resolution PDF pages are rendered at for OCR
    log_file: str = "./logs/kmrl-connectors.log"
    log_level: str = "INFO"
    log_format: str = "console"
    audit_log: str = "./logs/audit.log"
    content_rules_file: str = ""
    departments_file: str = ""
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    #: The .env file these settings were read over (none when ``from_env`` was handed an environment).
    env_file: EnvFile = field(default_factory=EnvFile, repr=False, compare=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, dotenv_path: str | None = None) -> Settings:
        """Settings from ``environ`` (default: os.environ over ``.env``). Raises ``SettingError``
        (a ``ConfigError`` and a ``ValueError``) naming the first variable whose value cannot be used."""
        env, env_file = (dict(environ), EnvFile()) if environ is not None else _load_environ(dotenv_path)
        read = EnvReader(env)

        def seconds(name: str, default: float) -> float:
            return read.duration(name, default, unit="seconds", above=0)

        redis_url = read.text("REDIS_URL", cls.redis_url)
        return cls(
            redis_url=redis_url,
            broker_url=read.text("CELERY_BROKER_URL", redis_db_url(redis_url, 0)),
            result_backend=read.text("CELERY_RESULT_BACKEND", redis_db_url(redis_url, 1)),
            redbeat_redis_url=read.text("REDBEAT_REDIS_URL", redis_db_url(redis_url, 2)),
            state_redis_url=read.text("STATE_REDIS_URL", redis_db_url(redis_url, 3)),
            key_prefix=read.text("KMRL_KEY_PREFIX", cls.key_prefix),
            redis_ca_file=read.text("REDIS_CA_FILE"),
            hub_api_url=read.text("HUB_API_URL").rstrip("/"),
            hub_api_token=read.text("HUB_API_TOKEN"),
            hub_outbox_dir=read.text("HUB_OUTBOX_DIR", cls.hub_outbox_dir),
            hub_ca_file=read.text("HUB_CA_FILE"),
            hub_connect_timeout=seconds("HUB_CONNECT_TIMEOUT", cls.hub_connect_timeout),
            hub_read_timeout=seconds("HUB_READ_TIMEOUT", cls.hub_read_timeout),
            hub_fsync=read.flag("HUB_OUTBOX_FSYNC", True),
            hub_text_part=read.flag("HUB_TEXT_PART", cls.hub_text_part),
            hub_text_max_bytes=read.whole("HUB_TEXT_MAX_BYTES", cls.hub_text_max_bytes,
                                          what="a whole number of bytes", minimum=1),
            hub_refusals_to_stop=read.whole("HUB_REFUSALS_TO_STOP", cls.hub_refusals_to_stop,
                                            what="a whole number of documents (0: never stop)", minimum=0),
            hub_uploads_in_flight=read.whole("HUB_UPLOADS_IN_FLIGHT", cls.hub_uploads_in_flight,
                                             what="a whole number of uploads", minimum=1),
            spool_dir=read.text("SPOOL_DIR", cls.spool_dir),
            spool_min_free_mb=read.whole("SPOOL_MIN_FREE_MB", cls.spool_min_free_mb, what="a whole number of MB",
                                         minimum=0),
            deadletter_dir=read.text("DEADLETTER_DIR", cls.deadletter_dir),
            held_dir=read.text("HELD_DIR", cls.held_dir),
            held_retention_days=read.duration("HELD_RETENTION_DAYS", cls.held_retention_days, unit="days", above=0),
            max_document_mb=read.number("MAX_DOCUMENT_MB", cls.max_document_mb, what="a number of MB (0: no cap)",
                                        minimum=0),
            lock_ttl=seconds("LOCK_TTL_SECONDS", cls.lock_ttl),
            cursor_save_every=read.whole("CURSOR_SAVE_EVERY", cls.cursor_save_every, what="a whole number of items"),
            # Below the floor reads as the floor, as it always has (0 runs: dead-letter at once; 1 document).
            item_transient_runs=max(0, read.whole("ITEM_TRANSIENT_RUNS", cls.item_transient_runs,
                                                  what="a whole number of runs")),
            ack_batch_size=max(1, read.whole("ACK_BATCH_SIZE", cls.ack_batch_size, what="a whole number of documents")),
            pool_size=read.whole("POOL_SIZE", cls.pool_size, what="a whole number of processes", minimum=1),
            pool_task_seconds=seconds("POOL_TASK_SECONDS", cls.pool_task_seconds),
            pool_task_memory_mb=read.whole("POOL_TASK_MEMORY_MB", cls.pool_task_memory_mb,
                                           what="a whole number of MB (0: no limit)", minimum=0),
            extract_text=read.flag("EXTRACT_TEXT", cls.extract_text),
            extract_max_chars=read.whole("EXTRACT_MAX_CHARS", cls.extract_max_chars,
                                         what="a whole number of characters", minimum=1),
            extract_max_pages=read.whole("EXTRACT_MAX_PAGES", cls.extract_max_pages, what="a whole number of pages",
                                         minimum=1),
            extract_seconds=seconds("EXTRACT_SECONDS", cls.extract_seconds),
            extract_memory_mb=read.whole("EXTRACT_MEMORY_MB", cls.extract_memory_mb, what="a whole number of MB",
                                         minimum=256),
            ocr_max_pages=read.whole("OCR_MAX_PAGES", cls.ocr_max_pages, what="a whole number of pages (0: no OCR)",
                                     minimum=0),
            ocr_languages=_ocr_languages(read.text("OCR_LANGUAGES", cls.ocr_languages)),
            ocr_dpi=read.whole("OCR_DPI", cls.ocr_dpi, what="a whole number of dots per inch", minimum=72,
                               maximum=600),
            log_file=read.text("LOG_FILE", cls.log_file),
            log_level=read.choice("LOG_LEVEL", cls.log_level.lower(), LOG_LEVELS).upper(),
            log_format=read.choice("LOG_FORMAT", cls.log_format, LOG_FORMATS),
            audit_log=read.text("AUDIT_LOG", cls.audit_log),
            content_rules_file=read.text("CONTENT_RULES_FILE"),
            departments_file=read.text("DEPARTMENTS_FILE"),
            environ=env,
            env_file=env_file,
        )

    @property
    def reader(self) -> EnvReader:
        """Typed reading of any variable of this environment (utils/env.py: the accepted forms and
        the one wording of a ``SettingError``); source- and component-specific settings use it."""
        return EnvReader(self.environ)

    def env(self, name: str, default: str = "") -> str:
        """A source-specific variable (e.g. ``EMAIL_HOST``); ``default`` when unset or empty."""
        return self.reader.text(name, default)

    def env_number(self, name: str, default: float, *, kind: type[int] | type[float] = float, what: str,
                   minimum: float | None = None, above: float | None = None,
                   maximum: float | None = None) -> float:
        """A source- or component-specific number (e.g. ``WEB_INTERNAL_PORT``), read and bounded as the
        service's own settings are; ``SettingError`` (a ``ConfigError``) names the variable otherwise."""
        if kind is int:
            return self.reader.whole(name, int(default), what=what, minimum=minimum, above=above, maximum=maximum)
        return self.reader.number(name, default, what=what, minimum=minimum, above=above, maximum=maximum)

    def env_bool(self, name: str, default: bool = False) -> bool:
        """A flag: 1/true/yes/on or 0/false/no/off (any case); ``SettingError`` for anything else."""
        return self.reader.flag(name, default)

    def env_list(self, name: str, default: str = "") -> list[str]:
        """A comma-separated variable as a list."""
        return self.reader.items(name, default)

    @property
    def max_document_bytes(self) -> int | None:
        """The global size limit in bytes, or None for no limit."""
        return int(self.max_document_mb * 1024 * 1024) if self.max_document_mb > 0 else None

    def __repr__(self) -> str:
        """Every field shown in repr, with secrets masked: fields named like a secret (``*_token``,
        ``*_password``, ``*_secret``, ...) and passwords or secret query values in any URL. ``str()``
        is the same. Fields declared with ``repr=False`` are left out, as dataclasses do."""
        shown = []
        for spec in fields(self):
            if not spec.repr:
                continue
            value = getattr(self, spec.name)
            if is_secret_name(spec.name) and value not in ("", None):
                text = repr(MASK)
            elif isinstance(value, str) and "://" in value:
                text = repr(redact_url(value))
            else:
                text = repr(value)
            shown.append(f"{spec.name}={text}")
        return f"{type(self).__name__}({', '.join(shown)})"


def _ocr_languages(value: str) -> str:
    """Tesseract's ``-l`` syntax (``mal+eng``): model names of letters, digits and underscores joined by '+'."""
    if not re.fullmatch(r"[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*", value):
        raise refuse("OCR_LANGUAGES", value, "Tesseract model names joined by '+', such as mal+eng")
    return value


_cached: Settings | None = None


def get_settings(*, reload: bool = False) -> Settings:
    """The process-wide settings, read once (``reload=True`` reads the environment again)."""
    global _cached
    if _cached is None or reload:
        _cached = Settings.from_env()
    return _cached
