"""WhatsApp Business media: the inbox stream in, the Cloud API's media endpoints for the bytes.

The Cloud API cannot list past messages (reference/api-contracts.md part C), so the webhook
(web/webhook.py) queues every inbound media message on the stream ``kmrl:whatsapp:inbox``
(connectors/whatsapp_inbox.py) and this connector drains it through a consumer group:

- entries another consumer read but never acknowledged (a killed worker, a run that stopped early,
  a dry run) are claimed back once idle for ``claim_idle_seconds``; then new entries are read;
- each entry becomes an ``Item`` at once, from what the webhook stored; its bytes are fetched only
  in ``open()``: ``GET /{version}/{media-id}`` for a URL valid five minutes, then ``GET <url>`` with
  the same Bearer token (resolved once more if that URL has expired). Resolving at the last moment
  means no URL goes stale while earlier items upload, and an entry whose wamid is already ingested
  costs no Graph request at all;
- ``acknowledge(item)``, which the pipeline calls once an item is done (uploaded, found duplicate,
  skipped by a rule, or dead-lettered), acknowledges and deletes its stream entry. Nothing else
  ever removes an entry, so an entry is never lost between the webhook and the Hub. A failure is
  therefore always an ``Item`` whose ``open()`` raises ``ItemError``, never an ``ItemFailure``: the
  pipeline acknowledges dead-lettered Items but not ItemFailures, and an unacknowledged entry would
  come back after every claim timeout to be dead-lettered again.

The cursor of this source is the consumer group itself: ``list_changes`` ignores the stored cursor.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import mimetypes
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import requests

from base.base_connector import BaseConnector
from base.contract import Checkpoint, HealthResult, HealthState, Item, ItemFailure
from config.settings import Settings
from connectors.whatsapp_inbox import InboundMedia, Inbox, InboxEntry, consumer_name
from utils.credentials_manager import CredentialsManager
from utils.errors import AuthError, ConfigError, ItemError, ItemTooLarge, ThrottledError, TransientError
from utils.http import HttpClient, OriginPolicy, iter_response, json_body
from utils.logging import get_logger, register_secret

log = get_logger(__name__)

#: Graph API host of the Cloud API (WHATSAPP_GRAPH_URL overrides it, e.g. for the simulator).
DEFAULT_GRAPH_URL = "https://graph.facebook.com"
#: Cloud API version used in every path (WHATSAPP_API_VERSION).
DEFAULT_API_VERSION = "v21.0"
#: Hosts besides the Graph host that may receive the Bearer token with a media download: where Meta's
#: media URLs point (WHATSAPP_MEDIA_HOSTS; a bare host means https, a full URL names its own origin).
DEFAULT_MEDIA_HOSTS = ("lookaside.fbsbx.com",)
#: An entry read but not acknowledged for this long is claimed by the next run; seconds
#: (WHATSAPP_CLAIM_IDLE_SECONDS). Shorter than the 10-minute schedule, so the next tick reclaims it.
DEFAULT_CLAIM_IDLE_SECONDS = 300.0
#: Entries read from the stream per XREADGROUP; an entry read but not reached when a run stops
#: waits for the claim timeout, so a small batch keeps that wait rare.
DEFAULT_BATCH_SIZE = 16
#: An entry delivered this many times without being done is dead-lettered instead of blocking the
#: queue (each delivery is one run that stopped on it with a transient failure).
DEFAULT_MAX_DELIVERIES = 10
#: Graph codes meaning "slow down" (app, WABA, throughput, pair rate limits), and how long every
#: worker then leaves the Cloud API alone when Meta gives no Retry-After; seconds.
RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, 80007, 130429, 131056})
RATE_LIMIT_PAUSE = 60.0
#: Graph codes meaning the access token is invalid, expired or revoked.
TOKEN_CODES = frozenset({102, 104, 190, 463, 467})
#: Statuses of a download URL that has expired or was refused; worth resolving the media id again.
STALE_URL_STATUSES = frozenset({401, 403, 404, 410})
#: Undelivered entries older than this make the health check "degraded": Meta forgets media ids
#: after 7 days, so such entries are about to become impossible to download; seconds.
BACKLOG_WARN_AGE = 5 * 24 * 3600
#: India Standard Time, for generated filenames people at KMRL read (no daylight saving).
IST = dt.timezone(dt.timedelta(hours=5, minutes=30), "IST")
#: Extensions for media types whose ``mimetypes`` answer is missing or unusual.
_EXTENSIONS = {"audio/ogg": ".ogg", "audio/amr": ".amr", "video/3gpp": ".3gp", "image/jpeg": ".jpg",
               "audio/opus": ".opus", "text/plain": ".txt"}
_VERSION = re.compile(r"^v\d+\.\d+$")


@dataclass(frozen=True)
class MediaInfo:
    """Step 1's answer: where to download, and what Meta says the bytes are."""

    url: str
    mime_type: str
    sha256: str
    file_size: int | None


class WhatsAppConnector(BaseConnector):
    """Media sent to the KMRL WhatsApp Business number, from the webhook's inbox stream.

    access_token: Cloud API token (WHATSAPP_ACCESS_TOKEN); credentials given to a run override it.
    phone_number_id: the business number's id (WHATSAPP_PHONE_NUMBER_ID).
    api_version: Graph version path segment such as ``v21.0`` (WHATSAPP_API_VERSION).
    graph_base_url: Graph host (WHATSAPP_GRAPH_URL; default ``https://graph.facebook.com``).
    media_hosts: where media URLs may point (WHATSAPP_MEDIA_HOSTS; default ``lookaside.fbsbx.com``):
        the Bearer token goes to the Graph host and these only, never to whatever host the media
        lookup names (a download URL elsewhere ends the run with a config error naming its origin).
    claim_idle_seconds: idle time after which an unacknowledged entry is claimed back (default 300).
    batch_size: entries per stream read (default 16).
    max_deliveries: deliveries of one entry before it is dead-lettered (default 10).
    timeout: (connect, read) seconds for Graph requests and downloads (default 5, 60).
    http_client: the HttpClient to use (default: one named ``whatsapp`` from ``clients``, with the
        shared retry policy and throttle gate); tests and benchmarks pass their own to count or not sleep.
    inbox: the webhook's inbox stream, handed in by the service's wiring (default: the one under
        ``state``'s connection and key prefix).
    Plus BaseConnector's keyword-only ``state``, ``hub``, ``settings``, ``rules``, ``clients``.
    """

    name = "whatsapp"
    cannot_list_again = ("its media arrive once, through the webhook's inbox, and a Cloud API media id can "
                         "be downloaded for 30 days only")

    def __init__(self, *, access_token: str = "", phone_number_id: str = "",
                 api_version: str = DEFAULT_API_VERSION, graph_base_url: str = DEFAULT_GRAPH_URL,
                 media_hosts: tuple[str, ...] | list[str] = DEFAULT_MEDIA_HOSTS,
                 claim_idle_seconds: float = DEFAULT_CLAIM_IDLE_SECONDS, batch_size: int = DEFAULT_BATCH_SIZE,
                 max_deliveries: int = DEFAULT_MAX_DELIVERIES, timeout: tuple[float, float] = (5.0, 60.0),
                 http_client: HttpClient | None = None, inbox: Inbox | None = None, **base: Any) -> None:
        super().__init__(**base)
        if not _VERSION.match(api_version):
            raise ConfigError(f"WHATSAPP_API_VERSION must look like v21.0, not {api_version!r}")
        register_secret(access_token)
        self.access_token = access_token
        self.phone_number_id = phone_number_id
        self.api_version = api_version
        self.graph_base_url = graph_base_url.rstrip("/")
        self.origins = OriginPolicy.of(
            self.graph_base_url, *(host if "://" in host else f"https://{host}" for host in media_hosts if host),
            setting="WHATSAPP_GRAPH_URL, WHATSAPP_MEDIA_HOSTS")
        self.claim_idle_ms = int(claim_idle_seconds * 1000)
        self.batch_size = batch_size
        self.max_deliveries = max_deliveries
        self.timeout = timeout
        self.inbox = inbox if inbox is not None else Inbox.of_store(self.state)
        self._http: HttpClient | None = http_client
        # Stream entry of each Item handed out and not yet acknowledged, by the Item's identity:
        # Items are unhashable dataclasses, and the entry id is no business of the Hub's metadata.
        self._entry_of: dict[int, str] = {}

    @classmethod
    def from_settings(cls, settings: Settings, **kw: Any) -> WhatsAppConnector:
        """The connector configured from WHATSAPP_* variables (the webhook's own variables,
        WHATSAPP_APP_SECRET, WHATSAPP_VERIFY_TOKEN and WHATSAPP_MAX_BODY_KB, are read by web/)."""
        return cls(
            access_token=settings.env("WHATSAPP_ACCESS_TOKEN"),
            phone_number_id=settings.env("WHATSAPP_PHONE_NUMBER_ID"),
            api_version=settings.env("WHATSAPP_API_VERSION", DEFAULT_API_VERSION),
            graph_base_url=settings.env("WHATSAPP_GRAPH_URL", DEFAULT_GRAPH_URL),
            media_hosts=settings.env_list("WHATSAPP_MEDIA_HOSTS", ",".join(DEFAULT_MEDIA_HOSTS)),
            claim_idle_seconds=settings.reader.duration("WHATSAPP_CLAIM_IDLE_SECONDS", DEFAULT_CLAIM_IDLE_SECONDS,
                                                        unit="seconds", minimum=0),
            settings=settings, **kw,
        )

    # -- the connector contract -------------------------------------------------------------------
    def default_credentials(self) -> Mapping[str, Any]:
        if self.access_token and self.phone_number_id:
            return {"access_token": self.access_token, "phone_number_id": self.phone_number_id}
        return CredentialsManager(self.settings).get_whatsapp_credentials()

    def connect(self, credentials: Mapping[str, Any]) -> AbstractContextManager[None]:
        return self._connected(credentials)

    @contextmanager
    def _connected(self, credentials: Mapping[str, Any]) -> Iterator[None]:
        self.credentials = credentials
        token = str(credentials.get("access_token") or self.access_token)
        if not token:
            raise ConfigError("WhatsApp is not configured: set WHATSAPP_ACCESS_TOKEN (see env.example)")
        register_secret(token)
        self.access_token = token
        self.phone_number_id = str(credentials.get("phone_number_id") or self.phone_number_id)
        yield

    def scopes(self) -> list[str]:
        return ["inbox"]

    def list_changes(self, scope: str, cursor: Any) -> Iterator[Item | ItemFailure | Checkpoint]:
        """Entries left pending past the claim timeout, then new entries, until the stream is drained."""
        self.inbox.ensure_group()
        consumer = consumer_name(self.name)
        self._entry_of.clear()
        forgotten = self.inbox.forget_idle_consumers(max(2 * self.claim_idle_ms, 3600_000))
        if forgotten:
            log.info("whatsapp_consumers_forgotten", count=forgotten)
        yield from self._reclaimed(consumer)
        while True:
            entries = self.inbox.read_new(consumer, count=self.batch_size)
            if not entries:
                return
            for entry in entries:
                yield self._item(entry)
            # The consumer group is the cursor: the stored one only comes back unchanged. The checkpoint
            # lets the pipeline stop at its deadline between batches while the webhook keeps filling it.
            yield Checkpoint(cursor)

    def _reclaimed(self, consumer: str) -> Iterator[Item]:
        # One entry per claim: claiming counts a delivery, and only an entry this run actually
        # reaches should count one (a run that stops on the first entry must not age the rest).
        for entry in self.inbox.claim_idle(consumer, self.claim_idle_ms, count=1):
            deliveries = self.inbox.deliveries(entry.entry_id)
            log.info("whatsapp_entry_reclaimed", entry_id=entry.entry_id, wamid=entry.media.wamid,
                     deliveries=deliveries)
            if deliveries > self.max_deliveries:
                yield self._item(entry, give_up=f"gave up after {deliveries - 1} deliveries that each ended "
                                                 "in a transient failure")
            else:
                yield self._item(entry)

    def acknowledge(self, item: Item) -> None:
        """Acknowledges (and deletes) the item's stream entry: the Hub has it, or it is dead-lettered."""
        entry_id = self._entry_of.pop(id(item), None)
        if entry_id is not None:
            self.inbox.ack(entry_id)

    def health_check(self, credentials: Mapping[str, Any] | None = None) -> HealthResult:
        """``GET /{version}/{phone-number-id}`` proves the token for the number; the inbox backlog
        turns the answer ``degraded`` when undelivered entries near Meta's 7-day media expiry."""
        token = str((credentials or {}).get("access_token") or self.access_token)
        phone = str((credentials or {}).get("phone_number_id") or self.phone_number_id)
        if not token or not phone:
            return HealthResult(False, HealthState.CONFIG_ERROR,
                                "set WHATSAPP_ACCESS_TOKEN and WHATSAPP_PHONE_NUMBER_ID")
        register_secret(token)
        try:
            response = self._client().request("GET", self._graph_url(phone), headers=_bearer(token),
                                              origins=self.origins)
            if response.status_code != 200:
                raise _graph_failure(response, subject=f"phone number id {phone}", unknown_is_config=True)
            display = _json(response).get("display_phone_number", "")
        except (ConfigError, TransientError) as exc:
            return HealthResult.from_error(exc, prefix="Cloud API: ")
        except (ItemError, requests.RequestException) as exc:
            return HealthResult(False, HealthState.UNREACHABLE, f"Cloud API: {exc}")
        detail = f"token valid for phone number id {phone} ({display or 'no display number'})"
        try:
            backlog, oldest_age = self.inbox.backlog()
        except Exception as exc:  # noqa: BLE001 - a health check reports, it never raises
            return HealthResult(False, HealthState.DEGRADED, f"{detail}; inbox stream unreadable: {type(exc).__name__}")
        detail += f"; {backlog} entries waiting in the inbox"
        if backlog and oldest_age > BACKLOG_WARN_AGE:
            return HealthResult(False, HealthState.DEGRADED, f"{detail}, the oldest for {oldest_age / 86400:.1f} days "
                                                   "(Meta forgets media ids after 7)")
        return HealthResult(True, HealthState.HEALTHY, detail)

    # -- items ------------------------------------------------------------------------------------
    def _item(self, entry: InboxEntry, *, give_up: str = "") -> Item:
        media = entry.media
        item = Item(
            source_id=media.wamid or f"entry:{entry.entry_id}",
            version=media.wamid or media.media_id,
            filename=item_filename(media),
            open=self._opener(media, give_up),
            mime_type=_bare_mime(media.mime_type) or "application/octet-stream",
            title=_first_line(media.caption) or media.filename,
            text=media.caption,
            author=media.profile_name or media.sender,
            created_at=_iso(media.timestamp),
            metadata={"phone_number_id": media.phone_number_id, "display_phone_number": media.display_phone_number,
                      "from": media.sender, "profile_name": media.profile_name, "wamid": media.wamid,
                      "timestamp": media.timestamp, "media_id": media.media_id, "mime_type": media.mime_type,
                      "message_type": media.type},
            hints={"phone": media.sender} if media.sender else {},
        )
        self._entry_of[id(item)] = entry.entry_id
        return item

    def _opener(self, media: InboundMedia, give_up: str) -> Any:
        def open_() -> Iterator[bytes]:
            if give_up:
                raise ItemError(give_up)
            if not media.media_id:
                raise ItemError("the stream entry has no media id")
            yield from self._download(media)
        return open_

    def _download(self, media: InboundMedia) -> Iterator[bytes]:
        info = self.resolve(media.media_id)
        limit = self.max_document_bytes
        if info.file_size is not None and limit is not None and info.file_size > limit:
            # Refused on the Cloud API's word, before a byte is downloaded.
            raise ItemTooLarge(f"the Cloud API gives {info.file_size} bytes, over the limit of {limit}")
        response = self._get_media(info.url)
        if response.status_code in STALE_URL_STATUSES:
            # The five-minute URL expired (or was refused) between the two steps: ask again, once.
            response.close()
            log.info("whatsapp_media_url_stale", media_id=media.media_id, status=response.status_code)
            info = self.resolve(media.media_id)
            response = self._get_media(info.url)
        if response.status_code != 200:
            status = response.status_code
            response.close()
            if status == 401:
                raise AuthError("the Cloud API refused the access token for a media download (HTTP 401)")
            raise ItemError(f"media {media.media_id}: download answered HTTP {status}")
        expected_hash = _sha256_bytes(info.sha256) or _sha256_bytes(media.sha256)
        digest = hashlib.sha256()
        received = 0
        for chunk in iter_response(response):
            digest.update(chunk)
            received += len(chunk)
            yield chunk
        if info.file_size is not None and received != info.file_size:
            raise TransientError(f"media {media.media_id}: download ended after {received} of "
                                 f"{info.file_size} bytes")
        if expected_hash is not None and digest.digest() != expected_hash:
            raise ItemError(f"media {media.media_id}: sha256 of the download differs from the Cloud API's")

    def resolve(self, media_id: str) -> MediaInfo:
        """Step 1: the media id's download URL, mime type, sha256 and size.

        Raises ``ItemError`` when the Cloud API no longer knows the id (older than 7 days, or
        deleted), ``AuthError`` for a rejected token, ``ThrottledError`` when rate limited.
        """
        client = self._client()
        response = client.request("GET", self._graph_url(media_id), headers=_bearer(self.access_token),
                                  origins=self.origins)
        if response.status_code != 200:
            failure = _graph_failure(response, subject=f"media id {media_id}")
            if isinstance(failure, ThrottledError) and client.gate is not None:
                client.gate.block_until(failure.retry_at)  # every worker waits, not just this run
            raise failure
        body = _json(response)
        url = body.get("url")
        # The Bearer token goes to this URL too: never over plain HTTP when Graph itself is HTTPS (and
        # only to an allowed origin, which the HTTP layer checks when the bytes are fetched).
        schemes = ("https://",) if self.graph_base_url.startswith("https://") else ("https://", "http://")
        if not isinstance(url, str) or not url.startswith(schemes):
            raise ItemError(f"media id {media_id}: the Cloud API answered without an acceptable download URL")
        size = str(body.get("file_size") or "")  # a string in some answers, an integer in others
        return MediaInfo(url=url, mime_type=str(body.get("mime_type") or ""), sha256=str(body.get("sha256") or ""),
                         file_size=int(size) if size.isdigit() else None)

    def _get_media(self, url: str) -> requests.Response:
        # Step 2 needs the same Bearer token; a plain GET does not return the media. The token goes only
        # to the Graph host and the media hosts (self.origins), redirects included.
        return self._client().request("GET", url, headers=_bearer(self.access_token), stream=True,
                                      origins=self.origins)

    def _graph_url(self, object_id: str) -> str:
        return f"{self.graph_base_url}/{self.api_version}/{object_id}"

    def _client(self) -> HttpClient:
        if self._http is None:
            self._http = self.clients.http("whatsapp", tenant=self.phone_number_id, timeout=self.timeout)
        return self._http





def item_filename(media: InboundMedia) -> str:
    """The document's own filename; else ``{type}_{sender}_{YYYYmmdd_HHMMSS IST}{.ext of its mime type}``."""
    if media.filename.strip():
        return media.filename
    when = _when(media.timestamp)
    stamp = when.astimezone(IST).strftime("%Y%m%d_%H%M%S") if when else "undated"
    return f"{media.type or 'media'}_{media.sender or 'unknown'}_{stamp}{extension_for(media.mime_type)}"


def extension_for(mime_type: str) -> str:
    """A file extension (with its dot) for a mime type such as ``audio/ogg; codecs=opus``."""
    bare = _bare_mime(mime_type)
    return _EXTENSIONS.get(bare) or mimetypes.guess_extension(bare) or ".bin"


def _bare_mime(mime_type: str) -> str:
    return mime_type.split(";", 1)[0].strip().lower()


def _first_line(text: str, limit: int = 200) -> str:
    return text.strip().splitlines()[0][:limit] if text.strip() else ""


def _when(timestamp: str) -> dt.datetime | None:
    if not timestamp.isdigit():
        return None
    return dt.datetime.fromtimestamp(int(timestamp), dt.UTC)


def _iso(timestamp: str) -> str | None:
    when = _when(timestamp)
    return when.isoformat() if when else None


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = json_body(response)
    except ValueError:  # not JSON, or nested too deeply to parse: as good as an empty answer
        return {}
    return body if isinstance(body, dict) else {}


def _sha256_bytes(value: str) -> bytes | None:
    """The 32 bytes of a SHA-256 given as hex or as base64 (Meta uses both; part C); None if neither."""
    value = value.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", value):
        return bytes.fromhex(value)
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def _graph_failure(response: requests.Response, *, subject: str, unknown_is_config: bool = False) -> Exception:
    """The classified error for a non-200 Graph answer (the caller raises it)."""
    status = response.status_code
    error = _json(response).get("error")
    error = error if isinstance(error, dict) else {}
    code, subcode = error.get("code"), error.get("error_subcode")
    kind = str(error.get("type") or "")
    label = f"HTTP {status}" + (f" code {code}" if code is not None else "") + (
        f"/{subcode}" if subcode is not None else "")
    response.close()
    if status == 401 or code in TOKEN_CODES:
        return AuthError(f"the Cloud API rejected the access token ({label}, {kind or 'no type'})")
    if status == 429 or code in RATE_LIMIT_CODES:
        return ThrottledError("whatsapp", time.time() + RATE_LIMIT_PAUSE, f"the Cloud API rate-limited us ({label})")
    if status == 404 or (code == 100 and subcode == 33):
        reason = f"{subject} is unknown to the Cloud API ({label}): older than 7 days, deleted, or not ours"
        return ConfigError(reason) if unknown_is_config else ItemError(reason)
    if status == 403 or code in (10, 200):
        return ConfigError(f"the access token lacks a permission for {subject} ({label})")
    return ItemError(f"{subject}: the Cloud API answered {label}")

