"""Fake sources for scheduler, worker and CLI tests, configured from settings like the real ones.

Each fake reads ``{NAME}_*`` variables through ``Settings.env`` so a worker in another process
(given the same environment) builds exactly the same connector:

- ``{NAME}_INSTANCES``: comma-separated instance ids (default: one unnamed instance);
- ``{NAME}_SCOPES``: comma-separated scopes per instance (default ``a``); with instances, each
  scope is named ``{instance}-{scope}`` so scopes stay unique within the source;
- ``{NAME}_FILES``: files per scope (default 3); ``{NAME}_DELAY``: seconds spent reading each file;
- ``{NAME}_HOLD_AFTER``: a run that has handed over this many changes stops there (counting
  ``held``) until a test calls ``release_held_runs``, so a test can act while a run is surely under
  way instead of guessing how long it lasts (unset: never);
- ``{NAME}_EXTRA``: more files by file name (``extra-{name}`` ids), each with the text
  ``{NAME}_EXTRA_TEXT`` for enrichment (default none); ``{NAME}_DELETED``: source ids reported as
  deleted after them;
- ``{NAME}_MODE`` (``fakeauth``: ``auth`` unless set): ``auth`` (credentials refused at connect and
  in the health check), ``config`` (the settings cannot build it), ``throttled`` (the source asks
  for a 10-minute pause at connect), ``transient:N`` (the first N connects fail as unreachable).

Counters in Redis (``{prefix}test:{name}:{what}``) record connects, scope listings and run starts,
so tests can tell how often a worker really called the source.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from base.contract import Checkpoint, HealthResult, Item, ItemFailure
from base.state import StateStore
from config.settings import Settings
from connectors.registry import Source
from tests.helpers import FakeFile, ListConnector, fake_files
from utils.errors import AuthError, ConfigError, ThrottledError, TransientError


class FakeSource(ListConnector):
    """A ListConnector built from settings, with failure modes and call counters."""

    name = "fake"
    #: The mode when ``{NAME}_MODE`` is unset.
    default_mode = ""

    def __init__(self, files: Mapping[str, list[FakeFile]], *, delay: float = 0.0, mode: str = "",
                 instance_id: str = "", hold_after: int | None = None, **kwargs: Any) -> None:
        super().__init__(files, **kwargs)
        self.delay = delay
        self.mode = mode
        self.hold_after = hold_after
        if instance_id:
            self.instance_id = instance_id

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> list[FakeSource]:
        prefix = cls.name.upper()
        mode = settings.env(f"{prefix}_MODE", cls.default_mode)
        if mode == "config":
            raise ConfigError(f"{prefix}_URL is not set (the fake source's settings are incomplete)")
        count = int(settings.env(f"{prefix}_FILES", "3"))
        scopes = settings.env_list(f"{prefix}_SCOPES", "a")
        instances = settings.env_list(f"{prefix}_INSTANCES") or [""]
        built = []
        for instance in instances:
            names = [f"{instance}-{s}" if instance else s for s in scopes]
            files = {name: [*fake_files(count, prefix=f"{cls.name}-{name}"),
                            *(FakeFile(f"extra-{n}", f"{name} {n}".encode(), filename=n,
                                       text=settings.env(f"{prefix}_EXTRA_TEXT"))
                              for n in settings.env_list(f"{prefix}_EXTRA")),
                            *(FakeFile(d, b"", version="gone", deleted=True)
                              for d in settings.env_list(f"{prefix}_DELETED"))]
                     for name in names}
            hold_after = settings.env(f"{prefix}_HOLD_AFTER", "")
            built.append(cls(files, delay=float(settings.env(f"{prefix}_DELAY", "0")), mode=mode,
                             instance_id=instance, hold_after=int(hold_after) if hold_after else None,
                             settings=settings, **kwargs))
        return built

    def count(self, what: str) -> int:
        return int(self.state.redis.incr(self.state.key("test", self.name, what)))

    def connect(self, credentials: Mapping[str, Any]) -> AbstractContextManager[None]:
        return self._connect(credentials)

    @contextmanager
    def _connect(self, credentials: Mapping[str, Any]) -> Iterator[None]:
        attempt = self.count("connects")
        if self.mode == "auth":
            raise AuthError(f"the {self.name} source refused the password for user ops")
        if self.mode == "throttled":
            raise ThrottledError(self.name, time.time() + 600)
        if self.mode.startswith("transient:") and attempt <= int(self.mode.split(":")[1]):
            raise TransientError(f"{self.name} source unreachable (attempt {attempt})")
        self.credentials = credentials
        yield

    def scopes(self) -> list[str]:
        self.count("scope_listings")
        return super().scopes()

    def list_changes(self, scope: str, cursor: Any) -> Iterator[Item | ItemFailure | Checkpoint]:
        self.count("runs")
        for handed, change in enumerate(super().list_changes(scope, cursor)):
            if handed == self.hold_after:
                self._hold()
            if self.delay:
                time.sleep(self.delay)
            yield change

    def _hold(self) -> None:
        """Waits (holding the scope's lease, its heartbeat running) until ``release_held_runs``."""
        self.count("held")
        while not self.state.redis.exists(self.state.key("test", self.name, "released")):
            time.sleep(0.05)

    def health_check(self, credentials: Mapping[str, Any] | None = None) -> HealthResult:
        if self.mode == "auth":
            return HealthResult(False, "auth_failed", f"the {self.name} source refused the password for user ops")
        return HealthResult(True, "healthy", f"{len(self.files)} scopes answer")


class FakeAuthSource(FakeSource):
    """A source whose credentials are always refused."""

    name = "fakeauth"
    default_mode = "auth"


class FakeFlakySource(FakeSource):
    name = "fakeflaky"


def release_held_runs(state: StateStore, name: str) -> None:
    """Lets every run of the fake source ``name`` held by ``{NAME}_HOLD_AFTER`` go on (and later runs pass)."""
    state.redis.set(state.key("test", name, "released"), "1")


#: The fakes as registry rows (short limits so time budgets show within a test).
FAKE_SOURCES = (
    Source("fake", "tests.scheduler_fakes:FakeSource", sync_minutes=5, soft_time_limit=60, time_limit=90),
    Source("fakeauth", "tests.scheduler_fakes:FakeAuthSource", sync_minutes=5, soft_time_limit=60, time_limit=90),
    Source("fakeflaky", "tests.scheduler_fakes:FakeFlakySource", sync_minutes=5, soft_time_limit=60,
           time_limit=90),
)
