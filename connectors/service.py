"""``Service``: the service's wiring in one process, the one thing every entry point shares.

A worker (scheduler.py), the CLI (cli.py) and the web process (web/) each hold one ``Service``. It
holds the settings and the table of sources it runs with, and builds, on first use, what the
connectors are handed: the state store, the Hub, the ``SourceClients`` (HTTP clients and the
throttle gates every worker shares), the cache its connectors keep between runs, and the parts a
source's row in the registry names (the WhatsApp ``inbox``). Building late means a prefork child
opens its own Redis connections, and ``check`` can report their failures.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis

from base.base_connector import BaseConnector
from base.contract import SourceClients
from base.hub_client import Hub, hub_from_settings
from base.state import StateStore
from config.settings import Settings
from connectors.registry import SOURCES, Source, build_connectors, get_source
from connectors.whatsapp_inbox import Inbox
from utils.ttl_cache import TtlCache


class Service:
    """Settings and sources, and the state store, Hub, source clients and inbox built on first use.

    settings: the service settings (default: ``Settings.from_env()``, read on first use).
    sources: the table of sources (default: the service's, ``registry.SOURCES``); a test or a
        plug-in hands its own, made with ``registry.sources_with``.
    redis_client: the state Redis connection to use (default: one opened from STATE_REDIS_URL on
        first use); the web process gives its own, with short timeouts.
    """

    def __init__(self, settings: Settings | None = None, *, sources: Mapping[str, Source] = SOURCES,
                 redis_client: redis.Redis | None = None) -> None:
        self.sources = sources
        self._redis_client = redis_client
        self.reset(settings)

    def reset(self, settings: Settings | None, *, sources: Mapping[str, Source] | None = None) -> None:
        """Uses ``settings`` from now on (None: the environment's, read on first use) and ``sources``
        when given; everything else is built again on next use, and the connectors' cache starts empty."""
        self._settings = settings
        if sources is not None:
            self.sources = sources
        self._state: StateStore | None = None
        self._hub: Hub | None = None
        self._inbox: Inbox | None = None
        #: What the connectors of this process remember between runs (a site's resolved libraries).
        self.cache = TtlCache()

    @property
    def settings(self) -> Settings:
        """The settings given, or ``Settings.from_env()`` read on first use (SettingError when a
        variable cannot be used; it is read again on the next use then)."""
        if self._settings is None:
            self._settings = Settings.from_env()
        return self._settings

    @property
    def state(self) -> StateStore:
        """The state store (cursors, items, status, leases, throttles, dead letters, metrics)."""
        if self._state is None:
            self._state = (StateStore(self._redis_client, prefix=self.settings.key_prefix)
                           if self._redis_client is not None else StateStore.from_settings(self.settings))
        return self._state

    @property
    def redis(self) -> redis.Redis:
        """The state Redis connection (the state store's)."""
        return self.state.redis

    @property
    def hub(self) -> Hub:
        """Where documents go: the Hub's HTTP API, or the local outbox when HUB_API_URL is unset."""
        if self._hub is None:
            self._hub = hub_from_settings(self.settings, gate=self.clients.gate("hub"))
        return self._hub

    @property
    def clients(self) -> SourceClients:
        """HTTP clients and throttle gates for the connectors, the gates kept in the state store."""
        return SourceClients(self.state.throttle_gate)

    @property
    def inbox(self) -> Inbox:
        """The WhatsApp webhook's inbox stream, on the state Redis under the key prefix."""
        if self._inbox is None:
            self._inbox = Inbox.of_store(self.state)
        return self._inbox

    def connectors(self, source: str) -> list[BaseConnector]:
        """Every configured connector of ``source``, sharing this service's state, Hub, cache and source
        clients, and handed the parts its registry row names. Raises ConfigError when it cannot be built."""
        parts: dict[str, Any] = {part: getattr(self, part) for part in get_source(source, self.sources).parts}
        return build_connectors(source, self.settings, state=self.state, hub=self.hub, cache=self.cache,
                                sources=self.sources, clients=self.clients, **parts)
