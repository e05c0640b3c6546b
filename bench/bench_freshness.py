"""Freshness benchmark: seconds from a change landing at its source to the document in the Hub, with the
service running as the README says (``kmrl-connectors run``: a worker with its beat, the web app and the
watcher) and the beat schedule at its defaults (email 5 min, WhatsApp 10, SharePoint 30), so that what
is measured is the push path, with the tick as the safety net only.

Sources (each in this process or its own, all on loopback):
- email: Dovecot (NOTIFY) and the watcher; a change is an IMAP APPEND of a message with one attachment;
- WhatsApp: a signed webhook POST, over TLS, to the web app's public listener;
- SharePoint: a file put into the Graph simulator, which sends its change notification over TLS to the
  web app (the subscription is made by the service itself as it starts).

``--changes`` changes per source land at random moments spread over ``--minutes`` (one of each
source's is a scanned PDF, read by OCR). A change's latency ends when a document with its bytes is in
the Hub (polled every 0.2 s). Reported per source: p50, p95, max, missed (not in the Hub within
``GRACE`` of the last change) and uploaded twice (Idempotency-Keys the Hub received more than once).

Then a burst: ``--burst`` messages appended to one watched folder at once; reported: the runs of that
folder's scope after the first, until every message's attachment is in the Hub.

    .venv/bin/python -m bench.bench_freshness [--changes 100] [--minutes 10] [--burst 1000] [--json PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import requests

from base.state import StateStore
from bench.common import HubProcess, private_redis
from bench.report import Figure, Result
from sandbox import rendering
from sandbox.dovecot import DovecotServer, dovecot_binary
from sandbox.graph import FILES_READWRITE_ALL, SITES_READ_ALL, GraphSimulator
from sandbox.servers import ServerThread, free_port
from sandbox.stack import RedisLayout
from sandbox.tls import CertAuthority
from sandbox.whatsapp import WebhookSender, WhatsAppCloudSimulator

ROOT = Path(__file__).resolve().parent.parent
MAILBOX = "records@kmrl.co.in"
SITE = "sites/operations"
#: Seconds after the last change within which every document must have arrived.
GRACE = 120.0
#: Seconds between two looks at the Hub.
POLL = 0.2
#: Longest the service may take to be up (web app answering, watcher connected, drive subscribed).
START_TIMEOUT = 120.0
SOURCES = ("email", "whatsapp", "sharepoint")
TARGETS = {"email": 10.0, "whatsapp": 10.0, "sharepoint": 30.0}


@dataclass
class Change:
    source: str
    name: str
    sha256: str
    landed: float = 0.0      # time.time() when it landed at the source
    arrived: float | None = None


@dataclass
class Setup:
    """What is running: the simulators, the Hub, and ``kmrl-connectors run``."""

    root: Path
    env: dict[str, str]
    hub: HubProcess
    dovecot: DovecotServer
    graph: GraphSimulator
    cloud: WhatsAppCloudSimulator
    webhook_url: str
    ca_path: str
    app_secret: str
    service: subprocess.Popen[bytes] | None = None
    stops: list[Callable[[], None]] = field(default_factory=list)


def document_bytes(source: str, n: int, *, scanned: bool) -> tuple[str, bytes]:
    """A change's file: a small text document, or a scanned PDF (an image only) that needs OCR."""
    if scanned and rendering.available():
        text = f"KMRL safety circular {source} {n}. Platform edge doors at Aluva to be checked daily."
        return f"{source}-scan-{n}.pdf", rendering.scanned_pdf(text)
    body = (f"KMRL {source} field report {n}: escalator 3 at Edappally inspected {time.time_ns()}; "
            f"handrail speed within limits, no fault found.\n").encode()
    return f"{source}-report-{n}.txt", body


def mail_with(name: str, data: bytes, *, subject: str) -> bytes:
    message = EmailMessage()
    message["From"] = "station.controller@kmrl.co.in"
    message["To"] = MAILBOX
    message["Subject"] = subject
    message.set_content("Report attached.")
    maintype, subtype = ("application", "pdf") if name.endswith(".pdf") else ("text", "plain")
    message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return bytes(message)


@contextmanager
def running_setup(root: Path, redis_url: str, *, burst_folder: str) -> Iterator[Setup]:
    """Starts the simulators and the service; stops everything at the end."""
    with ExitStack() as stack:
        ca = CertAuthority(str(root / "ca"))
        web_cert = ca.issue("web", hosts=("127.0.0.1", "localhost"))
        hub = stack.enter_context(HubProcess(root / "hub"))
        dovecot = DovecotServer().start()  # its own folder, readable by Dovecot's unprivileged processes
        stack.callback(dovecot.stop)
        password = "bench-mail-password"
        dovecot.add_user(MAILBOX, password)
        dovecot.create_folder(MAILBOX, "INBOX")
        dovecot.create_folder(MAILBOX, burst_folder)
        graph = GraphSimulator(roles=(SITES_READ_ALL, FILES_READWRITE_ALL), notify_ca_file=ca.ca_path)
        graph.store.add_drive(SITE, "Documents")
        graph.start(ca)
        stack.callback(graph.stop)
        cloud = WhatsAppCloudSimulator(access_token="bench-whatsapp-token")
        cloud_server = stack.enter_context(ServerThread(cloud))
        public_port, internal_port = free_port(), free_port()
        layout = RedisLayout.service(redis_url)
        app_secret = "bench-app-secret"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("EMAIL_", "MAXIMO_", "SHAREPOINT_", "WHATSAPP_",
                                                                        "HUB_", "GRAPH_", "WEB_"))},
            **layout.env(), "KMRL_ENV_FILE": "",
            "HUB_API_URL": hub.url, "HUB_API_TOKEN": hub.token,
            "SPOOL_DIR": str(root / "spool"), "DEADLETTER_DIR": str(root / "deadletter"),
            "HELD_DIR": str(root / "held"), "LOG_FILE": str(root / "logs" / "kmrl-connectors.log"),
            "AUDIT_LOG": str(root / "logs" / "audit.log"), "WORKER_LIVENESS_FILE": str(root / "worker.alive"),
            "LOG_LEVEL": "INFO", "OPERATOR_TOKEN": "bench-operator-token-0123456789abcdef",
            "EMAIL_HOST": dovecot.host, "EMAIL_PORT": str(dovecot.imaps_port), "EMAIL_USER": MAILBOX,
            "EMAIL_PASSWORD": password, "EMAIL_SSL_CA_FILE": dovecot.ca_path,
            "EMAIL_FOLDERS": f"INBOX,{burst_folder}",
            "SHAREPOINT_URL": graph.sharepoint_url, "SHAREPOINT_SITES": SITE, "SHAREPOINT_TENANT_ID": graph.tenant_id,
            "SHAREPOINT_CLIENT_ID": graph.client_id, "SHAREPOINT_CLIENT_SECRET": graph.client_secret,
            "GRAPH_BASE_URL": graph.graph_url, "ENTRA_AUTHORITY": graph.authority_host,
            "SHAREPOINT_CA_FILE": ca.ca_path,
            "GRAPH_NOTIFICATION_URL": f"https://127.0.0.1:{public_port}/webhooks/graph",
            "GRAPH_CLIENT_STATE_SECRET": "bench-client-state-secret-0123456789",
            "WHATSAPP_ACCESS_TOKEN": cloud.access_token, "WHATSAPP_PHONE_NUMBER_ID": cloud.phone_number_id,
            "WHATSAPP_APP_SECRET": app_secret, "WHATSAPP_VERIFY_TOKEN": "bench-verify-token",
            "WHATSAPP_GRAPH_URL": cloud_server.url,
            "WEB_PUBLIC_HOST": "127.0.0.1", "WEB_PUBLIC_PORT": str(public_port),
            "WEB_INTERNAL_HOST": "127.0.0.1", "WEB_INTERNAL_PORT": str(internal_port),
            # The operator's TLS proxy, played by gunicorn itself (Graph and Meta call https only).
            "GUNICORN_CMD_ARGS": f"--certfile {web_cert.cert_path} --keyfile {web_cert.key_path}",
        }
        setup = Setup(root=root, env=env, hub=hub, dovecot=dovecot, graph=graph, cloud=cloud,
                      webhook_url=f"https://127.0.0.1:{public_port}/webhooks/whatsapp", ca_path=ca.ca_path,
                      app_secret=app_secret)
        log = open(root / "run.out", "wb")  # noqa: SIM115 - closed at the end
        stack.callback(log.close)
        setup.service = subprocess.Popen(
            [str(Path(sys.executable).with_name("kmrl-connectors")), "run", "--concurrency", "2"], env=env, cwd=ROOT,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        stack.callback(stop_service, setup.service)
        wait_until_up(setup, internal_port)
        yield setup


def stop_service(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def wait_until_up(setup: Setup, internal_port: int) -> None:
    """The web app answers, the watcher is connected and the drive is subscribed."""
    state = StateStore.from_url(setup.env["STATE_REDIS_URL"])
    deadline = time.monotonic() + START_TIMEOUT
    wanted = {"web": False, "watcher": False, "subscription": False}
    while not all(wanted.values()):
        assert setup.service is not None
        if setup.service.poll() is not None:
            raise RuntimeError(f"kmrl-connectors run exited ({setup.service.returncode}); see {setup.root / 'run.out'}")
        if time.monotonic() > deadline:
            logs = (setup.root / "logs" / "kmrl-connectors.log")
            tail = "\n".join(logs.read_text(errors="replace").splitlines()[-30:]) if logs.exists() else ""
            raise RuntimeError(f"the service was not up after {START_TIMEOUT:.0f} s: {wanted}\n{tail}")
        try:
            wanted["web"] = requests.get(f"https://127.0.0.1:{internal_port}/readyz", verify=setup.ca_path,
                                         timeout=2).status_code == 200
        except requests.RequestException:
            pass
        watchers = [state.redis.hgetall(k) for k in state.redis.scan_iter(state.keys.join("watcher", "*"))]
        wanted["watcher"] = any(w.get(b"state") == b"connected" or w.get("state") == "connected" for w in watchers)
        wanted["subscription"] = any(True for _ in state.redis.scan_iter(state.keys.join("subscription", "*")))
        time.sleep(0.5)


class Arrivals:
    """Polls the Hub and stamps each change with the moment its bytes were first seen there."""

    def __init__(self, hub: HubProcess, changes: Sequence[Change]) -> None:
        self.hub = hub
        self.by_sha = {c.sha256: c for c in changes}
        self.uploads_per_key: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="arrivals", daemon=True)

    def start(self) -> Arrivals:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.look()
            self._stop.wait(POLL)

    def look(self) -> None:
        state = self.hub.state()
        now = time.time()
        for doc in state["documents"].values():
            change = self.by_sha.get(doc["sha256"])
            if change is not None and change.arrived is None and change.landed:
                change.arrived = now
        self.uploads_per_key = dict(state.get("uploads_per_key", {}))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.look()


def land(setup: Setup, change: Change, data: bytes, sender: WebhookSender) -> None:
    """Makes ``change`` happen at its source and stamps when it landed."""
    if change.source == "email":
        setup.dovecot.append(MAILBOX, [mail_with(change.name, data, subject=f"Report {change.name}")])
        change.landed = time.time()
    elif change.source == "sharepoint":
        drive = setup.graph.store.drive(SITE, "Documents")
        setup.graph.store.put_file(drive, f"Freshness/{change.name}", data)
        change.landed = time.time()
    else:
        mime = "application/pdf" if change.name.endswith(".pdf") else "text/plain"
        media = setup.cloud.add_media(data, mime_type=mime)
        message = setup.cloud.message("document", media, filename=change.name, caption=change.name)
        change.landed = time.time()
        delivery = sender.send(setup.cloud.notification([message]))
        if not delivery.delivered:
            raise RuntimeError(f"the webhook did not accept {change.name}: answers {delivery.statuses}; "
                               f"see {setup.root / 'logs'}")


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def freshness(setup: Setup, *, changes_per_source: int, minutes: float, seed: int) -> dict[str, dict[str, float]]:
    rng = random.Random(seed)
    planned: list[tuple[float, Change, bytes]] = []
    span = minutes * 60
    for source in SOURCES:
        scanned_at = rng.randrange(changes_per_source)
        for n in range(changes_per_source):
            name, data = document_bytes(source, n, scanned=n == scanned_at)
            planned.append((rng.uniform(0, span), Change(source, name, hashlib.sha256(data).hexdigest()), data))
    planned.sort(key=lambda row: row[0])
    changes = [c for _, c, _ in planned]
    arrivals = Arrivals(setup.hub, changes).start()
    sender = WebhookSender(setup.webhook_url, setup.app_secret, session=_verified_session(setup.ca_path))
    start = time.monotonic()
    for at, change, data in planned:
        delay = at - (time.monotonic() - start)
        if delay > 0:
            time.sleep(delay)
        land(setup, change, data, sender)
    deadline = time.monotonic() + GRACE
    while time.monotonic() < deadline and any(c.arrived is None for c in changes):
        time.sleep(0.5)
    arrivals.stop()
    twice = sum(1 for n in arrivals.uploads_per_key.values() if n > 1)
    figures: dict[str, dict[str, float]] = {}
    for source in SOURCES:
        mine = [c for c in changes if c.source == source]
        latencies = [c.arrived - c.landed for c in mine if c.arrived is not None]
        figures[source] = {"changes": len(mine), "p50": percentile(latencies, 0.5),
                           "p95": percentile(latencies, 0.95), "max": max(latencies, default=float("nan")),
                           "missed": sum(1 for c in mine if c.arrived is None)}
    figures["all"] = {"uploaded_twice": twice}
    return figures


def _verified_session(ca_path: str) -> requests.Session:
    session = requests.Session()
    session.verify = ca_path
    session.trust_env = False  # else REQUESTS_CA_BUNDLE in the environment would replace the CA given here
    return session


def burst(setup: Setup, folder: str, count: int) -> dict[str, float]:
    """Appends ``count`` messages to ``folder`` at once; counts the runs of its scope until all arrived."""
    state = StateStore.from_url(setup.env["STATE_REDIS_URL"])
    scope = next((s for _, s, _ in state.iter_statuses("email") if s.endswith(folder)), None)
    runs_before = len(state.redis.lrange(state.keys.history("email", scope), 0, -1)) if scope else 0
    items = [document_bytes("burst", n, scanned=False) for n in range(count)]
    changes = [Change("email", name, hashlib.sha256(data).hexdigest()) for name, data in items]
    arrivals = Arrivals(setup.hub, changes).start()
    started = time.time()
    setup.dovecot.append(MAILBOX, [mail_with(name, data, subject=f"Burst {name}") for name, data in items],
                         folder=folder)
    for change in changes:
        change.landed = started
    deadline = time.monotonic() + GRACE + count / 20
    while time.monotonic() < deadline and any(c.arrived is None for c in changes):
        time.sleep(0.5)
    arrivals.stop()
    time.sleep(5.0)  # a run owed to the last notifications ends, and is counted
    scope = scope or next((s for _, s, _ in state.iter_statuses("email") if s.endswith(folder)), None)
    runs = len(state.redis.lrange(state.keys.history("email", scope), 0, -1)) - runs_before if scope else 0
    arrived = [c.arrived for c in changes if c.arrived is not None]
    return {"messages": count, "missed": sum(1 for c in changes if c.arrived is None),
            "runs": runs, "runs_after_first": max(0, runs - 1),
            "seconds_to_last": (max(arrived) - started) if arrived else float("nan")}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=100, help="changes per source (default 100)")
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes the changes are spread over")
    parser.add_argument("--burst", type=int, default=1000, help="messages in the burst (0: no burst)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--quick", action="store_true", help="20 changes over 1 minute, a burst of 200")
    parser.add_argument("--json", help="write the result here (bench/report.py format)")
    parser.add_argument("--keep", help="keep the service's folders (logs) here instead of a temporary folder")
    args = parser.parse_args(argv)
    if args.quick:
        args.changes, args.minutes, args.burst = 20, 1.0, 200
    if dovecot_binary() is None:
        print("needs Dovecot (apt-get install -y dovecot-imapd)")
        return 2
    folder = "Burst"
    with private_redis() as redis_url, tempfile.TemporaryDirectory(prefix="kmrl-bench-fresh-") as tmp, \
            running_setup(Path(args.keep or tmp), redis_url, burst_folder=folder) as setup:
        print(f"service up; {args.changes} changes per source over {args.minutes:g} min")
        figures = freshness(setup, changes_per_source=args.changes, minutes=args.minutes, seed=args.seed)
        burst_figures = burst(setup, folder, args.burst) if args.burst else {}
    print(f"{'source':<12}{'changes':>8}{'p50 s':>8}{'p95 s':>8}{'max s':>8}{'missed':>8}{'target':>10}")
    for source in SOURCES:
        f = figures[source]
        print(f"{source:<12}{f['changes']:>8.0f}{f['p50']:>8.2f}{f['p95']:>8.2f}{f['max']:>8.2f}{f['missed']:>8.0f}"
              f"{'< ' + format(TARGETS[source], 'g') + ' s':>10}")
    print(f"uploaded twice: {figures['all']['uploaded_twice']:.0f}")
    if burst_figures:
        print(f"burst: {burst_figures['messages']:.0f} messages in one folder: {burst_figures['runs']:.0f} runs "
              f"({burst_figures['runs_after_first']:.0f} after the first; target <= 2), all in the Hub after "
              f"{burst_figures['seconds_to_last']:.1f} s, missed {burst_figures['missed']:.0f}")
    if args.json:
        result = Result("freshness", "Freshness: change at the source to document in the Hub, pushed (p95)",
                        command="python -m bench.bench_freshness " + " ".join(argv or sys.argv[1:]))
        for source in SOURCES:
            f = figures[source]
            result.figures.append(Figure(f"{source} p95 over {f['changes']:.0f} changes", round(f["p95"], 2), "s",
                                         target=f"< {TARGETS[source]:g} s", met=f["p95"] < TARGETS[source]))
            result.figures.append(Figure(f"{source} missed", f["missed"], "", target="0", met=f["missed"] == 0))
        result.figures.append(Figure("uploaded twice", figures["all"]["uploaded_twice"], "", target="0",
                                     met=figures["all"]["uploaded_twice"] == 0))
        if burst_figures:
            result.figures.append(Figure(f"burst of {args.burst}: runs after the first",
                                         burst_figures["runs_after_first"], "", target="<= 2",
                                         met=burst_figures["runs_after_first"] <= 2))
        Path(args.json).write_text(json.dumps(result.to_json(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
