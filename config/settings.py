"""Settings from the environment and an optional ``.env`` file (python-dotenv).

``Settings.from_env()`` reads the service-wide variables once; source-specific variables are read by
each connector's ``from_settings`` through ``Settings.env``. Every variable is documented in
env.example. Real environment variables win over ``.env``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dotenv import load_dotenv

from utils.errors import ConfigError
from utils.logging import MASK, redact_url

#: The project's root folder (where env.example and config/ live).
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def redis_db_url(url: str, db: int) -> str:
    """``url`` pointing at database ``db`` (any database already in the path is replaced)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def _load_environ(dotenv_path: str | None) -> dict[str, str]:
    path = dotenv_path if dotenv_path is not None else os.environ.get("KMRL_ENV_FILE", ".env")
    if path and os.path.isfile(path):
        # Into os.environ (never over a real variable), so modules that read a variable directly,
        # such as the classifier's DEPARTMENTS_FILE, see .env values too.
        load_dotenv(path, override=False)
    return dict(os.environ)


class SettingError(ConfigError, ValueError):
    """A setting whose value cannot be used; the message names the variable, what it must be and the value.
    A ``ConfigError`` (scope state ``config_error``) and, for callers of ``Settings.from_env``, a ``ValueError``."""


def _number(raw: str, name: str, *, kind: type[int] | type[float], what: str, minimum: float | None = None,
            above: float | None = None, maximum: float | None = None) -> float:
    """``raw`` read as ``kind`` (``what`` says what it counts, e.g. "a number of seconds"); at least ``minimum``,
    more than ``above`` and at most ``maximum`` when given. Raises ``SettingError`` naming ``name`` and the
    value otherwise."""
    try:
        value = kind(raw.strip())
    except ValueError:
        raise SettingError(f"{name} must be {what}, not {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):  # nan, inf: float() takes them
        raise SettingError(f"{name} must be {what}, not {raw!r}")
    if minimum is not None and value < minimum:
        raise SettingError(f"{name} must be at least {minimum:g}, not {raw!r}")
    if above is not None and value <= above:
        raise SettingError(f"{name} must be more than {above:g}, not {raw!r}")
    if maximum is not None and value > maximum:
        raise SettingError(f"{name} must be at most {maximum:g}, not {raw!r}")
    return value


def _as_bool(value: str | None, default: bool) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


#: Words in a setting's name that mark its value as a secret (masked whole in ``repr``).
_SECRET_NAME_WORDS = ("token", "password", "passwd", "secret", "apikey", "api_key", "credential", "private_key",
                      "signing_key", "access_key", "client_key")
def _secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_NAME_WORDS)


def split_list(value: str | None) -> list[str]:
    """A comma-separated setting as a list of stripped, non-empty strings."""
    return [part.strip() for part in (value or "").split(",") if part.strip()]


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
    spool_dir: str = "./var/spool"
    spool_min_free_mb: int = 512  # MiB
    deadletter_dir: str = "./var/deadletter"
    max_document_mb: float = 4096.0  # MiB; 0 means no limit (the spool free-space guard still holds)
    lock_ttl: float = 120.0  # seconds; renewed while a run lasts
    cursor_save_every: int = 50  # items
    item_transient_runs: int = 3  # runs in which one item's download failed transiently before it is dead-lettered
    ack_batch_size: int = 64  # documents acknowledged together by a local outbox (one flush, one Redis trip)
    log_file: str = "./logs/kmrl-connectors.log"
    log_level: str = "INFO"
    log_format: str = "console"
    audit_log: str = "./logs/audit.log"
    content_rules_file: str = ""
    departments_file: str = ""
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, dotenv_path: str | None = None) -> Settings:
        """Settings from ``environ`` (default: os.environ over ``.env``)."""
        env = dict(environ) if environ is not None else _load_environ(dotenv_path)

        def get(name: str, default: str) -> str:
            value = env.get(name)
            return value if value not in (None, "") else default

        def number(name: str, default: float, *, kind: type[int] | type[float], what: str,
                   minimum: float | None = None, above: float | None = None) -> float:
            return _number(get(name, str(default)), name, kind=kind, what=what, minimum=minimum, above=above)

        def seconds(name: str, default: float) -> float:
            return number(name, default, kind=float, what="a number of seconds", above=0)

        redis_url = get("REDIS_URL", cls.redis_url)
        return cls(
            redis_url=redis_url,
            broker_url=get("CELERY_BROKER_URL", redis_db_url(redis_url, 0)),
            result_backend=get("CELERY_RESULT_BACKEND", redis_db_url(redis_url, 1)),
            redbeat_redis_url=get("REDBEAT_REDIS_URL", redis_db_url(redis_url, 2)),
            state_redis_url=get("STATE_REDIS_URL", redis_db_url(redis_url, 3)),
            key_prefix=get("KMRL_KEY_PREFIX", cls.key_prefix),
            redis_ca_file=get("REDIS_CA_FILE", ""),
            hub_api_url=get("HUB_API_URL", "").rstrip("/"),
            hub_api_token=get("HUB_API_TOKEN", ""),
            hub_outbox_dir=get("HUB_OUTBOX_DIR", cls.hub_outbox_dir),
            hub_ca_file=get("HUB_CA_FILE", ""),
            hub_connect_timeout=seconds("HUB_CONNECT_TIMEOUT", cls.hub_connect_timeout),
            hub_read_timeout=seconds("HUB_READ_TIMEOUT", cls.hub_read_timeout),
            hub_fsync=_as_bool(env.get("HUB_OUTBOX_FSYNC"), True),
            spool_dir=get("SPOOL_DIR", cls.spool_dir),
            spool_min_free_mb=int(number("SPOOL_MIN_FREE_MB", cls.spool_min_free_mb, kind=int,
                                         what="a whole number of MB", minimum=0)),
            deadletter_dir=get("DEADLETTER_DIR", cls.deadletter_dir),
            max_document_mb=number("MAX_DOCUMENT_MB", cls.max_document_mb, kind=float,
                                   what="a number of MB (0: no cap)", minimum=0),
            lock_ttl=seconds("LOCK_TTL_SECONDS", cls.lock_ttl),
            cursor_save_every=int(number("CURSOR_SAVE_EVERY", cls.cursor_save_every, kind=int,
                                         what="a whole number of items")),
            item_transient_runs=max(0, int(number("ITEM_TRANSIENT_RUNS", cls.item_transient_runs, kind=int,
                                                  what="a whole number of runs"))),
            ack_batch_size=max(1, int(number("ACK_BATCH_SIZE", cls.ack_batch_size, kind=int,
                                             what="a whole number of documents"))),
            log_file=get("LOG_FILE", cls.log_file),
            log_level=get("LOG_LEVEL", cls.log_level).upper(),
            log_format=get("LOG_FORMAT", cls.log_format),
            audit_log=get("AUDIT_LOG", cls.audit_log),
            content_rules_file=get("CONTENT_RULES_FILE", ""),
            departments_file=get("DEPARTMENTS_FILE", ""),
            environ=env,
        )

    def env(self, name: str, default: str = "") -> str:
        """A source-specific variable (e.g. ``EMAIL_HOST``); ``default`` when unset or empty."""
        value = self.environ.get(name)
        return value if value not in (None, "") else default

    def env_number(self, name: str, default: float, *, kind: type[int] | type[float] = float, what: str,
                   minimum: float | None = None, above: float | None = None,
                   maximum: float | None = None) -> float:
        """A source- or component-specific number (e.g. ``WEB_INTERNAL_PORT``), read and bounded as the
        service's own settings are; ``SettingError`` (a ``ConfigError``) names the variable otherwise."""
        return _number(self.env(name, str(default)), name, kind=kind, what=what, minimum=minimum, above=above,
                       maximum=maximum)

    def env_bool(self, name: str, default: bool = False) -> bool:
        """A boolean variable: 1/true/yes/on are true."""
        return _as_bool(self.environ.get(name), default)

    def env_list(self, name: str, default: str = "") -> list[str]:
        """A comma-separated variable as a list."""
        return split_list(self.env(name, default))

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
            if _secret_name(spec.name) and value not in ("", None):
                text = repr(MASK)
            elif isinstance(value, str) and "://" in value:
                text = repr(redact_url(value))
            else:
                text = repr(value)
            shown.append(f"{spec.name}={text}")
        return f"{type(self).__name__}({', '.join(shown)})"


_cached: Settings | None = None


def get_settings(*, reload: bool = False) -> Settings:
    """The process-wide settings, read once (``reload=True`` reads the environment again)."""
    global _cached
    if _cached is None or reload:
        _cached = Settings.from_env()
    return _cached
