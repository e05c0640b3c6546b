"""Which sources exist, whether each is configured, and how to build its connectors from settings.

A source is one row of ``SOURCES``: its name, where its connector class lives (imported only when
the source is used, so a missing optional dependency or a broken module stops that source alone),
the variables whose presence means an operator configured it, how often it syncs and how long one
scope's run may take. A new source is one new file in connectors/ plus one row here.

The table is a value: ``SOURCES`` is the service's, read-only. Whoever wires the service (the
scheduler's Service, the CLI's) holds the table it uses, ``SOURCES`` unless told otherwise; a plug-in or
a test hands its own, made with ``sources_with``, instead of changing the service's.

A source may have several connector instances (several mail accounts, one SharePoint connector
per site). A connector class declares that by a classmethod ``all_from_settings(settings, **kw)``
returning a list, or by ``from_settings`` returning a list; otherwise ``from_settings`` builds one.
An instance is named by its ``instance_id`` attribute when it has one, else by its position.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from base.base_connector import BaseConnector
from base.contract import HealthResult, HealthState
from base.hub_client import Hub
from base.state import StateStore
from config.settings import Settings
from utils.errors import ConfigError
from utils.logging import get_logger, mask_text
from utils.ttl_cache import TtlCache

log = get_logger(__name__)


class SourceUnavailable(ConfigError):
    """The source's connector module could not be imported or its class is missing."""


@dataclass(frozen=True)
class Source:
    """One source the service can sync.

    name: the connector's ``name`` ("email"); also the prefix of its interval variable.
    target: ``"module:Class"`` of the connector, imported on first use.
    markers: variables any one of which (set and non-empty) means the source is configured;
        empty means always configured (test and plug-in sources).
    sync_minutes: default minutes between ticks; ``{NAME}_SYNC_MINUTES`` overrides, 0 disables.
    soft_time_limit / time_limit: one scope run's Celery soft and hard limits, in seconds.
    parts: what the service's wiring hands this source's connectors besides the state store, the Hub
        and the source clients, by the wiring's attribute name (``inbox``: the WhatsApp inbox stream).
    """

    name: str
    target: str
    markers: tuple[str, ...] = ()
    sync_minutes: int = 15
    soft_time_limit: int = 240  # seconds
    time_limit: int = 280  # seconds
    parts: tuple[str, ...] = ()

    @property
    def minutes_variable(self) -> str:
        """The variable overriding ``sync_minutes``."""
        return f"{self.name.upper()}_SYNC_MINUTES"

    def interval_minutes(self, settings: Settings) -> int:
        """Minutes between ticks from settings (0: no periodic sync). Raises SettingError (a ConfigError)
        naming the variable and the value when it is not a whole number of minutes, 0 or more."""
        return int(settings.reader.duration(self.minutes_variable, self.sync_minutes, unit="minutes", whole=True,
                                            minimum=0))

    def is_configured(self, settings: Settings) -> bool:
        return not self.markers or any(settings.env(name) for name in self.markers)


#: The sources of the service (read-only); time limits from ../shared/reference/celery-reliability.md.
SOURCES: Mapping[str, Source] = MappingProxyType({s.name: s for s in (
    Source("email", "connectors.email_connector:EmailConnector",
           ("EMAIL_HOST", "EMAIL_USER", "EMAIL_ACCOUNTS_FILE"), sync_minutes=5, soft_time_limit=240, time_limit=280),
    Source("whatsapp", "connectors.whatsapp_connector:WhatsAppConnector",
           ("WHATSAPP_ACCESS_TOKEN", "WHATSAPP_PHONE_NUMBER_ID"), sync_minutes=10, soft_time_limit=480,
           time_limit=540, parts=("inbox",)),
    Source("maximo", "connectors.maximo_connector:MaximoConnector",
           ("MAXIMO_URL",), sync_minutes=15, soft_time_limit=780, time_limit=840),
    Source("sharepoint", "connectors.sharepoint_connector:SharePointConnector",
           ("SHAREPOINT_URL", "SHAREPOINT_CLIENT_ID", "SHAREPOINT_SITES"), sync_minutes=30, soft_time_limit=1500,
           time_limit=1740),
)})

_not_configured_logged: set[str] = set()


def sources_with(*extra: Source, table: Mapping[str, Source] = SOURCES) -> Mapping[str, Source]:
    """A new read-only table: ``table`` (default the service's) plus ``extra`` (a plug-in's or a test's
    sources), in that order; an extra source named like one in ``table`` replaces it."""
    return MappingProxyType({**table, **{source.name: source for source in extra}})


def get_source(name: str, sources: Mapping[str, Source] = SOURCES) -> Source:
    """The source called ``name`` in ``sources``; ConfigError naming the known ones otherwise."""
    try:
        return sources[name]
    except KeyError:
        raise ConfigError(f"unknown source {name!r}; known sources: {', '.join(sorted(sources))}") from None


def configured_sources(settings: Settings, *, names: Iterable[str] | None = None,
                       sources: Mapping[str, Source] = SOURCES) -> list[str]:
    """The sources (of ``names``, default all of ``sources``) whose settings are present, in table order.

    Each unconfigured source is logged once per process (``source_not_configured``) and skipped.
    """
    wanted = list(names) if names is not None else list(sources)
    configured = []
    for name in wanted:
        source = get_source(name, sources)
        if source.is_configured(settings):
            configured.append(name)
        elif name not in _not_configured_logged:
            _not_configured_logged.add(name)
            log.info("source_not_configured", source=name, set_any_of=",".join(source.markers))
    return configured


def connector_class(source: Source) -> type[BaseConnector]:
    """Imports the source's connector class; SourceUnavailable (a ConfigError) when it cannot."""
    module_name, _, class_name = source.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import failure must stop this source only
        raise SourceUnavailable(f"{source.name}: cannot import {module_name} ({type(exc).__name__}: {exc})") from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseConnector)):
        raise SourceUnavailable(f"{source.name}: {module_name} has no connector class {class_name}")
    return cls


def build_connectors(source: str, settings: Settings, *, state: StateStore | None = None,
                     hub: Hub | None = None, cache: TtlCache | None = None,
                     sources: Mapping[str, Source] = SOURCES, **handed: Any) -> list[BaseConnector]:
    """Every connector instance of ``source`` (a row of ``sources``), built from ``settings`` (sharing
    ``state``, ``hub``, ``cache`` and what else the wiring hands in: ``clients``, and the parts the
    source's row names; each instance builds its own of those not given).

    Raises ConfigError (or SourceUnavailable) when the source cannot be built; nothing else leaks.
    """
    spec = get_source(source, sources)
    cls = connector_class(spec)
    kwargs: dict[str, Any] = {"state": state, "hub": hub, "cache": cache, **handed}
    try:
        factory = getattr(cls, "all_from_settings", None)
        built: Any = factory(settings, **kwargs) if callable(factory) else cls.from_settings(  # type: ignore[attr-defined]
            settings, **kwargs)
    except ConfigError:
        raise
    except Exception as exc:  # a broken connector becomes this source's config error
        raise ConfigError(f"{source}: building the connector failed ({type(exc).__name__}: "
                          f"{mask_text(str(exc))})") from exc
    instances = list(built) if isinstance(built, (list, tuple)) else [built]
    if not instances:
        raise ConfigError(f"{source}: the settings describe no connector instance")
    return instances


def instance_id(connector: BaseConnector, index: int) -> str:
    """A short name of one instance: its ``instance_id`` attribute, else its position."""
    return str(getattr(connector, "instance_id", "") or index)


def find_instance(connectors: list[BaseConnector], wanted: str) -> BaseConnector:
    """The instance named ``wanted`` (see ``instance_id``); ConfigError when none is."""
    for index, connector in enumerate(connectors):
        if instance_id(connector, index) == wanted:
            return connector
    raise ConfigError(f"no {connectors[0].name if connectors else ''} connector instance {wanted!r} in the settings")


def probe(connector: BaseConnector, credentials: Mapping[str, Any] | None = None) -> HealthResult:
    """``connector.health_check()``, turning anything it raises into a failed result (never raises)."""
    try:
        return connector.health_check(credentials)
    except ConfigError as exc:
        return HealthResult(False, exc.state, mask_text(str(exc)))
    except Exception as exc:  # noqa: BLE001 - a check must report, not crash the caller
        return HealthResult(False, HealthState.DEGRADED, mask_text(f"{type(exc).__name__}: {exc}"))

