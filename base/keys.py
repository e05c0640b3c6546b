"""The Redis key schema: every kind of key the service writes, one builder each, and its version.

Every module builds its keys here (through ``KeySchema``, usually ``StateStore.keys``); nothing
else spells a key. All keys start with the prefix (``KMRL_KEY_PREFIX``, default ``kmrl:``), so
several deployments can share one Redis database. README's "Redis" section lists what bounds
each kind.

| kind           | key                                   | type   | holds                                              |
|----------------|---------------------------------------|--------|----------------------------------------------------|
| cursor         | cursor:{connector}:{scope}            | string | the connector's opaque cursor, as JSON             |
| item           | item:{connector}:{scope}              | hash   | source_id -> {"v": version, "sha256", "hub_id",    |
|                |                                       |        | optional "held", optional "loc"}                   |
| group          | group:{connector}:{scope}             | hash   | group -> JSON list of the source_ids listed in it  |
| resync         | resync:{connector}:{scope}            | hash   | "" -> resync id; source_id -> "" for each listed   |
| content        | content:{sha256}                      | string | the Hub's document id                              |
| status         | status:{connector}:{scope}            | hash   | last run times, counts, last error, state          |
| history        | history:{connector}:{scope}           | list   | recent run summaries (JSON, newest first)          |
| lock           | lock:{connector}:{scope}              | string | lease token (SET NX PX)                            |
| trigger        | trigger:{connector}:{scope}           | string | a run asked for between ticks: queued or parked    |
| failing        | failing:{connector}:{scope}           | hash   | source_id -> runs in which its download failed     |
| deadletter     | deadletter:{connector}                | hash   | entry id -> dead-letter entry (JSON)               |
| held           | held:{connector}                      | hash   | entry id -> held-document entry (JSON)             |
| recent         | recent                                | list   | the last documents settled (JSON, newest first)    |
| daily          | daily:{source}:{YYYY-MM-DD}           | hash   | the day's totals (IST) by kind, language, dept.    |
| throttle       | throttle:{service}:{tenant}           | string | Unix time before which nobody calls the service    |
| metrics        | metrics:counters / metrics:gauges     | hash   | "name|label=value,..." -> number                   |
| histograms     | metrics:histograms                    | hash   | bucket counts and sums (base/metric_buffer.py)     |
| scopes         | scopes:{source}:{instance}            | string | the instance's scope list (JSON), a shared cache   |
| health         | health                                | string | the last health report (JSON)                      |
| subscription   | subscription:{drive}                  | hash   | the drive's Graph subscription: id, expires, ...   |
| subscriptions  | subscriptions                         | hash   | Graph subscription id -> drive id                  |
| whatsapp       | whatsapp:inbox                        | stream | inbound WhatsApp media not yet delivered           |
| whatsapp seen  | whatsapp:seen:{wamid}                 | string | the stream entry a wamid was queued as             |
| schema         | schema:version                        | string | the schema version the state is in                 |
| schema lock    | schema:migrating                      | string | held by the one process migrating (SET NX PX)      |
| service        | service:workers                       | string | set while some worker is alive (the start sync)    |
| watcher        | watcher:{name}                        | hash   | a watcher's state, mode, since, last event, host   |
| watcher lease  | lock:watcher:{name}                   | string | lease token of the process watching (SET NX PX)    |

Connector and source names never contain ``:``; scopes may (a scope is the rest of the key).
"""

from __future__ import annotations

from config.settings import Settings

#: The version of the schema above. Version 1 is the state written before the version was stored
#: (up to e3367a7: the same key names, no ``schema:version``); version 3 added ``held:{connector}``
#: and the ``held`` field of an item record; base/schema.py migrates to this one.
SCHEMA_VERSION = 3

#: The prefix of every key unless ``KMRL_KEY_PREFIX`` says otherwise (the setting's default).
DEFAULT_PREFIX = Settings.key_prefix


class KeySchema:
    """The keys under one prefix. Builders take the parts of a key and return the full key."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix

    def join(self, *parts: str) -> str:
        """The prefix, then ``parts`` joined by ``:`` (what every builder below returns)."""
        return self.prefix + ":".join(parts)

    # -- per scope ----------------------------------------------------------------------------------
    def cursor(self, connector: str, scope: str) -> str:
        return self.join("cursor", connector, scope)

    def items(self, connector: str, scope: str) -> str:
        return self.join("item", connector, scope)

    def status(self, connector: str, scope: str) -> str:
        return self.join("status", connector, scope)

    def history(self, connector: str, scope: str) -> str:
        return self.join("history", connector, scope)

    def lock(self, connector: str, scope: str) -> str:
        return self.join("lock", connector, scope)

    def trigger(self, connector: str, scope: str) -> str:
        """A run asked for between ticks (base/triggers.py): ``queued`` or ``parked``."""
        return self.join("trigger", connector, scope)

    def failing(self, connector: str, scope: str) -> str:
        return self.join("failing", connector, scope)

    def groups(self, connector: str, scope: str) -> str:
        """Group -> JSON list of the source_ids listed in it (e.g. a work order's doclinks)."""
        return self.join("group", connector, scope)

    def resync(self, connector: str, scope: str) -> str:
        """The source_ids a full re-enumeration of the scope (a resync) has listed so far (base/resync.py)."""
        return self.join("resync", connector, scope)

    #: The kinds keyed by (connector, scope): what a scope leaves behind.
    SCOPE_KINDS = ("cursor", "item", "status", "history", "lock", "failing", "group", "trigger", "resync")

    def scope_key(self, kind: str, connector: str, scope: str) -> str:
        """The ``kind`` key (one of ``SCOPE_KINDS``) of (connector, scope)."""
        if kind not in self.SCOPE_KINDS:
            raise ValueError(f"{kind!r} is not a per-scope key kind ({', '.join(self.SCOPE_KINDS)})")
        return self.join(kind, connector, scope)

    def scope_pattern(self, kind: str, connector: str | None = None) -> str:
        """A SCAN pattern for the ``kind`` keys of every scope (of ``connector`` when given)."""
        return self.join(kind, connector or "*", "*")

    def parse_scope_key(self, kind: str, key: str) -> tuple[str, str]:
        """(connector, scope) of a ``kind`` key built by ``scope_key``."""
        head = self.join(kind, "")
        if not key.startswith(head):
            raise ValueError(f"{key!r} is not a {kind} key under {self.prefix!r}")
        connector, _, scope = key[len(head):].partition(":")
        return connector, scope

    # -- per connector, per content, per service ------------------------------------------------------
    def dead_letters(self, connector: str) -> str:
        return self.join("deadletter", connector)

    def dead_letters_pattern(self) -> str:
        return self.join("deadletter", "*")

    def connector_of_dead_letters(self, key: str) -> str:
        """The connector whose dead-letter hash ``key`` is."""
        return key[len(self.join("deadletter", "")):]

    def held(self, connector: str) -> str:
        return self.join("held", connector)

    def held_pattern(self) -> str:
        return self.join("held", "*")

    def connector_of_held(self, key: str) -> str:
        """The connector whose held-document hash ``key`` is."""
        return key[len(self.join("held", "")):]

    def content(self, sha256: str) -> str:
        return self.join("content", sha256)

    def daily(self, source: str, day: str) -> str:
        """A source's totals for one day (``YYYY-MM-DD`` in IST; base/recent.py)."""
        return self.join("daily", source, day)

    def throttle(self, service: str, tenant: str) -> str:
        return self.join("throttle", service, tenant or "default")

    def scopes(self, source: str, instance: str) -> str:
        return self.join("scopes", source, instance)

    def graph_subscription(self, drive: str) -> str:
        """The SharePoint drive's Graph change-notification subscription (connectors/sharepoint_subscriptions.py)."""
        return self.join("subscription", drive)

    def graph_subscription_ids(self) -> str:
        """Graph subscription id -> drive id, for lifecycle notifications (which name no resource)."""
        return self.join("subscriptions")

    # -- service-wide -------------------------------------------------------------------------------
    def counters(self) -> str:
        return self.join("metrics", "counters")

    def gauges(self) -> str:
        return self.join("metrics", "gauges")

    def histograms(self) -> str:
        """Histogram buckets and sums (base/metric_buffer.py has the field format)."""
        return self.join("metrics", "histograms")

    def health(self) -> str:
        return self.join("health")

    def recent(self) -> str:
        """The recent-documents record (base/recent.py)."""
        return self.join("recent")

    def whatsapp_inbox(self) -> str:
        return self.join("whatsapp", "inbox")

    def whatsapp_seen_prefix(self) -> str:
        """The prefix of ``whatsapp:seen:{wamid}`` (the inbox's Lua script appends the wamid)."""
        return self.join("whatsapp", "seen", "")

    def whatsapp_seen(self, wamid: str) -> str:
        return self.whatsapp_seen_prefix() + wamid

    def schema_version(self) -> str:
        return self.join("schema", "version")

    def schema_migrating(self) -> str:
        return self.join("schema", "migrating")

    def workers_alive(self) -> str:
        """Refreshed by every live worker; a worker that finds it absent is the service's first."""
        return self.join("service", "workers")

    def watcher(self, name: str) -> str:
        """A watcher's published state (watchers/board.py); ``watcher("*")`` is a SCAN pattern."""
        return self.join("watcher", name)

    def watcher_lease(self, name: str) -> str:
        """The lease of the one process that watches ``name`` (a ``lock`` key, outside any scope)."""
        return self.join("lock", "watcher", name)

    def everything(self) -> str:
        """A SCAN pattern for every key under the prefix."""
        return self.prefix + "*"
