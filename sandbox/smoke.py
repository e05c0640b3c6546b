"""One smoke test per connector, run against its simulator (or a private Dovecot for email):

    python -c "from test_connectors import test_email_connector; test_email_connector()"

Each function starts the source's simulator and the Knowledge Hub simulator (sandbox/stack.py),
seeds the source's part of the KMRL sample set (sandbox/samples.py), builds the connector from the
same settings the service would read, runs its ``sync_documents`` in this process, prints what it
ingested (filename, size, language, department), stops everything, and raises AssertionError when
nothing was ingested (or when the source cannot be simulated here, e.g. Dovecot is missing).

State lives in Redis test database 10 of the server at REDIS_URL (default 127.0.0.1:6379) under a
key prefix of its own (``kmrl-smoke-<random>:``), and only those keys are removed afterwards, so a
smoke test never disturbs anything else in that database.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis

from base.contract import ScopeState
from base.hub_client import hub_from_settings
from base.runner import SyncSummary
from base.state import StateStore
from config.settings import redis_db_url
from connectors import registry
from sandbox.report import totals_by_source
from sandbox.samples import kmrl_samples
from sandbox.stack import RedisLayout, Stack, redis_answers
from utils.logging import configure_logging
from utils.tables import render_table

#: The Redis test database of the smoke tests (tests/conftest.py lists the others).
SMOKE_DB = 10
#: The sample set's seed: the same documents every time.
SMOKE_SEED = 2024


def test_email_connector() -> list[dict[str, Any]]:
    """Email: attachments of the sample mails, over IMAPS from a private Dovecot."""
    return run_smoke("email")


def test_maximo_connector() -> list[dict[str, Any]]:
    """Maximo: doclinks of the sample work orders, from the OSLC API simulator over HTTPS."""
    return run_smoke("maximo")


def test_sharepoint_connector() -> list[dict[str, Any]]:
    """SharePoint: the sample libraries' files, from the Graph + Entra simulator over HTTPS."""
    return run_smoke("sharepoint")


def test_whatsapp_connector() -> list[dict[str, Any]]:
    """WhatsApp: the sample media, posted as signed webhooks to the web app, then downloaded."""
    return run_smoke("whatsapp")


def run_smoke(source: str, *, seed: int = SMOKE_SEED) -> list[dict[str, Any]]:
    """The smoke test of ``source``; returns the Hub metadata of what it ingested (see the module docstring)."""
    server = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    state_url = redis_db_url(server, SMOKE_DB)
    if not redis_answers(state_url):
        raise AssertionError(f"{source} smoke test: no Redis answers at {server.rsplit('@', 1)[-1]} "
                             "(start redis-server or set REDIS_URL)")
    prefix = f"kmrl-smoke-{uuid.uuid4().hex[:10]}:"
    root = Path(tempfile.mkdtemp(prefix=f"kmrl-smoke-{source}-"))
    stack = Stack(root=root, redis=RedisLayout(state_url, state_url, state_url, state_url), sources=(source,),
                  key_prefix=prefix)
    started = time.monotonic()
    try:
        with stack:
            if source in stack.skipped:
                raise AssertionError(f"{source} smoke test cannot run here: {stack.skipped[source]}")
            stack.seed(kmrl_samples(seed))
            summaries = _sync(stack, source)
            ingested = [doc["metadata"] for doc in stack.running.hub.state()["documents"].values()
                        if doc["metadata"].get("source") == source]
            _print_report(source, stack, summaries, ingested, time.monotonic() - started)
    finally:
        _forget_keys(state_url, prefix)
        shutil.rmtree(root, ignore_errors=True)
    if not ingested:
        raise AssertionError(f"{source} smoke test ingested nothing: "
                             + "; ".join(f"{s.scope} {s.state} {s.error}" for summary in summaries
                                         for s in summary.scopes))
    return ingested


def _sync(stack: Stack, source: str) -> list[SyncSummary]:
    # The service's own logs go to the stack's folder; the console keeps only warnings.
    settings = replace(stack.settings(), log_level="WARNING")
    configure_logging(log_file=settings.log_file, level="WARNING", console_format="console", force=True)
    state = StateStore.from_settings(settings)
    try:
        hub = hub_from_settings(settings, gate=state.throttle_gate("hub"))
        return [connector.sync_documents() for connector in
                registry.build_connectors(source, settings, state=state, hub=hub)]
    finally:
        state.redis.close()


def _print_report(source: str, stack: Stack, summaries: list[SyncSummary], ingested: list[dict[str, Any]],
                  seconds: float) -> None:
    parts = ", ".join(f"{what} {where}" for what, where in stack.describe())
    print(f"{source} smoke test against {parts}")
    rows = [(m.get("filename"), m.get("size"), m.get("language"), m.get("department")) for m in
            sorted(ingested, key=lambda m: str(m.get("filename")))]
    print(render_table(["FILENAME", "SIZE", "LANGUAGE", "DEPARTMENT"], rows, max_width=70) if rows else
          "  (nothing ingested)")
    runs = [scope.as_dict() for summary in summaries for scope in summary.scopes]
    totals = totals_by_source(runs).get(source, {})
    states = sorted({run["state"] for run in runs}, key=list(ScopeState).index)
    print(f"{source}: {totals.get('fetched', 0)} fetched, {totals.get('new', 0)} new, "
          f"{totals.get('duplicate', 0)} duplicate, {totals.get('failed', 0)} failed in {totals.get('runs', 0)} "
          f"scope runs ({', '.join(states)}); {seconds:.1f} s")


def _forget_keys(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start:start + 500])
    finally:
        client.close()
