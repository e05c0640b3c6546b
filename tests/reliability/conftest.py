"""Fixtures of the fault-injection suite: its size, its seed, its Redis database and its simulators.

Size: ``make test`` runs the reduced suite (``KILL_ROUNDS`` = 3 kill rounds of a 200-document sync per
source); ``make reliability`` sets KMRL_RELIABILITY_FULL=1 for the full one (20 rounds of 1,000
documents). Both run the same tests; only the numbers differ.

Seed: every random choice (kill moments) comes from one ``random.Random``; a failure message names
the seed, and KMRL_RELIABILITY_SEED=<n> replays it.

State: Redis test database 9 (tests/conftest.py), flushed at the start of each test.
"""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.dovecot import DovecotServer, require_dovecot
from sandbox.hub import RunningHub
from sandbox.tls import CertAuthority
from tests.conftest import flushed_db_url
from tests.reliability.gate import Gate, gated_hub

#: True under ``make reliability`` (KMRL_RELIABILITY_FULL=1).
FULL = os.environ.get("KMRL_RELIABILITY_FULL", "").strip().lower() in ("1", "true", "yes")
#: SIGKILL rounds per source, and the size of the sync they interrupt.
KILL_ROUNDS = 20 if FULL else 3
KILL_DOCUMENTS = 1000 if FULL else 200
#: Documents of the other fault tests (Redis and Dovecot restarts, Hub faults, expiries).
FAULT_DOCUMENTS = 300 if FULL else 60
#: The Redis test database of this suite.
RELIABILITY_DB = 9
#: The Hub token of this suite's Hub simulators (a sandbox value, scanned for by the leak test).
HUB_TOKEN = "reliability-hub-token-4d8c"


@pytest.fixture
def seed() -> int:
    """The seed of this test's random choices (KMRL_RELIABILITY_SEED replays one)."""
    fixed = os.environ.get("KMRL_RELIABILITY_SEED", "").strip()
    return int(fixed) if fixed else secrets.randbelow(2**31)


@pytest.fixture
def rng(seed: int) -> random.Random:
    return random.Random(seed)


@pytest.fixture
def state_url() -> str:
    """Redis test database 9, flushed."""
    return flushed_db_url(RELIABILITY_DB)


@pytest.fixture
def _gated_hub(tmp_path: Path) -> Iterator[tuple[RunningHub, Gate]]:
    with gated_hub(token=HUB_TOKEN, data_dir=tmp_path / "hub") as running:
        yield running


@pytest.fixture
def rel_hub(_gated_hub: tuple[RunningHub, Gate]) -> RunningHub:
    """A Hub simulator for one test, counting uploads per idempotency key."""
    return _gated_hub[0]


@pytest.fixture
def upload_gate(_gated_hub: tuple[RunningHub, Gate]) -> Gate:
    """The gate in front of ``rel_hub``'s upload endpoint (open unless a test closes it)."""
    return _gated_hub[1]


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return CertAuthority(str(tmp_path_factory.mktemp("reliability-ca")))


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """One Dovecot for the suite; each email bed is its own mailbox user."""
    require_dovecot()
    with DovecotServer() as server:
        yield server
