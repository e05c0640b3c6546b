"""SharePoint benchmark: a first sync of a 5,000-file site, a sync with nothing new, 10 changed files,
and one 1 GB file with its peak memory.

The Graph + Entra simulator (TLS) runs in this process, the Hub simulator in a process of its own and
the connector in a worker subprocess, so no two of them share an interpreter lock and the worker's
speed and memory are its own. The first three syncs run in one worker (the same msal application
and site cache: a no-change sync should cost one delta request per library and no token request);
the 1 GB file runs in a fresh worker whose peak RSS (VmHWM) is the figure reported (target: under
120 MB). State goes to a private redis-server started for the run
(test databases are flushed by tests running meanwhile), or, without the binary, to Redis test
database 10 under a key prefix of its own.

    .venv/bin/python -m bench.bench_sharepoint [--files 5000] [--large-mb 1024] [--changed 10]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.common import private_redis

#: Redis database used when no private redis-server can be started (a test database, see tests/conftest.py).
#: Prefix of every key the benchmark writes; removed before and after.
KEY_PREFIX = "kmrl-bench-sharepoint:"
#: Peak RSS allowed while ingesting the large file.
RSS_TARGET_MB = 120
#: Libraries of the benchmark site holding the many files, and the one holding the large file.
LIBRARIES = ("Documents", "Engineering Drawings")
LARGE_LIBRARY = "Scans"
SITE = "sites/operations"
MB = 1024 * 1024


def mixed_size(rng: random.Random) -> int:
    """Office-library-like sizes: most files small, a few large (mean about 150 KB)."""
    roll = rng.random()
    if roll < 0.70:
        return rng.randint(1_000, 16_000)
    if roll < 0.95:
        return rng.randint(16_000, 256_000)
    return rng.randint(256_000, 4 * MB)


@dataclass
class Row:
    scenario: str
    files: int
    megabytes: float
    seconds: float
    graph_requests: int
    token_requests: int
    downloads: int
    peak_rss_mb: float | None = None

    def cells(self) -> list[str]:
        per_second = self.files / self.seconds if self.seconds else 0.0
        rate = (f"{per_second:.1f}" if per_second < 10 else f"{per_second:.0f}") if self.files else "-"
        mbps = f"{self.megabytes / self.seconds:.1f}" if self.seconds and self.megabytes else "-"
        rss = f"{self.peak_rss_mb:.0f}" if self.peak_rss_mb is not None else "-"
        return [self.scenario, str(self.files), f"{self.megabytes:.1f}", f"{self.seconds:.2f}", rate, mbps,
                str(self.graph_requests), str(self.token_requests), str(self.downloads), rss]


def peak_rss_kib() -> int:
    """This process's peak resident set size, KiB.

    VmHWM belongs to the process's own address space. ``ru_maxrss`` is not enough on Linux: a child
    started by fork/vfork + exec inherits the parent's high-water mark at exec, so a worker started
    by a large parent would report the parent's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


# -- the worker (a separate process) -------------------------------------------------------------------
def worker(config_path: str) -> None:
    """Runs one sync per ``go <libraries>`` line on stdin; answers one JSON line per sync."""
    from base.hub_client import HttpHub
    from base.state import StateStore
    from config.settings import Settings
    from connectors.sharepoint_connector import SharePointConnector
    from utils.logging import configure_logging
    from utils.ttl_cache import TtlCache

    config = json.loads(Path(config_path).read_text())
    configure_logging(log_file="", level="WARNING", force=True)
    root = Path(config["root"])
    settings = Settings(redis_url=config["state_url"], state_redis_url=config["state_url"], key_prefix=KEY_PREFIX,
                        hub_outbox_dir=str(root / "outbox"), spool_dir=str(root / "spool"),
                        deadletter_dir=str(root / "deadletter"), log_file="", audit_log=str(root / "audit.log"),
                        spool_min_free_mb=1, log_level="WARNING")
    state = StateStore.from_url(config["state_url"], prefix=KEY_PREFIX)
    hub = HttpHub(config["hub_url"], config["hub_token"])
    creds = {"client_id": config["client_id"], "client_secret": config["client_secret"],
             "tenant_id": config["tenant_id"]}
    cache = TtlCache()  # one per worker process, as the service's wiring keeps it: the site is resolved once
    for line in sys.stdin:
        command, _, libraries = line.strip().partition(" ")
        if command != "go":
            break
        connector = SharePointConnector(config["site_url"], tenant_id=config["tenant_id"],
                                        client_id=config["client_id"], libraries=libraries.split(","),
                                        graph_base_url=config["graph_url"], authority=config["authority"],
                                        ca_file=config["ca_file"], settings=settings, state=state, hub=hub,
                                        cache=cache)
        started = time.perf_counter()
        summary = connector.sync_documents(creds)
        seconds = time.perf_counter() - started
        print(json.dumps({"state": summary.state, "totals": summary.totals, "bytes": summary.bytes,
                          "seconds": seconds, "peak_rss_mb": peak_rss_kib() / 1024,
                          "errors": [s.error for s in summary.scopes if s.error]}), flush=True)


def serve_hub(data_dir: str) -> None:
    """Serves the Hub simulator (in memory, no index file) until stdin closes; prints its URL first."""
    from sandbox.hub import running_hub
    from utils.logging import configure_logging

    configure_logging(log_file="", level="WARNING", force=True)
    with running_hub(data_dir=data_dir) as hub:
        print(json.dumps({"url": hub.url, "token": hub.token}), flush=True)
        sys.stdin.read()


class HubProcess:
    """The Hub simulator in a subprocess: ``url``, ``token``, ``reset()``."""

    def __init__(self, data_dir: Path) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "bench.bench_sharepoint", "--serve-hub",
                                         str(data_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, cwd=Path(__file__).resolve().parents[1])
        assert self.process.stdout is not None
        first = json.loads(self.process.stdout.readline())
        self.url, self.token = str(first["url"]), str(first["token"])

    def reset(self) -> None:
        """Forgets every stored document (and removes their bytes)."""
        import requests

        requests.post(f"{self.url}/_sim/reset", headers={"Authorization": f"Bearer {self.token}"},
                      timeout=60).raise_for_status()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Worker:
    """A worker subprocess driven line by line."""

    def __init__(self, config_path: Path) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "bench.bench_sharepoint", "--worker",
                                         str(config_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, cwd=Path(__file__).resolve().parents[1])

    def sync(self, libraries: tuple[str, ...]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("go " + ",".join(libraries) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the worker died (exit {self.process.wait()})")
        result: dict[str, Any] = json.loads(line)
        if result["state"] != "ok":
            raise SystemExit(f"sync ended {result['state']}: {result['errors']}")
        return result

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


# -- the driver -------------------------------------------------------------------------------------------
def _clean(state_url: str) -> None:
    client = redis.Redis.from_url(state_url)
    keys = list(client.scan_iter(match=KEY_PREFIX + "*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start:start + 1000])
    client.close()


def _row(label: str, result: dict[str, Any], sim: Any, *, files: int) -> Row:
    return Row(label, files, result["bytes"] / MB, result["seconds"], sim.graph_count(), sim.count("token"),
               sim.count("download"), result["peak_rss_mb"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--changed", type=int, default=10)
    parser.add_argument("--large-mb", type=int, default=1024, help="size of the large file (0: skip it)")
    parser.add_argument("--seed", type=int, default=20240501)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--serve-hub", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return
    if args.serve_hub:
        serve_hub(args.serve_hub)
        return

    from sandbox.graph import GraphSimulator
    from sandbox.graph_store import GeneratedContent
    from sandbox.tls import CertAuthority
    from utils.logging import configure_logging

    configure_logging(log_file="", level="WARNING", force=True)
    rng = random.Random(args.seed)
    rows: list[Row] = []
    with private_redis() as state_url, tempfile.TemporaryDirectory(prefix="kmrl-bench-sharepoint-") as tmp:
        _clean(state_url)
        root = Path(tmp)
        ca = CertAuthority(str(root / "ca"))
        sim = GraphSimulator()
        drives = [sim.store.add_drive(SITE, name) for name in LIBRARIES]
        placed: list[tuple[Any, str, int]] = []
        for i in range(args.files):
            drive = drives[i % len(drives)]
            path = f"Folder {i % 40:02d}/Sub {i % 7}/document-{i:05d}.pdf"
            size = mixed_size(rng)
            sim.store.put_file(drive, path, GeneratedContent(seed=i, size=size), mime_type="application/pdf")
            placed.append((drive, path, size))
        total_mb = sum(size for _, _, size in placed) / MB
        sim.start(ca)
        try:
            hub = HubProcess(root / "hub")
            try:
                config = {"root": str(root / "worker"), "state_url": state_url, "hub_url": hub.url,
                          "hub_token": hub.token, "site_url": f"{sim.sharepoint_url}/{SITE}",
                          "tenant_id": sim.tenant_id, "client_id": sim.client_id,
                          "client_secret": sim.client_secret, "graph_url": sim.graph_url,
                          "authority": sim.authority_host, "ca_file": ca.ca_path}
                config_path = root / "worker.json"
                config_path.write_text(json.dumps(config))
                config_path.chmod(0o600)

                one = Worker(config_path)
                try:
                    sim.reset_counts()
                    rows.append(_row(f"first sync ({len(drives)} libraries)", one.sync(LIBRARIES), sim,
                                     files=args.files))
                    sim.reset_counts()
                    rows.append(_row("no-change sync, same worker", one.sync(LIBRARIES), sim, files=0))
                    for n, (drive, path, size) in enumerate(rng.sample(placed, args.changed)):
                        sim.store.put_file(drive, path, GeneratedContent(seed=10_000_000 + n, size=size))
                    sim.reset_counts()
                    rows.append(_row(f"{args.changed} changed files", one.sync(LIBRARIES), sim, files=args.changed))
                finally:
                    one.close()
                hub.reset()  # the large file's upload should not sit beside 5,000 others in memory

                if args.large_mb:
                    scans = sim.store.add_drive(SITE, LARGE_LIBRARY)
                    big = sim.store.put_file(scans, "Depot survey/laser scan.bin",
                                             GeneratedContent(seed=7, size=args.large_mb * MB),
                                             mime_type="application/octet-stream")
                    big.quick_xor_hash()  # Graph has it ready; computing it is not the worker's time
                    fresh = Worker(config_path)
                    try:
                        sim.reset_counts()
                        rows.append(_row(f"{args.large_mb} MB file, fresh worker", fresh.sync((LARGE_LIBRARY,)),
                                         sim, files=1))
                    finally:
                        fresh.close()
            finally:
                hub.close()
        finally:
            sim.stop()
            _clean(state_url)

    header = ["scenario", "files", "MB", "seconds", "files/s", "MB/s", "Graph requests", "token requests",
              "downloads", "peak RSS MB"]
    table = [header, *[row.cells() for row in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    print(f"SharePoint: {args.files} files ({total_mb:.0f} MB, mixed sizes) in {len(LIBRARIES)} libraries; "
          f"Graph simulator over TLS, Hub simulator over HTTP, each in its own process, as is the connector")
    for n, line in enumerate(table):
        print("  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(line)))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print(f"targets: no-change sync = 1 delta request per library ({len(LIBRARIES)}) and 0 token requests; "
          f"large file peak RSS < {RSS_TARGET_MB} MB")
    large = [row for row in rows if row.peak_rss_mb is not None and row.files == 1 and row.megabytes > 100]
    if large and (large[0].peak_rss_mb or 0) >= RSS_TARGET_MB:
        print(f"TARGET MISSED: peak RSS {large[0].peak_rss_mb:.0f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
