"""The four sources on their simulators, each holding a known set of documents, for fault tests.

A ``Bed`` is one source ready to sync: its simulator(s) serving on loopback, ``count`` documents of
distinct content in it, the sha256 of every one (``expected``), and the environment variables a
worker process needs to sync it through ``kmrl-connectors`` (``env``). ``service_env`` adds the
service-wide variables (state Redis, Hub, folders, lease TTL). The simulators live in the test
process, so a worker process can be SIGKILLed without taking the source down with it.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from sandbox.dovecot import DovecotServer
from sandbox.graph import GraphSimulator
from sandbox.hub import RunningHub
from sandbox.maximo import DEFAULT_API_KEYS, MaximoSimulator
from sandbox.servers import ServerThread
from sandbox.tls import CertAuthority
from sandbox.whatsapp import WebhookSender, WhatsAppCloudSimulator
from tests.conftest import make_settings

#: The four sources every fault test runs against.
SOURCES = ("email", "maximo", "sharepoint", "whatsapp")
#: Secret values the beds configure (scanned for by the leak test); sandbox values, not credentials.
EMAIL_PASSWORD = "reliability-imap-password-7f3a"
GRAPH_CLIENT_SECRET = "reliability-graph-client-secret-2b9e"
WHATSAPP_TOKEN = "reliability-whatsapp-token-5c1d"
WHATSAPP_APP_SECRET = "reliability-whatsapp-app-secret-9e4f"
MAXIMO_API_KEY = DEFAULT_API_KEYS[0]
#: The SharePoint site the SharePoint bed serves.
SHAREPOINT_SITE = "sites/operations"
#: Messages per webhook notification when filling the WhatsApp inbox (Meta batches them too).
NOTIFICATION_BATCH = 50
#: Size of each generated document; small, so a fault test measures recovery, not bandwidth.
DOCUMENT_BYTES = 2048


@dataclass
class Bed:
    """One source ready to sync: ``env`` for a worker, ``expected`` sha256s, the simulators in ``sims``."""

    source: str
    env: dict[str, str]
    expected: set[str]
    secrets: tuple[str, ...] = ()
    sims: dict[str, Any] = field(default_factory=dict)


#: The workers' ACK_BATCH_SIZE: smaller than the default 64, so the bound on repeats after a kill (one
#: batch, the uploads in flight among them; README "What a crash costs") is tight enough to mean
#: something for a few hundred documents.
BATCH = 16


def service_env(root: Path, state_url: str, hub: RunningHub, *, lock_ttl: float = 2.0) -> dict[str, str]:
    """Service-wide variables for a worker process: state in ``state_url``, documents to ``hub``,
    folders under ``root``, a short lease so the next run takes over a killed one quickly, batches of
    ``BATCH`` documents."""
    return {
        "REDIS_URL": state_url, "STATE_REDIS_URL": state_url, "CELERY_BROKER_URL": state_url,
        "CELERY_RESULT_BACKEND": state_url, "REDBEAT_REDIS_URL": state_url,
        "HUB_API_URL": hub.url, "HUB_API_TOKEN": hub.token,
        "SPOOL_DIR": str(root / "spool"), "DEADLETTER_DIR": str(root / "deadletter"),
        "HUB_OUTBOX_DIR": str(root / "outbox"), "LOG_FILE": str(root / "logs" / "worker.log"),
        "AUDIT_LOG": str(root / "logs" / "audit.log"), "SPOOL_MIN_FREE_MB": "1",
        "LOCK_TTL_SECONDS": str(lock_ttl), "LOG_LEVEL": "INFO", "ACK_BATCH_SIZE": str(BATCH),
        "KMRL_ENV_FILE": "",  # never read a developer's .env
    }


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def document_bytes(label: str, n: int, size: int = DOCUMENT_BYTES) -> bytes:
    """``size`` bytes that differ for every (label, n): a PDF head, then a repeated unique line."""
    line = f"KMRL {label} document {n} {uuid.uuid4().hex}\n".encode()
    return (b"%PDF-1.7\n" + line * (size // len(line) + 1))[:size]


def email_message(n: int, attachment: bytes) -> bytes:
    """A message with one base64 PDF attachment."""
    return (
        "From: Track Team <track@kochimetro.org>\r\nTo: ops@kmrl.co.in\r\n"
        f"Subject: Inspection report {n}\r\nDate: Mon, 1 Jan 2024 10:00:00 +0530\r\n"
        f"Message-ID: <rel-{n}-{uuid.uuid4().hex}@kochimetro.org>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        '--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nTrack inspection report attached.\r\n'
        f'--b1\r\nContent-Type: application/pdf; name="report-{n}.pdf"\r\n'
        f'Content-Disposition: attachment; filename="report-{n}.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode() + base64.encodebytes(attachment) + b"\r\n--b1--\r\n"


@contextmanager
def email_bed(dovecot: DovecotServer, count: int, *, size: int = DOCUMENT_BYTES) -> Iterator[Bed]:
    """A fresh mailbox on ``dovecot`` holding ``count`` messages, each with one attachment of ``size`` bytes."""
    user = f"rel{uuid.uuid4().hex[:10]}@kmrl.test"
    dovecot.add_user(user, EMAIL_PASSWORD)
    attachments = [document_bytes("email", n, size) for n in range(count)]
    dovecot.seed(user, (email_message(n, data) for n, data in enumerate(attachments)))
    env = {"EMAIL_HOST": dovecot.host, "EMAIL_PORT": str(dovecot.imaps_port), "EMAIL_USER": user,
           "EMAIL_PASSWORD": EMAIL_PASSWORD, "EMAIL_SSL_CA_FILE": dovecot.ca_path}
    yield Bed("email", env, {_digest(a) for a in attachments}, (EMAIL_PASSWORD,),
              {"dovecot": dovecot, "user": user})


@contextmanager
def maximo_bed(count: int, *, serve: Any = None, sites: tuple[str, ...] = ("MUTTOM",), host: str = "127.0.0.1",
               **options: Any) -> Iterator[Bed]:
    """A Maximo simulator holding ``count`` attachments on work orders of two attachments each,
    spread round-robin over ``sites`` (``sims["site_of"]``: sha256 -> site), served on ``host``.

    serve: a callable wrapping the simulator's WSGI app (a recorder, a garbler), or None.
    """
    sim = MaximoSimulator(**options)
    orders = sim.populate((count + 1) // 2, sites=sites, attachments=2, attachment_size=DOCUMENT_BYTES)
    links = [link for wo in orders for link in wo.doclinks.values()][:count]
    if len(links) < sum(len(wo.doclinks) for wo in orders):  # odd count: drop the spare attachment
        last = orders[-1]
        del last.doclinks[max(last.doclinks)]
    site_of = {link.sha256(): wo.siteid for wo in orders for link in wo.doclinks.values()}
    with ServerThread(serve(sim) if serve else sim, host=host) as server:
        env = {"MAXIMO_URL": server.url, "MAXIMO_AUTH": "apikey", "MAXIMO_API_KEY": MAXIMO_API_KEY}
        yield Bed("maximo", env, {link.sha256() for link in links}, (MAXIMO_API_KEY,),
                  {"maximo": sim, "site_of": site_of})


@contextmanager
def sharepoint_bed(ca: CertAuthority, count: int, *, drives: tuple[str, ...] = ("Documents",),
                   sites: tuple[str, ...] = (SHAREPOINT_SITE,), serve: Any = None,
                   delta_page_size: int = 50) -> Iterator[Bed]:
    """A Graph simulator (TLS) with ``count`` files spread over ``drives`` of each of ``sites``.

    serve: a callable wrapping the simulator's WSGI app (a request recorder), or None.
    delta_page_size: items per delta page (small, so a sync crosses several nextLink checkpoints).
    """
    sim = GraphSimulator(client_secret=GRAPH_CLIENT_SECRET, delta_page_size=delta_page_size)
    expected: set[str] = set()
    targets = [sim.store.add_drive(site, name) for site in sites for name in drives]
    for n in range(count):
        content = document_bytes("sharepoint", n)
        sim.store.put_file(targets[n % len(targets)], f"Reports/Folder {n % 7}/report-{n}.pdf", content)
        expected.add(_digest(content))
    if serve is None:
        sim.start(ca)
    else:
        from sandbox.keepalive_server import KeepAliveServer

        sim.server = KeepAliveServer(serve(sim), ca.issue("graph-simulator", hosts=("127.0.0.1", "localhost"))
                                     ).start()
    try:
        env = {"SHAREPOINT_URL": sim.sharepoint_url, "SHAREPOINT_SITES": ",".join(sites),
               "SHAREPOINT_TENANT_ID": sim.tenant_id, "SHAREPOINT_CLIENT_ID": sim.client_id,
               "SHAREPOINT_CLIENT_SECRET": GRAPH_CLIENT_SECRET, "GRAPH_BASE_URL": sim.graph_url,
               "ENTRA_AUTHORITY": sim.authority_host, "SHAREPOINT_CA_FILE": ca.ca_path}
        yield Bed("sharepoint", env, expected, (GRAPH_CLIENT_SECRET,), {"graph": sim, "drives": targets})
    finally:
        sim.stop()


@contextmanager
def whatsapp_bed(root: Path, state_url: str, count: int, *, claim_idle_seconds: float = 1.0, serve: Any = None,
                 size: int = DOCUMENT_BYTES) -> Iterator[Bed]:
    """A Cloud API simulator holding ``count`` media of ``size`` bytes, every one announced through the
    real webhook (signed notifications from Meta's sender) onto the inbox stream in ``state_url``.

    serve: a callable wrapping the Cloud API simulator's WSGI app, or None.
    """
    from web.app import create_app

    sim = WhatsAppCloudSimulator(access_token=WHATSAPP_TOKEN)
    settings = make_settings(root / "web", state_url, environ={"WHATSAPP_APP_SECRET": WHATSAPP_APP_SECRET,
                                                                "WHATSAPP_VERIFY_TOKEN": "reliability-verify"})
    client = redis.Redis.from_url(state_url)
    expected: set[str] = set()
    try:
        with ServerThread(serve(sim) if serve else sim) as graph, ServerThread(create_app(settings, client)) as web:
            sender = WebhookSender(web.url + "/webhooks/whatsapp", WHATSAPP_APP_SECRET, retry_delay=0.01)
            for start in range(0, count, NOTIFICATION_BATCH):
                messages = []
                for n in range(start, min(count, start + NOTIFICATION_BATCH)):
                    media = sim.add_media(document_bytes("whatsapp", n, size), mime_type="application/pdf")
                    expected.add(media.sha256_hex)
                    messages.append(sim.message("document", media, filename=f"report-{n}.pdf"))
                if not sender.send(sim.notification(messages)).delivered:
                    raise RuntimeError("the webhook did not take a notification")
            env = {"WHATSAPP_ACCESS_TOKEN": WHATSAPP_TOKEN, "WHATSAPP_PHONE_NUMBER_ID": sim.phone_number_id,
                   "WHATSAPP_GRAPH_URL": graph.url, "WHATSAPP_APP_SECRET": WHATSAPP_APP_SECRET,
                   "WHATSAPP_CLAIM_IDLE_SECONDS": str(claim_idle_seconds)}
            yield Bed("whatsapp", env, expected, (WHATSAPP_TOKEN, WHATSAPP_APP_SECRET),
                      {"whatsapp": sim, "webhook": web.url, "sender": sender})
    finally:
        client.close()
