"""Maximo benchmark: a full sync of N work orders with M attachments each, then a sync with no change.

Prints work orders/s, documents/s and the Maximo requests each sync needed (target for a sync with
nothing new: one request per site). Runs the real pipeline: the Maximo simulator over loopback
HTTPS with keep-alive (as a real Maximo is served; a server that closed every connection would
measure handshakes), the Hub simulator over loopback HTTP, state in a private redis-server started for the run (so no test that
flushes a shared database can take the scope's lease away mid-run); without redis-server installed,
in database 10 of $REDIS_URL.

    .venv/bin/python -m bench.bench_maximo [--work-orders 2000] [--attachments 3] [--size 2048]
        [--sites MUTTOM,ALUVA] [--page-size 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from base.contract import Item
from base.hub_client import HttpHub
from base.state import StateStore
from bench.common import private_redis
from config.settings import Settings
from connectors.maximo_connector import MaximoConnector
from sandbox.hub import running_hub
from sandbox.keepalive_server import KeepAliveServer
from sandbox.maximo import DEFAULT_API_KEYS, DEFAULT_USERS, MaximoSimulator
from sandbox.tls import CertAuthority
from utils.logging import configure_logging


@dataclass
class Row:
    scenario: str
    work_orders: int
    documents: int
    seconds: float
    requests: int
    sites: int

    def cells(self) -> list[str]:
        rate = self.work_orders / self.seconds if self.seconds else 0.0
        docs = self.documents / self.seconds if self.seconds else 0.0
        per_wo = f"{self.requests / self.work_orders:.2f}" if self.work_orders else "-"
        return [self.scenario, str(self.work_orders), str(self.documents), f"{self.seconds:.2f}", f"{rate:.0f}",
                f"{docs:.0f}", str(self.requests), per_wo, f"{self.requests / self.sites:.1f}"]


def _settings(root: Path, state_url: str) -> Settings:
    return Settings(redis_url=state_url, state_redis_url=state_url, hub_outbox_dir=str(root / "outbox"),
                    spool_dir=str(root / "spool"), deadletter_dir=str(root / "deadletter"), log_file="",
                    audit_log=str(root / "audit.log"), spool_min_free_mb=1, log_level="WARNING")


def _run(label: str, sim: MaximoSimulator, connector: MaximoConnector, creds: dict[str, str], *,
         work_orders: int, sites: int) -> Row:
    sim.reset_counts()
    started = time.perf_counter()
    summary = connector.sync_documents(creds)
    seconds = time.perf_counter() - started
    if summary.state != "ok":
        raise SystemExit(f"{label}: sync ended {summary.state}: {[s.error for s in summary.scopes]}")
    return Row(label, work_orders, summary.totals["new"], seconds, len(sim.requests), sites)


def _read_only(label: str, sim: MaximoSimulator, connector: MaximoConnector, creds: dict[str, str], *,
               work_orders: int, sites: int) -> Row:
    """The connector alone: list every change and read every file, no pipeline, no Hub."""
    sim.reset_counts()
    started = time.perf_counter()
    documents = 0
    with connector.connect(creds):
        for scope in connector.scopes():
            for change in connector.list_changes(scope, None):
                if isinstance(change, Item) and change.open is not None:
                    for _chunk in change.open():
                        pass
                    documents += 1
    return Row(label, work_orders, documents, time.perf_counter() - started, len(sim.requests), sites)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--work-orders", type=int, default=2000)
    parser.add_argument("--attachments", type=int, default=3)
    parser.add_argument("--size", type=int, default=2048, help="bytes per attachment")
    parser.add_argument("--sites", default="MUTTOM,ALUVA", help="comma-separated; each is a scope")
    parser.add_argument("--page-size", type=int, default=100)
    args = parser.parse_args(argv)
    configure_logging(log_file="", level="WARNING", force=True)
    sites = [s for s in args.sites.split(",") if s]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="kmrl-bench-maximo-") as tmp, private_redis() as state_url:
        root = Path(tmp)
        authority = CertAuthority(str(root / "ca"))
        cert = authority.issue()
        for label, auth, inline in (("apikey, doclinks inline", "apikey", True),
                                    ("maxauth, doclinks inline", "maxauth", True),
                                    ("apikey, doclinks by href", "apikey", False)):
            redis.Redis.from_url(state_url).flushdb()
            settings = _settings(root / label.replace(" ", "_").replace(",", ""), state_url)
            sim = MaximoSimulator(doclinks_inline=inline)
            sim.populate(args.work_orders, sites=sites, attachments=args.attachments, attachment_size=args.size)
            creds = ({"api_key": DEFAULT_API_KEYS[0]} if auth == "apikey"
                     else dict(zip(("user", "password"), next(iter(DEFAULT_USERS.items())), strict=True)))
            with KeepAliveServer(sim, cert) as maximo, running_hub(data_dir=root / f"hub-{auth}-{inline}") as hub:
                connector = MaximoConnector(maximo.url, site_ids=sites, auth=auth, page_size=args.page_size,
                                            ca_bundle=authority.ca_path, settings=settings,
                                            state=StateStore.from_url(state_url), hub=HttpHub(hub.url, hub.token))
                rows.append(_run(f"full sync ({label})", sim, connector, creds, work_orders=args.work_orders,
                                 sites=len(sites)))
                rows.append(_run(f"no-change sync ({label})", sim, connector, creds, work_orders=0,
                                 sites=len(sites)))
                if auth == "apikey" and inline:
                    rows.append(_read_only(f"connector alone, no pipeline ({label})", sim, connector, creds,
                                           work_orders=args.work_orders, sites=len(sites)))
    header = ["scenario", "work orders", "documents", "seconds", "WO/s", "docs/s", "Maximo requests",
              "requests/WO", "requests/site"]
    table = [header, *[row.cells() for row in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    print(f"Maximo: {args.work_orders} work orders x {args.attachments} attachments of {args.size} bytes, "
          f"{len(sites)} sites, page size {args.page_size}")
    for n, line in enumerate(table):
        print("  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(line)))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print("target: a no-change sync sends 1 request per site (maxauth adds its one login per run)")


if __name__ == "__main__":
    main()
