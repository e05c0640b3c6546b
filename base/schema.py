"""The schema version of the state in Redis, and the migration that brings older state up to it.

``schema:version`` holds the version the state is in (base/keys.py's ``SCHEMA_VERSION`` once
migrated). State without it is either empty (a new deployment: stamped with the current version)
or written before the version was stored, up to e3367a7: version 1.

``migrate`` runs at worker start and from the CLI. It is idempotent (state already at the current
version costs one GET) and safe when several processes start at once: one takes
``schema:migrating`` (SET NX PX), the others wait for the version to move. State stamped with a
version newer than this code refuses with a ``ConfigError``: an older release must not write
into a schema it does not know (a rollback after an upgrade needs the newer release's own way back).

Migration steps, one function per version, each safe to run again after a crash half-way:

- 1 -> 2: the key names did not change. A cursor, item or content record, status, history, dead
  letter, throttle pause, lease, scope list, health report and the WhatsApp stream with its
  consumer group are read by this code exactly as e3367a7 wrote them: an email cursor without
  ``uid``/``parts_done`` means "between messages", and ``failing:*`` (new in version 2) starts
  empty. The step checks that every key of a kind this code knows has the type it expects
  before stamping the version (a key that has not stops the migration); keys of other kinds
  under the prefix are not the service's: they are counted as "other" and left alone.
- 2 -> 3: ``held:{connector}`` (documents a ``[[hold]]`` content rule kept back) starts empty, and
  an item record may carry a ``held`` field (the item is done, held, not in the Hub); every record
  written before reads as it did. Checked like 1 -> 2, then stamped. The version moves so that an
  older release, which would neither expire held bytes nor know that a held item is not in the
  Hub, refuses this state instead of running on it.

Kinds and fields added at version 3 without moving it, because a version-3 release that does not
know them still reads the state correctly (it leaves them aside): ``group:*`` (the Maximo doclinks
listed per work order), ``resync:*`` (the items a SharePoint resync has listed so far: an older
release resumes the resync without it and, as before, finds no deletions) and the optional ``loc``
field of an item record (a digest of where the item is at its source; a record without it gets one
metadata update the next time its item is listed with the same content, and carries it after).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from base.keys import SCHEMA_VERSION, KeySchema
from base.state import Lease, StateStore
from utils.errors import ConfigError
from utils.logging import get_logger

log = get_logger(__name__)

#: The version of state written before the version was stored (up to e3367a7).
UNVERSIONED = 1
#: How long the migration lock lives if its holder dies; a migration takes well under a second.
MIGRATION_LOCK_MS = 60_000
#: How long a process waits for another one's migration before giving up.
MIGRATION_WAIT_SECONDS = 120.0

#: key kind (the part after the prefix, up to the first ':') -> the Redis type it must have.
KNOWN_KINDS = {
    "cursor": "string", "item": "hash", "content": "string", "status": "hash", "history": "list",
    "lock": "string", "failing": "hash", "group": "hash", "resync": "hash", "deadletter": "hash", "held": "hash",
    "throttle": "string", "metrics": "hash", "scopes": "string", "health": "string", "schema": "string",
    "trigger": "string", "service": "string",
    # Since version 3, no migration needed (an older release counts them as "other" and leaves them).
    "recent": "list", "daily": "hash", "subscription": "hash", "subscriptions": "hash", "watcher": "hash",
}
#: Keys under ``whatsapp:`` and their types.
WHATSAPP_KINDS = {"inbox": "stream", "seen": "string"}


class SchemaTooNew(ConfigError):
    """The state in Redis was written by a newer release than this one."""


class SchemaMismatch(ConfigError):
    """The state holds a key this release does not know how to migrate."""


@dataclass
class MigrationResult:
    """What ``migrate`` found and did: the version before and after, and the keys per kind it checked."""

    before: int
    after: int
    migrated: bool = False
    kinds: dict[str, int] = field(default_factory=dict)


def stored_version(store: StateStore) -> int | None:
    """The version stamped in Redis; None when there is none (see ``current_version``)."""
    raw = store.redis.get(store.keys.schema_version())
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{store.keys.schema_version()} holds {raw!r}, not a schema version") from exc


def current_version(store: StateStore) -> int:
    """The version the state is in: the stamp, or 1 for unstamped state with keys, or the current
    version for a prefix with no key at all (nothing to migrate)."""
    version = stored_version(store)
    if version is not None:
        return version
    for _key in store.redis.scan_iter(match=store.keys.everything(), count=500):
        return UNVERSIONED
    return SCHEMA_VERSION


def _kind_of(keys: KeySchema, key: str) -> tuple[str, str]:
    """(kind, expected type) of a key under ``keys.prefix``; ("", "") when the kind is unknown."""
    rest = key[len(keys.prefix):]
    kind, _, tail = rest.partition(":")
    if kind == "whatsapp":
        sub = tail.partition(":")[0]
        return (f"whatsapp:{sub}", WHATSAPP_KINDS[sub]) if sub in WHATSAPP_KINDS else ("", "")
    return (kind, KNOWN_KINDS[kind]) if kind in KNOWN_KINDS else ("", "")


def check_keys(store: StateStore) -> dict[str, int]:
    """Counts the keys under the prefix by kind ("other" for kinds that are not the service's);
    raises ``SchemaMismatch`` for a key of a known kind but the wrong type (the migration would not
    know what it holds)."""
    counts: Counter[str] = Counter()
    for key in store.redis.scan_iter(match=store.keys.everything(), count=500):
        kind, expected = _kind_of(store.keys, key)
        actual = str(store.redis.type(key))
        if actual == "none":
            continue  # expired meanwhile
        if not kind:
            counts["other"] += 1
            continue
        if actual != expected:
            raise SchemaMismatch(f"Redis key {key!r} is a {actual}, not the {expected} a {kind} key is")
        counts[kind] += 1
    return dict(sorted(counts.items()))


def _from_1_to_2(store: StateStore) -> dict[str, int]:
    """Version 1 (e3367a7) to 2: same keys, same values (module docstring); checked, then stamped."""
    return check_keys(store)


def _from_2_to_3(store: StateStore) -> dict[str, int]:
    """Version 2 to 3: a new kind (``held``) that starts empty, an optional field in item records
    (module docstring); checked, then stamped."""
    return check_keys(store)


#: version -> the step that migrates state in that version to the next one.
STEPS: dict[int, Callable[[StateStore], dict[str, int]]] = {1: _from_1_to_2, 2: _from_2_to_3}


def migrate(store: StateStore, *, wait: float = MIGRATION_WAIT_SECONDS) -> MigrationResult:
    """Brings the state under ``store.prefix`` to ``SCHEMA_VERSION`` (see the module docstring).

    Raises ``SchemaTooNew`` for state newer than this code, ``SchemaMismatch`` for a key it cannot
    migrate, and ``TimeoutError`` when another process's migration did not finish within ``wait``.
    """
    before = current_version(store)
    _refuse_newer(store, before)
    if before == SCHEMA_VERSION:
        if stored_version(store) is None:  # an empty prefix: stamp it, whoever is first
            store.redis.set(store.keys.schema_version(), SCHEMA_VERSION, nx=True)
        return MigrationResult(before, SCHEMA_VERSION)
    lock = Lease(store, store.keys.schema_migrating(), MIGRATION_LOCK_MS / 1000)
    deadline = time.monotonic() + wait
    while not lock.acquire(heartbeat=False):
        # Another process migrates: wait for it to stamp the version (or for its lock to lapse).
        if time.monotonic() > deadline:
            raise TimeoutError(f"another process has held {lock.key} for over {wait:.0f} s")
        time.sleep(0.2)
        if stored_version(store) == SCHEMA_VERSION:
            return MigrationResult(before, SCHEMA_VERSION)
    try:
        version = current_version(store)  # again, under the lock: another process may have finished
        _refuse_newer(store, version)
        kinds: dict[str, int] = {}
        while version < SCHEMA_VERSION:
            kinds = STEPS[version](store)
            version += 1
            store.redis.set(store.keys.schema_version(), version)
            log.info("schema_migrated", prefix=store.prefix, to_version=version, keys=kinds)
        return MigrationResult(before, version, migrated=before < version, kinds=kinds)
    finally:
        lock.release()


def _refuse_newer(store: StateStore, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(f"the state in Redis (prefix {store.prefix!r}) is at schema version {version}, "
                           f"newer than this release's {SCHEMA_VERSION}: run the release that wrote it, "
                           "or point KMRL_KEY_PREFIX / STATE_REDIS_URL elsewhere")
