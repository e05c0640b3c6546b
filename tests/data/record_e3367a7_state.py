"""Records the Redis state that commit e3367a7 writes, as the fixture ``e3367a7_state.json``.

Run from a checkout of e3367a7, with that checkout's own environment, against an empty Redis
database (this script empties the three databases it uses around the state one)::

    git worktree add /tmp/e336 e3367a7 && (cd /tmp/e336 && make install)
    cd /tmp/e336 && .venv/bin/python /path/to/tests/data/record_e3367a7_state.py \\
        --redis redis://127.0.0.1:6391 --out /path/to/tests/data/e3367a7_state.json

Every value in the fixture is written by e3367a7's own code: its sandbox stack (Dovecot, Maximo,
Graph, WhatsApp Cloud and the Hub simulators, seeded with the KMRL sample set), its ``kmrl.tick``
and ``kmrl.sync_scope`` tasks run eagerly as a worker runs them, its ``kmrl.health`` task, its web
app taking a second WhatsApp webhook that no run has read yet, a Hub that refuses one document
(a dead letter), its shared throttle gate and a lease left by a worker that died holding it.
The dump keeps each key's type, value and remaining TTL (``dump_keys``); nothing is edited by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

SEED = 2024


def dump_keys(client: redis.Redis, pattern: str = "*") -> list[dict[str, Any]]:
    """Every key matching ``pattern``: {"key", "type", "ttl_ms" (-1: none), "value"} sorted by key.

    A stream's value is {"entries": [[id, {field: value}]], "groups": [{"name", "last_delivered_id",
    "consumers": [names], "pending": [ids]}]}.
    """
    rows: list[dict[str, Any]] = []
    for key in sorted(client.scan_iter(match=pattern, count=500)):
        kind = client.type(key)
        value: Any
        if kind == "string":
            value = client.get(key)
        elif kind == "hash":
            value = dict(sorted(client.hgetall(key).items()))
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "set":
            value = sorted(client.smembers(key))
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            groups = []
            for group in client.xinfo_groups(key):
                name = group["name"]
                pending = client.xpending_range(key, name, min="-", max="+", count=10_000)
                groups.append({"name": name, "last_delivered_id": group["last-delivered-id"],
                               "consumers": sorted(c["name"] for c in client.xinfo_consumers(key, name)),
                               "pending": [[p["message_id"], p["consumer"]] for p in pending]})
            value = {"entries": [[i, f] for i, f in client.xrange(key)], "groups": groups}
        else:
            raise ValueError(f"{key}: a {kind} is not handled")
        rows.append({"key": key, "type": kind, "ttl_ms": int(client.pttl(key)), "value": value})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", required=True, help="a Redis server URL (databases 1-4 are used)")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    sys.path.insert(0, os.getcwd())  # the e3367a7 checkout

    from config.settings import redis_db_url
    from sandbox.samples import SampleSet, kmrl_samples
    from sandbox.stack import RedisLayout, Stack

    layout = RedisLayout(*(redis_db_url(args.redis, db) for db in (1, 2, 3, 4)))
    for url in layout.urls():
        redis.Redis.from_url(url).flushdb()
    root = Path(tempfile.mkdtemp(prefix="e336-state-"))
    first = kmrl_samples(SEED)
    with Stack(root=root, redis=layout) as stack:
        stack.seed(first)
        # One document the Hub refuses for good: a dead letter, its bytes kept.
        refused = first.sharepoint[0].file.filename
        stack.running.hub.set_fault("reject", match=refused, status=422)
        os.environ.clear()
        os.environ.update(stack.process_env())
        import scheduler
        from base.state import StateStore

        scheduler.configure(stack.settings())
        ran: list[tuple[str, str, str]] = []
        for source in stack.active_sources:
            sent = scheduler.tick.apply(args=(source,)).get()
            for instance, scope in sent.get("sent", []):
                scheduler.sync_scope.apply(args=(source, instance, scope)).get()
                ran.append((source, instance, scope))
        scheduler.health.apply().get()
        # WhatsApp media sent after the run: queued on the stream, read by no run yet.
        later = kmrl_samples(SEED, round_no=2)
        stack.seed(SampleSet(seed=SEED, round_no=2, whatsapp=later.whatsapp))
        state = StateStore.from_url(layout.state_url, prefix=stack.key_prefix)
        # A worker that died mid-run leaves its lease until the TTL; a 429 leaves the shared pause.
        state.lease("maximo", ran[0][2] if ran[0][0] == "maximo" else "all", ttl=86400).acquire(heartbeat=False)
        state.throttle_gate("hub", "default").block_until(time.time() + 86400)
        rows = dump_keys(state.redis)
    fixture = {"commit": "e3367a7", "prefix": "kmrl:", "seed": SEED, "scopes": ran,
               "recorded_at": int(time.time()), "keys": rows}
    args.out.write_text(json.dumps(fixture, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"{len(rows)} keys written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
