"""SharePoint benchmark: the connector alone beside the whole ingest of a 5,000-file site, a sync with
nothing new, 10 changed files, and one 1 GB file with its peak memory.

Each of ``--rounds`` rounds (default 3, interleaved so that both see the same machine) measures the
connector alone (list every change and read every file's bytes: no pipeline, no Hub) and the whole
ingest of the same files from an empty state (the real Runner, HttpHub uploading to the Hub
simulator); the figures are the medians and their ratio (issue 15's target: at least 0.8x).

The Graph + Entra simulator (TLS: msal talks to its authority over HTTPS), the Hub simulator and the
connector each run in a process of their own, so no two of them share an interpreter lock, and the
worker's speed and memory are its own. The rounds, the no-change sync and the changed files run in one
worker (the same msal application and site cache: a no-change sync should cost one delta request per
library and no token request); the 1 GB file runs in a fresh worker whose peak RSS (VmHWM) is the
figure reported (target: under 120 MB). State goes to a private redis-server started for the run
(test databases are flushed by tests running meanwhile), or, without the binary, to Redis test
database 10 under a key prefix of its own.

    .venv/bin/python -m bench.bench_sharepoint [--files 5000] [--large-mb 1024] [--changed 10] [--rounds 3]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from bench.common import HubProcess, cpu_seconds, median, private_redis
from bench.report import Figure, Result, met
from sandbox.sim_process import SimulatorProcess, graph_over_tls

#: Redis database used when no private redis-server can be started (a test database, see tests/conftest.py).
#: Prefix of every key the benchmark writes; removed before and after.
KEY_PREFIX = "kmrl-bench-sharepoint:"
#: Peak RSS allowed while ingesting the large file.
RSS_TARGET_MB = 120
#: Whole ingest / connector alone, files/s (issue 15).
RATIO_TARGET = 0.8
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
    #: CPU seconds used meanwhile by the worker (the connector), the Graph simulator, the Hub simulator.
    cpu: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def per_second(self) -> float:
        return self.files / self.seconds if self.seconds else 0.0

    def cpu_ms_per_document(self, which: int) -> float:
        return 1000 * self.cpu[which] / self.files if self.files else 0.0

    def cells(self) -> list[str]:
        per_second = self.per_second
        rate = (f"{per_second:.1f}" if per_second < 10 else f"{per_second:.0f}") if self.files else "-"
        mbps = f"{self.megabytes / self.seconds:.1f}" if self.seconds and self.megabytes else "-"
        rss = f"{self.peak_rss_mb:.0f}" if self.peak_rss_mb is not None else "-"
        cpu = "/".join(f"{self.cpu_ms_per_document(i):.2f}" for i in range(3)) if self.files else "-"
        return [self.scenario, str(self.files), f"{self.megabytes:.1f}", f"{self.seconds:.2f}", rate, mbps,
                str(self.graph_requests), str(self.token_requests), str(self.downloads), rss, cpu]


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


# -- the Graph simulator's side (run in its process through SimulatorProcess.call) ----------------------
def populate(sim: Any, files: int, seed: int) -> list[tuple[str, str, int]]:
    """Puts ``files`` generated files of mixed sizes into the benchmark site's libraries; returns
    (library, path, size) of each."""
    from sandbox.graph_store import GeneratedContent

    rng = random.Random(seed)
    drives = [sim.store.add_drive(SITE, name) for name in LIBRARIES]
    placed = []
    for i in range(files):
        library = LIBRARIES[i % len(LIBRARIES)]
        path = f"Folder {i % 40:02d}/Sub {i % 7}/document-{i:05d}.pdf"
        size = mixed_size(rng)
        sim.store.put_file(drives[i % len(drives)], path, GeneratedContent(seed=i, size=size),
                           mime_type="application/pdf")
        placed.append((library, path, size))
    return placed


def change(sim: Any, files: list[tuple[str, str, int]]) -> None:
    """New content for each (library, path, size)."""
    from sandbox.graph_store import GeneratedContent

    for n, (library, path, size) in enumerate(files):
        sim.store.put_file(sim.store.drive(SITE, library), path, GeneratedContent(seed=10_000_000 + n, size=size))


def add_large_file(sim: Any, megabytes: int) -> None:
    """One file of ``megabytes`` in a library of its own, its quickXorHash ready (as Graph has it)."""
    from sandbox.graph_store import GeneratedContent

    scans = sim.store.add_drive(SITE, LARGE_LIBRARY)
    big = sim.store.put_file(scans, "Depot survey/laser scan.bin", GeneratedContent(seed=7, size=megabytes * MB),
                             mime_type="application/octet-stream")
    big.quick_xor_hash()  # computing it is not the worker's time


def counts(sim: Any) -> tuple[int, int, int]:
    """(Graph requests, token requests, downloads) since the last reset."""
    return sim.graph_count(), sim.count("token"), sim.count("download")


# -- the worker (a separate process) -------------------------------------------------------------------
def worker(config_path: str) -> None:
    """Runs one sync per ``go <libraries>`` line on stdin and reads every file of the libraries (the
    connector alone, no pipeline) per ``read <libraries>`` line; answers one JSON line for each."""
    from base.contract import Item
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
    hub = HttpHub(config["hub_url"], config["hub_token"], uploads_in_flight=settings.hub_uploads_in_flight)
    creds = {"client_id": config["client_id"], "client_secret": config["client_secret"],
             "tenant_id": config["tenant_id"]}
    cache = TtlCache()  # one per worker process, as the service's wiring keeps it: the site is resolved once
    for line in sys.stdin:
        command, _, libraries = line.strip().partition(" ")
        if command not in ("go", "read"):
            break
        connector = SharePointConnector(config["site_url"], tenant_id=config["tenant_id"],
                                        client_id=config["client_id"], libraries=libraries.split(","),
                                        graph_base_url=config["graph_url"], authority=config["authority"],
                                        ca_file=config["ca_file"], settings=settings, state=state, hub=hub,
                                        cache=cache)
        cpu, started = time.process_time(), time.perf_counter()
        if command == "go":
            summary = connector.sync_documents(creds)
            answer = {"state": summary.state, "files": summary.totals["new"], "totals": summary.totals,
                      "bytes": summary.bytes, "errors": [s.error for s in summary.scopes if s.error]}
        else:
            files = size = 0
            with connector.connect(creds):
                for scope in connector.scopes():
                    for item in connector.list_changes(scope, None):
                        if isinstance(item, Item) and item.open is not None:
                            for chunk in item.open():
                                size += len(chunk)
                            files += 1
            answer = {"state": "ok", "files": files, "bytes": size, "errors": []}
        answer.update(seconds=time.perf_counter() - started, cpu=time.process_time() - cpu,
                      peak_rss_mb=peak_rss_kib() / 1024)
        print(json.dumps(answer), flush=True)


class Worker:
    """A worker subprocess driven line by line."""

    def __init__(self, config_path: Path) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "bench.bench_sharepoint", "--worker",
                                         str(config_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, cwd=Path(__file__).resolve().parents[1])

    def run(self, command: str, libraries: tuple[str, ...]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{command} " + ",".join(libraries) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the worker died (exit {self.process.wait()})")
        result: dict[str, Any] = json.loads(line)
        if result["state"] != "ok":
            raise SystemExit(f"{command} ended {result['state']}: {result['errors']}")
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


class Driver:
    """Runs a worker's command and measures it: the Graph simulator's counts, each process's CPU."""

    def __init__(self, sim: SimulatorProcess, hub: HubProcess) -> None:
        self.sim, self.hub = sim, hub

    def measure(self, label: str, worker: Worker, command: str, libraries: tuple[str, ...], *,
                expected: int | None = None) -> Row:
        self.sim.call("reset_counts")
        before = cpu_seconds(self.sim.pid), cpu_seconds(self.hub.process.pid)
        result = worker.run(command, libraries)
        graph, hub = cpu_seconds(self.sim.pid) - before[0], cpu_seconds(self.hub.process.pid) - before[1]
        if expected is not None and result["files"] != expected:
            raise SystemExit(f"{label}: {result['files']} files where {expected} were expected")
        graph_requests, tokens, downloads = self.sim.call(counts)
        return Row(label, int(result["files"]), result["bytes"] / MB, result["seconds"], graph_requests, tokens,
                   downloads, result["peak_rss_mb"], (result["cpu"], graph, hub))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--changed", type=int, default=10)
    parser.add_argument("--large-mb", type=int, default=1024, help="size of the large file (0: skip it)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of connector alone + whole ingest")
    parser.add_argument("--seed", type=int, default=20240501)
    parser.add_argument("--json", help="also write the figures to this result file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0

    from sandbox.tls import CertAuthority
    from utils.logging import configure_logging

    configure_logging(log_file="", level="WARNING", force=True)
    started_at, wall = datetime.now(UTC), time.perf_counter()
    rng = random.Random(args.seed)
    rows: list[Row] = []
    alone: list[Row] = []
    ingest: list[Row] = []
    with private_redis() as state_url, tempfile.TemporaryDirectory(prefix="kmrl-bench-sharepoint-") as tmp:
        _clean(state_url)
        root = Path(tmp)
        ca = CertAuthority(str(root / "ca"))
        cert = ca.issue("graph-simulator", hosts=("127.0.0.1", "localhost"))
        try:
            with SimulatorProcess(graph_over_tls, cert) as sim, HubProcess(root / "hub") as hub:
                placed = sim.call(populate, args.files, args.seed)
                total_mb = sum(size for _, _, size in placed) / MB
                info = sim.info
                config = {"root": str(root / "worker"), "state_url": state_url, "hub_url": hub.url,
                          "hub_token": hub.token, "site_url": f"{info['sharepoint_url']}/{SITE}",
                          "tenant_id": info["tenant_id"], "client_id": info["client_id"],
                          "client_secret": info["client_secret"], "graph_url": info["graph_url"],
                          "authority": info["authority_host"], "ca_file": ca.ca_path}
                config_path = root / "worker.json"
                config_path.write_text(json.dumps(config))
                config_path.chmod(0o600)
                driver = Driver(sim, hub)

                one = Worker(config_path)
                try:
                    for n in range(1, args.rounds + 1):
                        alone.append(driver.measure(f"connector alone, no pipeline #{n}", one, "read", LIBRARIES,
                                                    expected=args.files))
                        _clean(state_url)
                        hub.reset()
                        ingest.append(driver.measure(f"first sync ({len(LIBRARIES)} libraries) #{n}", one, "go",
                                                     LIBRARIES, expected=args.files))
                        rows += [alone[-1], ingest[-1]]
                    rows.append(driver.measure("no-change sync, same worker", one, "go", LIBRARIES, expected=0))
                    sim.call(change, rng.sample(placed, args.changed))
                    rows.append(driver.measure(f"{args.changed} changed files", one, "go", LIBRARIES,
                                               expected=args.changed))
                finally:
                    one.close()
                hub.reset()  # the large file's upload should not sit beside 5,000 others

                if args.large_mb:
                    sim.call(add_large_file, args.large_mb)
                    fresh = Worker(config_path)
                    try:
                        rows.append(driver.measure(f"{args.large_mb} MB file, fresh worker", fresh, "go",
                                                   (LARGE_LIBRARY,), expected=1))
                    finally:
                        fresh.close()
        finally:
            _clean(state_url)

    header = ["scenario", "files", "MB", "seconds", "files/s", "MB/s", "Graph requests", "token requests",
              "downloads", "peak RSS MB", "CPU ms/file: worker/Graph/Hub"]
    table = [header, *[row.cells() for row in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    print(f"SharePoint: {args.files} files ({total_mb:.0f} MB, mixed sizes) in {len(LIBRARIES)} libraries; "
          f"Graph simulator over TLS, Hub simulator over HTTP, each in its own process, as is the connector")
    for n, line in enumerate(table):
        print("  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(line)))
        if n == 0:
            print("  ".join("-" * w for w in widths))

    result = Result("sharepoint", "SharePoint: connector alone beside the whole ingest, Graph requests, a 1 GB file",
                    "python -m bench.bench_sharepoint " + shlex.join(argv if argv is not None else sys.argv[1:]),
                    started_at=started_at.strftime("%Y-%m-%d %H:%M UTC"))
    result.figures += ratio_figures(alone, ingest)
    result.figures.append(Figure("whole ingest: MB/s (median)",
                                 round(median([r.megabytes / r.seconds for r in ingest]), 1), "MB/s"))
    result.figures += cpu_figures(alone, ingest)
    result.figures += [Figure("first sync: Graph requests", ingest[0].graph_requests),
                       Figure("the worker's first run: token requests", alone[0].token_requests)]
    for row in rows:
        if row.scenario.startswith("no-change sync"):
            result.figures += [
                Figure(f"{row.scenario}: Graph requests", row.graph_requests, "",
                       f"1 delta per library = {len(LIBRARIES)} (issue 4)", row.graph_requests == len(LIBRARIES)),
                Figure("no-change sync: token requests", row.token_requests, "", "0 (issue 4)",
                       row.token_requests == 0)]
        elif "changed files" in row.scenario:
            result.figures += [Figure(f"{row.scenario}: Graph requests", row.graph_requests),
                               Figure(f"{row.scenario}: downloads", row.downloads)]
        elif "MB file" in row.scenario and row.peak_rss_mb is not None:
            result.figures += [
                Figure(f"{row.scenario}: peak RSS", round(row.peak_rss_mb, 1), "MB", f"< {RSS_TARGET_MB} MB (issue 4)",
                       met(row.peak_rss_mb, below=RSS_TARGET_MB)),
                Figure(f"{row.scenario}: MB/s", round(row.megabytes / row.seconds, 1), "MB/s")]
    if not args.large_mb:
        result.notes.append("no large file (--large-mb 0)")
    result.notes.append("rounds (connector alone / whole ingest, files/s): " + "; ".join(
        f"{a.per_second:.0f} / {b.per_second:.0f}" for a, b in zip(alone, ingest, strict=True)))
    result.seconds = time.perf_counter() - wall
    print()
    result.print_table()
    if args.json:
        result.save(args.json)
    return 0  # a missed target is a figure, not a failure of the benchmark


def ratio_figures(alone: list[Row], ingest: list[Row]) -> list[Figure]:
    """The medians of the connector alone and of the whole ingest, and their ratio against issue 15's target."""
    alone_rate, ingest_rate = median([r.per_second for r in alone]), median([r.per_second for r in ingest])
    ratio = ingest_rate / alone_rate if alone_rate else 0.0
    rounds = f"median of {len(alone)}"
    return [
        Figure(f"connector alone (list + read every file, no pipeline, no Hub): files/s ({rounds})",
               round(alone_rate, 1), "files/s"),
        Figure(f"whole ingest (Runner, HttpHub to the Hub simulator process): files/s ({rounds})",
               round(ingest_rate, 1), "files/s"),
        Figure("whole ingest / connector alone", round(ratio, 2), "", f">= {RATIO_TARGET} (issue 15)",
               met(round(ratio, 2), at_least=RATIO_TARGET)),
    ]


def cpu_figures(alone: list[Row], ingest: list[Row]) -> list[Figure]:
    """CPU milliseconds per file of each process (medians): where the ratio's limit lies."""
    figures = []
    for which, name in ((0, "worker (connector)"), (1, "Graph simulator"), (2, "Hub simulator")):
        for label, rows in (("connector alone", alone), ("whole ingest", ingest)):
            if label == "connector alone" and which == 2:
                continue
            figures.append(Figure(f"{label}: {name} CPU per file (median)",
                                  round(median([r.cpu_ms_per_document(which) for r in rows]), 3), "ms"))
    return figures


if __name__ == "__main__":
    raise SystemExit(main())
