"""A local WhatsApp Business Cloud API: the media endpoints and Meta's webhook sender.

Media (reference/api-contracts.md part C, "Retrieving media"): ``GET /{version}/{media-id}`` with
``Authorization: Bearer`` answers ``{url, mime_type, sha256 (hex), file_size, id}``; ``GET <url>``
with the same Bearer returns the bytes until the URL expires (``url_ttl`` seconds, 300 like Meta's
five minutes). ``GET /{version}/{phone-number-id}`` answers the number's profile (the connector's
health check). Errors carry Graph's documented bodies: an unknown media id is HTTP 400 code 100
subcode 33, a bad token HTTP 401 ``OAuthException`` code 190.

Two behaviours the reference leaves open are choices of this simulator, and the connector copes
with either: an expired download URL answers 404 with a short text body, and ``file_size`` is
sent as a string and as an integer on alternate answers (both occur in Meta's samples).

Webhooks (part C, "Notification POST", "Signature", "Retries"): ``WebhookSender`` posts a
notification the way Meta does: JSON with non-ASCII escaped (``json.dumps`` with
``ensure_ascii=True``), ``X-Hub-Signature-256`` over exactly those bytes, a retry whenever the
answer is not 200, and duplicate deliveries on demand.

Run ``python -m sandbox.whatsapp`` for the demo (``--help`` lists the options).
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import hmac
import itertools
import json
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import requests
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

#: How long a download URL answered by the media endpoint stays valid (Meta: 5 minutes); seconds.
DEFAULT_URL_TTL = 300.0
#: The Cloud API version the simulator answers under by default.
DEFAULT_API_VERSION = "v21.0"
#: Phone number id and display number of the simulated business account (Meta's sample values).
DEFAULT_PHONE_NUMBER_ID = "106540352242922"
DEFAULT_DISPLAY_PHONE_NUMBER = "15550783881"
#: The access token the simulator accepts unless told another (a sandbox value, not a credential).
SANDBOX_TOKEN = "sandbox-whatsapp-token"
#: The app secret the demo signs webhooks with unless told another (a sandbox value).
SANDBOX_APP_SECRET = "sandbox-app-secret"
#: WhatsApp Business Account id used in ``entry[].id``.
DEFAULT_WABA_ID = "102290129340398"
#: Message types that carry media, and the object key each one uses (the type name itself).
MEDIA_TYPES = ("document", "image", "audio", "video", "sticker")

#: Leading bytes of generated media, so that content sniffers see the claimed type.
_MAGIC = {
    "application/pdf": b"%PDF-1.7\n",
    "image/jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/webp": b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    "audio/ogg": b"OggS\x00\x02",
    "video/mp4": b"\x00\x00\x00\x18ftypmp42",
}


def graph_error(message: str, *, type_: str, code: int, subcode: int | None = None) -> dict[str, Any]:
    """A Graph API error body as the Cloud API sends it."""
    error: dict[str, Any] = {"message": message, "type": type_, "code": code,
                             "fbtrace_id": "A" + secrets.token_urlsafe(12)}
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


def unknown_object_error(object_id: str) -> dict[str, Any]:
    """HTTP 400 body for a media id the Cloud API does not know (expired after 7 days, or deleted)."""
    return graph_error(
        f"Unsupported get request. Object with ID '{object_id}' does not exist, cannot be loaded due to "
        "missing permissions, or does not support this operation.",
        type_="GraphMethodException", code=100, subcode=33,
    )


def invalid_token_error() -> dict[str, Any]:
    """HTTP 401 body for a missing, malformed or revoked access token."""
    return graph_error("Invalid OAuth access token - Cannot parse access token", type_="OAuthException", code=190)


@dataclass
class StoredMedia:
    """One media object held by the simulator."""

    media_id: str
    data: bytes
    mime_type: str

    @property
    def sha256_hex(self) -> str:
        """The hash as the media endpoint shows it."""
        return hashlib.sha256(self.data).hexdigest()

    @property
    def sha256_b64(self) -> str:
        """The hash as webhook samples show it."""
        return base64.b64encode(hashlib.sha256(self.data).digest()).decode("ascii")


@dataclass
class _Fault:
    status: int
    remaining: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def generated_media(mime_type: str, size: int, *, seed: str) -> bytes:
    """``size`` bytes that start with the magic of ``mime_type`` and are unique to ``seed``."""
    magic = _MAGIC.get(mime_type, b"")
    rng = random.Random(seed)
    body = rng.randbytes(max(0, size - len(magic)))
    return (magic + body)[:size] if size >= len(magic) else magic[:size]


class WhatsAppCloudSimulator:
    """The Cloud API's media and phone-number endpoints as a WSGI app (serve it with ServerThread).

    access_token: the Bearer token accepted (``set_access_token`` rotates it, revoking the old one).
    phone_number_id / display_phone_number: the business number this account owns.
    api_version: accepted version path segment; any ``v<major>.<minor>`` works, this is informational.
    url_ttl: seconds a download URL stays valid (default 300).
    clock: time source in seconds (tests may pass their own).

    ``counts`` holds requests served per endpoint: ``media`` (step 1), ``download`` (step 2),
    ``phone_number``. ``fail_next`` injects faults; ``expire_urls`` ends every URL issued so far.
    """

    def __init__(self, *, access_token: str = SANDBOX_TOKEN,
                 phone_number_id: str = DEFAULT_PHONE_NUMBER_ID,
                 display_phone_number: str = DEFAULT_DISPLAY_PHONE_NUMBER,
                 api_version: str = DEFAULT_API_VERSION, url_ttl: float = DEFAULT_URL_TTL,
                 clock: Callable[[], float] = time.time) -> None:
        self.access_token = access_token
        self.phone_number_id = phone_number_id
        self.display_phone_number = display_phone_number
        self.api_version = api_version
        self.url_ttl = url_ttl
        self.clock = clock
        self.counts: collections.Counter[str] = collections.Counter()
        self._media: dict[str, StoredMedia] = {}
        self._faults: dict[str, list[_Fault]] = collections.defaultdict(list)
        self._url_key = secrets.token_bytes(16)
        self._not_before = 0.0  # URLs issued before this time are expired
        self._ids = itertools.count(int(time.time() * 1000) % 10**12 * 10**7)
        self._file_size_as_int = False
        self._expire_next = 0
        self._lock = threading.Lock()
        self._urls = Map([
            Rule("/whatsapp_business/attachments/", endpoint="download", methods=["GET"]),
            Rule("/<version>/<object_id>", endpoint="object", methods=["GET"]),
        ])

    # ---- test API -------------------------------------------------------------------------

    def add_media(self, data: bytes | None = None, *, mime_type: str = "application/pdf", size: int = 2048,
                  media_id: str | None = None) -> StoredMedia:
        """Stores media (``data``, or ``size`` generated bytes of ``mime_type``) and returns it."""
        with self._lock:
            media_id = media_id or str(next(self._ids))
        if data is None:
            data = generated_media(mime_type, size, seed=media_id)
        media = StoredMedia(media_id=media_id, data=data, mime_type=mime_type)
        with self._lock:
            self._media[media_id] = media
        return media

    def media(self, media_id: str) -> StoredMedia:
        """The stored media with that id (KeyError if unknown)."""
        return self._media[media_id]

    def delete_media(self, media_id: str) -> None:
        """Forgets a media id, as Meta does after 7 days: step 1 then answers 400 code 100/33."""
        with self._lock:
            self._media.pop(media_id, None)

    def expire_urls(self) -> None:
        """Every download URL issued so far stops working (as if 5 minutes had passed)."""
        self._not_before = self.clock() + 1e-6

    def expire_next_urls(self, count: int = 1) -> None:
        """The next ``count`` download URLs are issued already expired, as if the client had waited
        longer than ``url_ttl`` between the two steps."""
        with self._lock:
            self._expire_next += count

    def set_access_token(self, token: str) -> None:
        """Accepts only ``token`` from now on."""
        self.access_token = token

    def fail_next(self, endpoint: str, status: int, *, times: int = 1, body: Any = None,
                  headers: Mapping[str, str] | None = None) -> None:
        """The next ``times`` requests to ``endpoint`` (``media``, ``download``, ``phone_number``)
        answer ``status`` with ``body`` (a dict is sent as JSON) and ``headers``, before any check."""
        self._faults[endpoint].append(_Fault(status, times, body, dict(headers or {})))

    def message(self, kind: str, media: StoredMedia, *, sender: str = "919847000001",
                caption: str | None = None, filename: str | None = None, wamid: str | None = None,
                timestamp: int | None = None) -> dict[str, Any]:
        """An inbound message of ``kind`` (document, image, audio, video, sticker) carrying ``media``."""
        return media_message(kind, media.media_id, mime_type=media.mime_type, sha256=media.sha256_b64,
                             sender=sender, caption=caption, filename=filename, wamid=wamid,
                             timestamp=timestamp)

    def notification(self, messages: Iterable[Mapping[str, Any]], *,
                     profile_names: Mapping[str, str] | None = None) -> dict[str, Any]:
        """A webhook notification of ``messages`` to this business number."""
        return inbound_notification(messages, phone_number_id=self.phone_number_id,
                                    display_phone_number=self.display_phone_number,
                                    profile_names=profile_names)

    # ---- WSGI -----------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        try:
            endpoint, args = self._urls.bind_to_environ(environ).match()
            if endpoint == "download":
                response = self._download(request)
            else:
                response = self._object(request, args["version"], args["object_id"])
        except NotFound:
            response = _json(400, graph_error("Unknown path components", type_="OAuthException", code=2500))
        except HTTPException as exc:
            response = exc.get_response()  # type: ignore[assignment]
        return response(environ, start_response)

    def _object(self, request: Request, version: str, object_id: str) -> Response:
        endpoint = "phone_number" if object_id == self.phone_number_id else "media"
        self.counts[endpoint] += 1
        fault = self._take_fault(endpoint)
        if fault is not None:
            return fault
        if not self._authorised(request):
            return _json(401, invalid_token_error())
        if not (version.startswith("v") and version[1:].replace(".", "").isdigit()):
            return _json(400, graph_error(f"Unknown version {version}", type_="OAuthException", code=2500))
        if endpoint == "phone_number":
            return _json(200, {"verified_name": "Kochi Metro Rail", "code_verification_status": "VERIFIED",
                               "display_phone_number": self.display_phone_number, "quality_rating": "GREEN",
                               "id": self.phone_number_id})
        media = self._media.get(object_id)
        if media is None:
            return _json(400, unknown_object_error(object_id))
        expires = self.clock() + self.url_ttl
        with self._lock:
            if self._expire_next > 0:
                self._expire_next -= 1
                expires = self.clock() - 1.0
        mac = self._url_mac(media.media_id, expires)
        query = urlencode({"mid": media.media_id, "ext": f"{expires:.6f}", "hash": mac})
        self._file_size_as_int = not self._file_size_as_int
        size: int | str = len(media.data) if self._file_size_as_int else str(len(media.data))
        return _json(200, {"messaging_product": "whatsapp",
                           "url": f"{request.host_url}whatsapp_business/attachments/?{query}",
                           "mime_type": media.mime_type, "sha256": media.sha256_hex, "file_size": size,
                           "id": media.media_id})

    def _download(self, request: Request) -> Response:
        self.counts["download"] += 1
        fault = self._take_fault("download")
        if fault is not None:
            return fault
        if not self._authorised(request):
            return Response("Unauthorized", status=401, mimetype="text/plain")
        mid = request.args.get("mid", "")
        try:
            expires = float(request.args.get("ext", ""))
        except ValueError:
            return Response("Bad URL", status=400, mimetype="text/plain")
        if not hmac.compare_digest(self._url_mac(mid, expires), request.args.get("hash", "")):
            return Response("Bad URL signature", status=403, mimetype="text/plain")
        if self.clock() > expires or expires - self.url_ttl < self._not_before:
            return Response("URL signature expired", status=404, mimetype="text/plain")
        media = self._media.get(mid)
        if media is None:
            return Response("Not found", status=404, mimetype="text/plain")
        return Response(media.data, status=200, mimetype=media.mime_type,
                        headers={"Content-Length": str(len(media.data))})

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("Authorization", "")
        return hmac.compare_digest(header.encode(), f"Bearer {self.access_token}".encode())

    def _url_mac(self, media_id: str, expires: float) -> str:
        return hmac.new(self._url_key, f"{media_id}|{expires:.6f}".encode(), hashlib.sha256).hexdigest()[:32]

    def _take_fault(self, endpoint: str) -> Response | None:
        with self._lock:
            queue = self._faults.get(endpoint)
            if not queue:
                return None
            fault = queue[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                queue.pop(0)
        if isinstance(fault.body, (dict, list)):
            return _json(fault.status, fault.body, fault.headers)
        return Response(fault.body or "", status=fault.status, headers=fault.headers, mimetype="text/plain")


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json", headers=dict(headers or {}))


# ---- payload builders ---------------------------------------------------------------------

_wamid_counter = itertools.count(1)


def new_wamid() -> str:
    """A message id shaped like Meta's (``wamid.`` + base64), unique within this process."""
    raw = f"{time.time_ns()}-{next(_wamid_counter)}-{secrets.token_hex(4)}".encode()
    return "wamid." + base64.b64encode(raw).decode("ascii").rstrip("=")


def media_message(kind: str, media_id: str, *, mime_type: str, sha256: str, sender: str = "919847000001",
                  caption: str | None = None, filename: str | None = None, wamid: str | None = None,
                  timestamp: int | None = None) -> dict[str, Any]:
    """An inbound media message of ``kind`` shaped as in Meta's webhook reference."""
    if kind not in MEDIA_TYPES:
        raise ValueError(f"not a media message type: {kind}")
    media: dict[str, Any] = {"mime_type": mime_type, "sha256": sha256, "id": media_id}
    if kind == "document" and filename is not None:
        media["filename"] = filename
    if kind in ("document", "image", "video") and caption is not None:
        media["caption"] = caption
    if kind == "audio":
        media["voice"] = False
    if kind == "sticker":
        media["animated"] = False
    return {"from": sender, "id": wamid or new_wamid(), "timestamp": str(timestamp or int(time.time())),
            "type": kind, kind: media}


def text_message(body: str, *, sender: str = "919847000001", wamid: str | None = None) -> dict[str, Any]:
    """An inbound text message (not a document: the webhook does not store it)."""
    return {"from": sender, "id": wamid or new_wamid(), "timestamp": str(int(time.time())), "type": "text",
            "text": {"body": body}}


def inbound_notification(messages: Iterable[Mapping[str, Any]], *,
                         phone_number_id: str = DEFAULT_PHONE_NUMBER_ID,
                         display_phone_number: str = DEFAULT_DISPLAY_PHONE_NUMBER,
                         profile_names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A ``messages`` notification carrying ``messages``, with a contact per distinct sender."""
    messages = [dict(m) for m in messages]
    names = dict(profile_names or {})
    senders = list(dict.fromkeys(str(m.get("from", "")) for m in messages))
    contacts = [{"profile": {"name": names.get(s, f"Sender {s[-4:]}")}, "wa_id": s} for s in senders if s]
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": display_phone_number, "phone_number_id": phone_number_id},
             "contacts": contacts, "messages": messages}
    return _envelope(value)


def status_notification(wamid: str, status: str = "delivered", *, recipient: str = "919847000001",
                        phone_number_id: str = DEFAULT_PHONE_NUMBER_ID,
                        display_phone_number: str = DEFAULT_DISPLAY_PHONE_NUMBER) -> dict[str, Any]:
    """A status update for an outbound message (never a document)."""
    now = str(int(time.time()))
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": display_phone_number, "phone_number_id": phone_number_id},
             "statuses": [{"id": wamid, "status": status, "timestamp": now, "recipient_id": recipient,
                           "conversation": {"id": secrets.token_hex(16), "origin": {"type": "service"}},
                           "pricing": {"billable": True, "pricing_model": "CBP", "category": "service"}}]}
    return _envelope(value)


def _envelope(value: dict[str, Any]) -> dict[str, Any]:
    return {"object": "whatsapp_business_account",
            "entry": [{"id": DEFAULT_WABA_ID, "changes": [{"field": "messages", "value": value}]}]}


# ---- Meta's webhook sender ----------------------------------------------------------------

def meta_body(payload: Mapping[str, Any]) -> bytes:
    """The bytes Meta sends for ``payload``: JSON with every non-ASCII character escaped."""
    return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def signature(app_secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value for ``body``: ``sha256=`` + lowercase hex HMAC-SHA256."""
    return "sha256=" + hmac.new(app_secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


@dataclass
class Delivery:
    """What happened to one notification: the HTTP status of every attempt (``None``: no answer)."""

    statuses: list[int | None] = field(default_factory=list)

    @property
    def delivered(self) -> bool:
        """True when an attempt was answered 200."""
        return bool(self.statuses) and self.statuses[-1] == 200


class WebhookSender:
    """Posts notifications to a webhook endpoint as Meta does.

    url: the callback URL (``.../webhooks/whatsapp``).
    app_secret: the app secret that signs every body.
    attempts: deliveries tried per notification until one is answered 200 (default 4; Meta goes on
        for 7 days).
    retry_delay: seconds before the first retry, doubled per retry (default 0.05; Meta's is minutes).
    timeout: seconds Meta waits for an answer (default 10).
    """

    def __init__(self, url: str, app_secret: str, *, attempts: int = 4, retry_delay: float = 0.05,
                 timeout: float = 10.0, session: requests.Session | None = None) -> None:
        self.url = url
        self.app_secret = app_secret
        self.attempts = attempts
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.session = session or requests.Session()
        #: Every delivery made, in order.
        self.log: list[Delivery] = []

    def send(self, payload: Mapping[str, Any], *, duplicates: int = 0) -> Delivery:
        """Delivers ``payload`` (retrying until answered 200), then ``duplicates`` more times."""
        body = meta_body(payload)
        first = self.send_body(body)
        for _ in range(duplicates):
            self.send_body(body)
        return first

    def send_body(self, body: bytes, *, signed: bool = True, signature_value: str | None = None) -> Delivery:
        """Delivers raw ``body`` with its signature (or ``signature_value``, or none when not ``signed``)."""
        headers = {"Content-Type": "application/json", "User-Agent": "facebookexternalua"}
        if signature_value is not None:
            headers["X-Hub-Signature-256"] = signature_value
        elif signed:
            headers["X-Hub-Signature-256"] = signature(self.app_secret, body)
        delivery = Delivery()
        delay = self.retry_delay
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(delay)
                delay *= 2
            try:
                response = self.session.post(self.url, data=body, headers=headers, timeout=self.timeout)
            except requests.RequestException:
                delivery.statuses.append(None)
                continue
            delivery.statuses.append(response.status_code)
            response.close()
            if response.status_code == 200:
                break
        self.log.append(delivery)
        return delivery


# ---- demo ---------------------------------------------------------------------------------

_DEMO_MESSAGES = (
    ("document", "application/pdf", "Metro_Rail_Safety_Circular.pdf", "സുരക്ഷാ സർക്കുലർ: ആലുവ സ്റ്റേഷൻ"),
    ("document", "application/pdf", "WO-4411 bogie inspection.pdf", "Rolling stock maintenance report"),
    ("image", "image/jpeg", None, "Platform 2 signage damage, Edappally"),
    ("audio", "audio/ogg", None, None),
)


def _main(argv: list[str] | None = None) -> int:
    """``python -m sandbox.whatsapp``: the Cloud API simulator until Ctrl-C; prints where it listens and
    the WHATSAPP_* lines to use (``--webhook-url`` also posts demo notifications there)."""
    from sandbox.announce import announce, wait_for_stop
    from sandbox.servers import ServerThread

    parser = argparse.ArgumentParser(prog="python -m sandbox.whatsapp",
                                     description="Serve a simulated WhatsApp Cloud API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    parser.add_argument("--token", default=SANDBOX_TOKEN, help="access token to accept")
    parser.add_argument("--app-secret", default=SANDBOX_APP_SECRET, help="app secret signing webhooks")
    parser.add_argument("--verify-token", default="sandbox-verify-token",
                        help="the WHATSAPP_VERIFY_TOKEN to set for the webhook's handshake")
    parser.add_argument("--webhook-url", help="post demo notifications here (e.g. http://127.0.0.1:8000/webhooks/whatsapp)")
    parser.add_argument("--url-ttl", type=float, default=DEFAULT_URL_TTL, help="download URL lifetime, seconds")
    args = parser.parse_args(argv)

    sim = WhatsAppCloudSimulator(access_token=args.token, url_ttl=args.url_ttl)
    with ServerThread(sim, port=args.port) as server:
        # Sandbox values, printed as lines a shell or a .env file can take as they are.
        announce("WhatsApp Cloud API", server.url, {
            "WHATSAPP_GRAPH_URL": server.url, "WHATSAPP_PHONE_NUMBER_ID": sim.phone_number_id,
            "WHATSAPP_ACCESS_TOKEN": args.token, "WHATSAPP_APP_SECRET": args.app_secret,
            "WHATSAPP_VERIFY_TOKEN": args.verify_token})
        if args.webhook_url:
            sender = WebhookSender(args.webhook_url, args.app_secret)
            messages = []
            for kind, mime, filename, caption in _DEMO_MESSAGES:
                media = sim.add_media(mime_type=mime, size=4096)
                messages.append(sim.message(kind, media, filename=filename, caption=caption))
            delivery = sender.send(sim.notification(messages, profile_names={"919847000001": "Anjali Menon"}))
            print(f"posted {len(messages)} media messages to {args.webhook_url}: HTTP {delivery.statuses}")
        wait_for_stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
