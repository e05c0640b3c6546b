"""Hostile input: what a sender, a source API or a forger can throw at the service, and what must hold.

- Filenames (hypothesis): whatever a source calls a file, ``sanitize_filename`` returns one name that is
  safe on every common file system and honest to a person reading it.
- The MIME walker (hypothesis): arbitrary and garbled bytes never raise, and every part is accounted for
  (an attachment, a body, or a part skipped with its role); generated messages come back leaf by leaf.
- Source APIs answering malformed or truncated JSON, or JSON missing fields: each connector classifies
  it (a transient error ending the run, or one item dead-lettered), never crashes the worker, and the
  next runs account for every document.
- The WhatsApp webhook: oversized bodies (413), unsigned or wrongly signed ones (403); nothing stored.
- Files larger than the configured limit, or claiming a huge size: refused without reading them whole.
"""

from __future__ import annotations

import base64
import json
import re
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from base.document import MAX_FILENAME_BYTES, sanitize_filename
from connectors.email_mime import ParsedMessage, parse_message
from tests.conftest import skip_or_fail
from tests.reliability.conftest import FULL

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "mime"
#: Hypothesis examples are multiplied by this under ``make reliability`` (KMRL_RELIABILITY_FULL=1).
SCALE = 5 if FULL else 1

pytestmark = pytest.mark.reliability

# -- filenames -------------------------------------------------------------------------------------

#: Characters that change how a name displays or hide differences in it (format characters are
#: checked by category besides; ZWJ/ZWNJ may stay only after a letter or mark of a joining script).
BIDI_AND_INVISIBLE = set("\u200b\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                         "\u2066\u2067\u2068\u2069\u061c\ufeff\u2060\u00ad\u180e\u034f\ufe0f\u3164")
JOINERS = "\u200c\u200d"
#: Letters and marks of the scripts whose words use ZWJ/ZWNJ (Arabic, Indic, Vedic).
JOINING_SCRIPTS = ((0x0600, 0x06FF), (0x0750, 0x077F), (0x08A0, 0x08FF), (0x0900, 0x0DFF), (0x1CD0, 0x1CFF),
                   (0xA8E0, 0xA8FF))


def joins_a_word(before: str) -> bool:
    """True when a ZWJ/ZWNJ after ``before`` is part of how a word is spelled."""
    return unicodedata.category(before)[0] in "LM" and any(lo <= ord(before) <= hi for lo, hi in JOINING_SCRIPTS)
#: Names Windows reserves for devices, whatever their case or extension (COM0/LPT0 and the
#: superscript digits included, as current Windows documentation lists them).
RESERVED = ({"con", "prn", "aux", "nul", "conin$", "conout$"}
            | {f"{p}{d}" for p in ("com", "lpt") for d in "0123456789¹²³"})

hostile_pieces = st.sampled_from([
    "../", "..\\", "/", "\\", "..", ".", "\x00", "\r\n", "\t", "\x1b[31m", "\x7f", "\u202e", "\u2066", "\u200b",
    "\ufeff", "CON", "nul", "Com1", "LPT¹", "aux.", " ", ":", "*", "?", '"', "<", ">", "|", "~", "%2e%2e%2f",
    "ഫയൽ", "报告", "🚇", "e\u0301", "\ud7ff", "pdf", "exe", ".pdf", ".exe", "report",
    "\u00ad", "\u180e", "\u2061", "\U000e0041", "\U000e007f", "\ufe0f", "\u200d", "\u200c", "ണ്", "ക്\u200d",
    "CONIN$", "conout$",
])
hostile_names = st.one_of(
    st.text(),
    st.lists(hostile_pieces, max_size=12).map("".join),
    st.lists(st.one_of(hostile_pieces, st.text(max_size=8)), max_size=10).map("".join),
    st.tuples(st.sampled_from(sorted(RESERVED)), st.sampled_from(["", ".txt", ".tar.gz", " .pdf", "  ", ".", " . "]),
              st.booleans()).map(lambda t: (t[0].upper() if t[2] else t[0]) + t[1]),
    st.tuples(st.text(min_size=150, max_size=600), st.sampled_from(["", ".pdf", ".ഫയൽ", ".verylongextension1234"]))
    .map("".join),
)


def windows_device_name(name: str, *, trim_spaces: bool = False) -> bool:
    """True when Windows reserves this name for a device: the part before the first dot is a device
    name (``nul``, ``NUL.txt``, ``aux.tar.gz``: Microsoft's documented rule). ``trim_spaces``: also
    when spaces separate it from the dot (``CON .pdf``), which Windows' device-name check trims too."""
    stem = name.split(".", 1)[0]
    return (stem.rstrip(" ") if trim_spaces else stem).casefold() in RESERVED


@settings(max_examples=400 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_names)
def test_sanitized_filename_is_safe_on_every_file_system(raw: str) -> None:
    name = sanitize_filename(raw)
    assert name and name not in (".", "..")
    assert "/" not in name and "\\" not in name
    assert not any(unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn", "Zl", "Zp") for ch in name), repr(name)
    assert not BIDI_AND_INVISIBLE & set(name), repr(name)
    assert all(ch in JOINERS for ch in name if unicodedata.category(ch) == "Cf"), repr(name)
    assert all(i > 0 and joins_a_word(name[i - 1]) for i, ch in enumerate(name) if ch in JOINERS), repr(name)
    assert len(name.encode("utf-8")) <= MAX_FILENAME_BYTES
    assert not re.search(r'[<>:"|?*]', name), repr(name)
    assert not name.startswith(".") and not name.endswith((".", " ")), repr(name)


@settings(max_examples=300 * SCALE, deadline=None)
@given(hostile_names)
def test_sanitized_filename_is_not_a_windows_device_name(raw: str) -> None:
    name = sanitize_filename(raw)
    assert not windows_device_name(name), f"{raw!r} became the device name {name!r}"


@pytest.mark.parametrize("raw", ["AUX .0", "nul .txt", "CON  .pdf", "com1 .tar.gz"])
def test_device_name_with_spaces_before_its_extension_is_not_left_as_it_is(raw: str) -> None:
    assert not windows_device_name(sanitize_filename(raw), trim_spaces=True)


@settings(max_examples=300 * SCALE, deadline=None)
@given(hostile_names)
@example(". 0")
def test_sanitizing_twice_changes_nothing_and_no_name_starts_with_a_space(raw: str) -> None:
    once = sanitize_filename(raw)
    assert not once.startswith(" ") and sanitize_filename(once) == once, repr(once)


@settings(max_examples=200 * SCALE, deadline=None)
@given(st.text(alphabet=st.characters(categories=("L", "N")), min_size=1, max_size=40),
       st.sampled_from(["pdf", "docx", "xlsx", "jpg", "ഫയൽ"]), st.integers(min_value=1, max_value=400))
def test_long_names_are_cut_keeping_their_extension(stem: str, ext: str, repeat: int) -> None:
    name = sanitize_filename(f"{stem * repeat}.{ext}")
    assert name.endswith(f".{ext}") and len(name.encode()) <= MAX_FILENAME_BYTES
    kept = name[: -len(ext) - 1].removeprefix("_")  # "_" marks a device name (NUL.pdf); stems here have none
    assert unicodedata.normalize("NFC", stem * repeat).startswith(kept)


# -- the MIME walker -------------------------------------------------------------------------------

def assert_every_part_accounted_for(parsed: ParsedMessage, *, include_inline: bool = False) -> None:
    """Attachments and the parts marked as attachments are the same set, one for one, and every part
    has a known role."""
    roles = {"attachment", "inline", "body", "container", "signature", "report", "absent", "skipped"}
    assert {p.role for p in parsed.parts} <= roles
    as_attachment = {"attachment", "inline"} if include_inline else {"attachment"}
    marked = sorted(p.part_path for p in parsed.parts if p.role in as_attachment)
    found = sorted(a.part_path for a in parsed.attachments)
    assert marked == found, (marked, found)
    assert len(set(found)) == len(found), f"a part path was used twice: {found}"


@settings(max_examples=300 * SCALE, deadline=None)
@given(st.binary(max_size=4096), st.booleans())
def test_mime_walker_never_raises_on_arbitrary_bytes(raw: bytes, include_inline: bool) -> None:
    assert_every_part_accounted_for(parse_message(raw, include_inline=include_inline), include_inline=include_inline)


structural_bytes = st.lists(st.sampled_from([
    b"\r\n", b"\n", b"--", b"--b1", b"--b1--", b"Content-Type: multipart/mixed; boundary=b1\r\n",
    b"Content-Type: message/rfc822\r\n", b"Content-Type: application/ms-tnef\r\n",
    b"Content-Disposition: attachment; filename*=utf-8''%E0%B4%AB.pdf\r\n", b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n", b"begin 644 x.txt\r\n", b"end\r\n", b"=?utf-8?B?4LSr?=",
    b"name=\"", b";", b"\x00", b"\xff\xfe", b"=\r\n", b"QUJD", b": ", b"Subject: x\r\n",
]), max_size=60).map(b"".join)


@settings(max_examples=400 * SCALE, deadline=None)
@given(structural_bytes)
def test_mime_walker_never_raises_on_garbled_structure(raw: bytes) -> None:
    assert_every_part_accounted_for(parse_message(raw))


def corpus_messages() -> list[Path]:
    if not CORPUS.is_dir():
        skip_or_fail(f"the shared MIME corpus is not at {CORPUS} (../shared is absent)")
    return sorted(p for p in CORPUS.iterdir() if p.name not in ("MANIFEST.tsv", "README.md"))


@settings(max_examples=300 * SCALE, deadline=None)
@given(st.data())
def test_mime_walker_never_raises_on_damaged_real_messages(data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(corpus_messages()))
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(min_value=1, max_value=8))):
        if not raw:
            break
        at = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert", "truncate", "duplicate"]))
        if action == "flip":
            raw[at] ^= data.draw(st.integers(min_value=1, max_value=255))
        elif action == "cut":
            del raw[at:at + data.draw(st.integers(min_value=1, max_value=200))]
        elif action == "insert":
            raw[at:at] = data.draw(st.sampled_from([b"\r\n--", b"\r\n\r\n", b"\x00", b"=?", b"\"", b"begin 644 a\r\n"]))
        elif action == "truncate":
            del raw[at:]
        else:
            raw[at:at] = raw[at:at + 500]
    assert_every_part_accounted_for(parse_message(bytes(raw)))


@dataclass
class Leaf:
    """A generated leaf part and what the walker must say about it."""

    mime_type: str
    payload: bytes
    filename: str = ""
    disposition: str = ""
    role: str = "attachment"
    path: str = ""


@dataclass
class Node:
    """A generated multipart or forwarded message."""

    kind: str  # "multipart" or "rfc822"
    subtype: str = "mixed"
    children: list[Any] = field(default_factory=list)


leaf_parts = st.one_of(
    st.builds(lambda text: Leaf("text/plain", text.encode(), role="body"), st.text(max_size=60)),
    st.builds(lambda payload, name, mime: Leaf(mime, payload, name, "attachment"),
              st.binary(max_size=300), st.sampled_from(["report.pdf", "ഫയൽ.xlsx", "a b.docx", "x"]),
              st.sampled_from(["application/pdf", "application/octet-stream", "image/png", "text/csv"])),
    st.builds(lambda payload, name: Leaf("application/pdf", payload, name, ""),  # a name, no disposition
              st.binary(max_size=200), st.sampled_from(["drawing.pdf", "scan 2.pdf"])),
    st.builds(lambda payload: Leaf("application/zip", payload), st.binary(min_size=1, max_size=200)),  # unnamed
)


def mime_trees(depth: int = 0) -> st.SearchStrategy[Any]:
    if depth >= 3:
        return leaf_parts
    return st.one_of(
        leaf_parts,
        st.builds(lambda kids, sub: Node("multipart", sub, kids),
                  st.lists(st.deferred(lambda: mime_trees(depth + 1)), min_size=1, max_size=4),
                  st.sampled_from(["mixed", "alternative"])),
        st.builds(lambda inner: Node("rfc822", children=[inner]), st.deferred(lambda: mime_trees(depth + 1))),
    )


def encode_entity(part: Any, path: str, leaves: list[Leaf]) -> bytes:
    """Headers + body of ``part``, numbering its leaves as IMAP does (``path`` is its section)."""
    if isinstance(part, Leaf):
        part.path = path or "1"
        leaves.append(part)
        head = f"Content-Type: {part.mime_type}"
        if part.filename and not part.disposition:
            head += f'; name="{part.filename}"'
        head += "\r\n"
        if part.disposition:
            encoded = "=?UTF-8?B?" + base64.b64encode(part.filename.encode()).decode() + "?="
            head += f'Content-Disposition: {part.disposition}; filename="{encoded}"\r\n'
        head += "Content-Transfer-Encoding: base64\r\n\r\n"
        return head.encode() + base64.encodebytes(part.payload)
    if part.kind == "multipart":
        boundary = "b" + uuid.uuid4().hex
        body = b""
        for number, child in enumerate(part.children, 1):
            child_path = f"{path}.{number}" if path else str(number)
            body += f"--{boundary}\r\n".encode() + encode_entity(child, child_path, leaves) + b"\r\n"
        return (f'Content-Type: multipart/{part.subtype}; boundary="{boundary}"\r\n\r\n'.encode() + body
                + f"--{boundary}--\r\n".encode())
    inner = part.children[0]
    # A forwarded message: its own headers, then its body numbered under this part's section (a
    # multipart body's parts are section.N; any other body is section.1).
    section = path or "1"
    inner_path = section if isinstance(inner, Node) and inner.kind == "multipart" else f"{section}.1"
    message = b"Subject: forwarded\r\nMIME-Version: 1.0\r\n" + encode_entity(inner, inner_path, leaves)
    return b"Content-Type: message/rfc822\r\n\r\n" + message


@settings(max_examples=300 * SCALE, deadline=None)
@given(mime_trees())
def test_every_leaf_of_a_generated_message_is_accounted_for(tree: Any) -> None:
    leaves: list[Leaf] = []
    entity = encode_entity(tree, "", leaves)
    raw = b"From: a@kmrl.co.in\r\nSubject: generated\r\nMIME-Version: 1.0\r\n" + entity
    parsed = parse_message(raw)
    assert_every_part_accounted_for(parsed)
    roles = {p.part_path: p.role for p in parsed.parts if p.role != "container"}
    attachments = {a.part_path: a for a in parsed.attachments}
    for leaf in leaves:
        assert roles.get(leaf.path) == leaf.role, (leaf, roles)
        if leaf.role == "attachment":
            found = attachments[leaf.path]
            assert found.payload == leaf.payload and found.filename == leaf.filename
    assert len(roles) == len(leaves), f"parts the generator did not make: {set(roles) - {x.path for x in leaves}}"


# -- source APIs answering garbage -------------------------------------------------------------------

@dataclass(frozen=True)
class Garbling:
    """One way a source API's answer goes wrong: which answers (by path) and how."""

    source: str
    path: Callable[[str], bool]
    mode: str
    field_name: str = ""
    count: int = 1


def _maximo_collection(path: str) -> bool:
    return "/os/" in path and "/doclinks" not in path


def _graph_delta(path: str) -> bool:
    return path.endswith("/root/delta")


def _graph_token(path: str) -> bool:
    return path.endswith("/oauth2/v2.0/token")


def _whatsapp_media(path: str) -> bool:
    return path.startswith("/v") and "whatsapp_business" not in path


GARBLINGS = {
    "maximo-page-truncated": Garbling("maximo", _maximo_collection, "truncate"),
    "maximo-page-html": Garbling("maximo", _maximo_collection, "html"),
    "maximo-page-empty": Garbling("maximo", _maximo_collection, "empty"),
    "maximo-page-without-member": Garbling("maximo", _maximo_collection, "drop_field", "member"),
    "maximo-page-without-responseInfo": Garbling("maximo", _maximo_collection, "drop_field", "responseInfo"),
    "maximo-work-orders-without-changedate": Garbling("maximo", _maximo_collection, "drop_field", "changedate"),
    "maximo-doclinks-without-href": Garbling("maximo", _maximo_collection, "drop_field", "href"),
    "graph-delta-truncated": Garbling("sharepoint", _graph_delta, "truncate"),
    "graph-delta-html": Garbling("sharepoint", _graph_delta, "html"),
    "graph-delta-without-value": Garbling("sharepoint", _graph_delta, "drop_field", "value"),
    "graph-delta-without-nextLink": Garbling("sharepoint", _graph_delta, "drop_field", "@odata.nextLink"),
    "graph-delta-without-downloadUrl": Garbling("sharepoint", _graph_delta, "drop_field",
                                                "@microsoft.graph.downloadUrl"),
    "graph-delta-without-file-facet": Garbling("sharepoint", _graph_delta, "drop_field", "file"),
    "graph-delta-without-ids": Garbling("sharepoint", _graph_delta, "drop_field", "id"),
    "graph-token-truncated": Garbling("sharepoint", _graph_token, "truncate"),
    "graph-token-without-access_token": Garbling("sharepoint", _graph_token, "drop_field", "access_token"),
    "whatsapp-media-truncated": Garbling("whatsapp", _whatsapp_media, "truncate"),
    "whatsapp-media-html": Garbling("whatsapp", _whatsapp_media, "html"),
    "whatsapp-media-without-url": Garbling("whatsapp", _whatsapp_media, "drop_field", "url"),
    "whatsapp-media-without-sha256": Garbling("whatsapp", _whatsapp_media, "drop_field", "sha256"),
    "hub-upload-answer-truncated": Garbling("hub", lambda p: p == "/api/v1/documents", "truncate"),
    "hub-upload-answer-html": Garbling("hub", lambda p: p == "/api/v1/documents", "html"),
}
#: Documents behind each garbled API (a Graph delta page holds 50, so two pages).
GARBLED_DOCUMENTS = 60
#: Sync runs (the beat's ticks) allowed to account for every document after the garbled answer.
GARBLE_TICKS = 6


@pytest.fixture
def fault_db() -> str:
    """Redis test database 9 (the fault suite's, flushed): runs here hold leases for seconds, and a
    database that other test runs flush (15) would take them away mid-run."""
    from tests.conftest import flushed_db_url

    return flushed_db_url(9)


@pytest.fixture(scope="module")
def hostile_ca(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from sandbox.tls import CertAuthority

    return CertAuthority(str(tmp_path_factory.mktemp("hostile-ca")))


@pytest.mark.parametrize("case", list(GARBLINGS))
def test_garbled_api_answer_is_classified_and_every_document_accounted_for(
        case: str, tmp_path: Path, fault_db: str, hostile_ca: Any) -> None:
    from contextlib import ExitStack

    from base.state import StateStore
    from sandbox.hub import SANDBOX_TOKEN, HubSimulator, RunningHub
    from sandbox.servers import ServerThread
    from tests.reliability.beds import maximo_bed, service_env, sharepoint_bed, whatsapp_bed
    from tests.reliability.checks import stored_sha256s
    from tests.reliability.inprocess import connector_for
    from tests.reliability.recorder import Garbler

    garbling = GARBLINGS[case]
    garblers: list[Garbler] = []

    def serve(app: Any) -> Garbler:
        garblers.append(Garbler(app))
        return garblers[-1]

    with ExitStack() as stack:
        hub_sim = HubSimulator(token=SANDBOX_TOKEN, data_dir=tmp_path / "hub")
        stack.callback(hub_sim.close)
        hub_app = serve(hub_sim.app) if garbling.source == "hub" else hub_sim.app
        server = stack.enter_context(ServerThread(hub_app))
        hub = RunningHub(url=server.url, sim=hub_sim, token=SANDBOX_TOKEN, server=server)
        source_serve = serve if garbling.source != "hub" else None
        if garbling.source in ("maximo", "hub"):
            bed = stack.enter_context(maximo_bed(GARBLED_DOCUMENTS, serve=source_serve))
        elif garbling.source == "sharepoint":
            bed = stack.enter_context(sharepoint_bed(hostile_ca, GARBLED_DOCUMENTS, serve=source_serve))
        else:
            bed = stack.enter_context(whatsapp_bed(tmp_path, fault_db, GARBLED_DOCUMENTS, serve=source_serve))
        [garbler] = garblers
        garbler.garble(garbling.path, garbling.mode, field_name=garbling.field_name, count=garbling.count)
        connector = connector_for(bed.source, {**service_env(tmp_path, fault_db, hub), **bed.env})

        runs = []
        for _ in range(GARBLE_TICKS):
            summary = connector.sync_documents()  # must not raise, whatever the API said
            runs.append(summary)
            assert summary.state in ("ok", "error"), f"{case}: run state {summary.state}: {summary.as_dict()}"
            if summary.state == "ok" and garbler.garbled:
                dead = StateStore.from_url(fault_db).list_dead_letters(bed.source)
                if len(bed.expected - stored_sha256s(hub)) <= len(dead):
                    break
        assert garbler.garbled, f"{case}: the garbled answer was never asked for"
        stored = stored_sha256s(hub)
        dead = StateStore.from_url(fault_db).list_dead_letters(bed.source)
        assert stored <= bed.expected
        assert all(entry.reason for entry in dead)
        # Nothing silently lost: a document not in the Hub has a dead letter saying why.
        missing = bed.expected - stored
        assert len(missing) <= len(dead), (
            f"{case}: {len(missing) - len(dead)} documents neither delivered nor dead-lettered "
            f"after runs {[(r.state, r.totals['new'], r.totals['dead_lettered']) for r in runs]}")


# -- the WhatsApp webhook ------------------------------------------------------------------------------

WEBHOOK_SECRET = "hostile-webhook-app-secret-3e7b"
#: A small body limit, so oversized bodies are cheap to make.
WEBHOOK_MAX_BODY_KB = 4


@dataclass
class Webhook:
    """The real web app on test database 9 under a key prefix of its own (nothing else writes there)."""

    client: Any
    redis: Any
    prefix: str
    app: Any

    def stored_keys(self) -> list[str]:
        return sorted(self.redis.scan_iter(match=f"{self.prefix}*"))

    def post(self, body: bytes, signature_header: str | None) -> int:
        headers = {"Content-Type": "application/json"}
        if signature_header is not None:
            headers["X-Hub-Signature-256"] = signature_header
        return int(self.client.post("/webhooks/whatsapp", data=body, headers=headers).status_code)


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    import redis

    from config.settings import redis_db_url
    from tests.conftest import make_settings, server_url
    from web.app import create_public_app

    url = redis_db_url(server_url(), 9)
    prefix = f"kmrl-hostile-{uuid.uuid4().hex[:8]}:"
    settings = make_settings(tmp_path_factory.mktemp("webhook"), url, key_prefix=prefix, log_file="",
                             environ={"WHATSAPP_APP_SECRET": WEBHOOK_SECRET,
                                      "WHATSAPP_MAX_BODY_KB": str(WEBHOOK_MAX_BODY_KB)})
    client = redis.Redis.from_url(url, decode_responses=True)
    app = create_public_app(settings, client)  # the webhook lives on the public listener
    try:
        yield Webhook(app.test_client(), client, prefix, app)
    finally:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()


def media_notification(n: int = 1) -> bytes:
    from sandbox.whatsapp import WhatsAppCloudSimulator, meta_body

    sim = WhatsAppCloudSimulator()
    return meta_body(sim.notification([sim.message("document", sim.add_media(size=64)) for _ in range(n)]))


def hmac_header(secret: str, body: bytes) -> str:
    from sandbox.whatsapp import signature

    return signature(secret, body)


#: What a header line can carry (a client cannot send line breaks or other controls in one).
header_text = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=80)
forged_signatures = st.one_of(
    st.none(),
    header_text,
    header_text.map(lambda text: "sha256=" + text),
    st.binary(min_size=32, max_size=32).map(lambda b: "sha256=" + b.hex()),
    st.text(min_size=1, max_size=40).map(lambda secret: ("other", secret)),  # signed with another secret
    st.just(("prefix-only", "")),
)


@settings(max_examples=150 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.binary(max_size=600), st.just(b"")).map(lambda b: b or media_notification()),
       forged=forged_signatures)
def test_unsigned_or_wrongly_signed_webhook_is_refused_and_stores_nothing(
        webhook: Webhook, body: bytes, forged: Any) -> None:
    if isinstance(forged, tuple):
        kind, value = forged
        header: str | None = hmac_header(value or "x", body) if kind == "other" else "sha256="
        if kind == "other" and value == WEBHOOK_SECRET:
            header = hmac_header(WEBHOOK_SECRET + "!", body)
    else:
        header = forged
    assert webhook.post(body, header) == 403
    assert webhook.stored_keys() == []


@settings(max_examples=60 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extra=st.integers(min_value=1, max_value=64 * 1024))
def test_oversized_webhook_body_is_refused_with_413_and_stores_nothing(webhook: Webhook, extra: int) -> None:
    notification = media_notification()
    body = notification + b" " * (WEBHOOK_MAX_BODY_KB * 1024 - len(notification) + extra)  # valid JSON, too big
    assert webhook.post(body, hmac_header(WEBHOOK_SECRET, body)) == 413
    assert webhook.stored_keys() == []


def test_oversized_chunked_webhook_body_over_a_real_socket_is_refused(webhook: Webhook) -> None:
    import requests

    from sandbox.servers import ServerThread

    notification = media_notification()
    body = notification + b" " * (WEBHOOK_MAX_BODY_KB * 1024 * 4)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count as it reads
        for start in range(0, len(body), 1000):
            yield body[start:start + 1000]

    with ServerThread(webhook.app) as server:
        answer = requests.post(server.url + "/webhooks/whatsapp", data=chunks(), timeout=10,
                               headers={"X-Hub-Signature-256": hmac_header(WEBHOOK_SECRET, body),
                                        "Content-Type": "application/json"})
    assert answer.status_code == 413
    assert webhook.stored_keys() == []


def test_correctly_signed_webhook_is_stored_so_the_refusals_above_mean_something(webhook: Webhook) -> None:
    body = media_notification(2)
    assert webhook.post(body, hmac_header(WEBHOOK_SECRET, body)) == 200
    assert webhook.redis.xlen(f"{webhook.prefix}whatsapp:inbox") == 2
    for key in webhook.stored_keys():
        webhook.redis.delete(key)


# -- files larger than the limit, or claiming to be ---------------------------------------------------

#: The configured limit in these tests (MAX_DOCUMENT_MB), and the size of the file that breaks it.
LIMIT_MB = 1
BIG_BYTES = 64 * 1024 * 1024
#: Bytes of the big file a refusal may have pulled through loopback socket buffers before it stopped.
READ_ALLOWANCE = 16 * 1024 * 1024
#: A size claim no real document has.
HUGE_CLAIM = 50 * 1024**3
#: The size field of each source's listing, and the path its bytes are downloaded from.
SIZE_FIELDS = {"sharepoint": "size", "maximo": "attachmentSize", "whatsapp": "file_size"}


@dataclass
class SizeBed:
    """A source with a few small documents and one big one, its downloads metered."""

    source: str
    env: dict[str, str]
    small: set[str]
    meter: Any
    garbler: Any
    big_bytes_served: Callable[[], int]


@pytest.mark.parametrize("claim", ["true-size", "no-size", "huge-claim"])
@pytest.mark.parametrize("source", ["sharepoint", "maximo", "whatsapp"])
def test_file_over_the_limit_or_claiming_a_huge_size_is_refused_without_reading_it_all(
        source: str, claim: str, tmp_path: Path, fault_db: str, hub: Any, hostile_ca: Any) -> None:
    from contextlib import ExitStack

    from sandbox.graph_store import GeneratedContent
    from tests.reliability.beds import maximo_bed, service_env, sharepoint_bed, whatsapp_bed
    from tests.reliability.checks import stored_sha256s
    from tests.reliability.inprocess import connector_for
    from tests.reliability.recorder import Garbler, Metered

    wrappers: list[Any] = []

    def serve(app: Any) -> Metered:
        garbler = Garbler(app)
        wrappers.append(Metered(garbler))
        wrappers.append(garbler)
        return wrappers[0]

    with ExitStack() as stack:
        if source == "sharepoint":
            bed = stack.enter_context(sharepoint_bed(hostile_ca, 3, serve=serve))
            big_file = GeneratedContent(seed=7, size=BIG_BYTES)
            bed.sims["graph"].store.put_file(bed.sims["drives"][0], "Big/huge.bin", big_file)
            small_total = 3 * 2048
            served = lambda: wrappers[0].total("/_layouts/") - small_total  # noqa: E731
            listing = _graph_delta
        elif source == "maximo":
            bed = stack.enter_context(maximo_bed(4, serve=serve))
            maximo = bed.sims["maximo"]
            wo = maximo.add_work_order(attachments=0)
            big = maximo.add_doclink(wo.siteid, wo.wonum, filename="huge.pdf", size=BIG_BYTES)
            served = lambda: wrappers[0].total(f"/doclinks/{big.id}")  # noqa: E731
            listing = _maximo_collection
        else:
            bed = stack.enter_context(whatsapp_bed(tmp_path, fault_db, 3, serve=serve))
            cloud = bed.sims["whatsapp"]
            media = cloud.add_media(b"%PDF-1.7\n" + b"\0" * (BIG_BYTES - 9), mime_type="application/pdf")
            assert bed.sims["sender"].send(cloud.notification([cloud.message("document", media,
                                                                             filename="huge.pdf")])).delivered
            small_total = 3 * 2048
            served = lambda: wrappers[0].total("/whatsapp_business/") - small_total  # noqa: E731
            listing = _whatsapp_media
        garbler = wrappers[1]
        if claim == "no-size":
            garbler.garble(listing, "drop_field", field_name=SIZE_FIELDS[source], count=100)
        elif claim == "huge-claim":
            garbler.garble(listing, "set_field", field_name=SIZE_FIELDS[source], value=HUGE_CLAIM, count=100)
        connector = connector_for(source, {**service_env(tmp_path, fault_db, hub), **bed.env,
                                           "MAX_DOCUMENT_MB": str(LIMIT_MB)})
        summary = connector.sync_documents()

        context = f"{source} {claim}: {summary.as_dict()['totals']}, big file bytes served {served()}"
        assert summary.state == "ok", context
        if claim == "huge-claim":
            # Every file claimed to be huge: every one refused, none downloaded.
            assert summary.totals["skipped"] == len(bed.expected) + 1 and stored_sha256s(hub) == set(), context
            assert wrappers[0].total("/_layouts/") + wrappers[0].total("/doclinks/") + \
                wrappers[0].total("/whatsapp_business/") == 0, context
        else:
            assert summary.totals["skipped"] == 1 and stored_sha256s(hub) == bed.expected, context
            limit = 0 if claim == "true-size" and source != "whatsapp" else READ_ALLOWANCE
            assert served() <= limit, context
        audit = (Path(tmp_path) / "logs" / "audit.log").read_text()
        assert '"too-large' in audit, "the refusal is recorded with its reason"


def test_email_attachment_over_the_limit_is_skipped_with_its_reason(tmp_path: Path, fault_db: str, hub: Any) -> None:
    from sandbox.dovecot import DovecotServer, require_dovecot
    from tests.reliability.beds import EMAIL_PASSWORD, document_bytes, email_message, service_env
    from tests.reliability.checks import stored_sha256s
    from tests.reliability.inprocess import connector_for

    require_dovecot()
    small, big = document_bytes("email", 1), document_bytes("email", 2, 3 * 1024 * 1024)
    with DovecotServer() as dovecot:
        user = f"hostile{uuid.uuid4().hex[:8]}@kmrl.test"
        dovecot.add_user(user, EMAIL_PASSWORD)
        dovecot.seed(user, [email_message(1, small), email_message(2, big)])
        env = {**service_env(tmp_path, fault_db, hub), "EMAIL_HOST": dovecot.host,
               "EMAIL_PORT": str(dovecot.imaps_port), "EMAIL_USER": user, "EMAIL_PASSWORD": EMAIL_PASSWORD,
               "EMAIL_SSL_CA_FILE": dovecot.ca_path, "EMAIL_MAX_ATTACHMENT_MB": str(LIMIT_MB)}
        summary = connector_for("email", env).sync_documents()
    assert summary.state == "ok" and summary.totals["skipped"] == 1, summary.as_dict()
    import hashlib

    assert stored_sha256s(hub) == {hashlib.sha256(small).hexdigest()}
    skipped = [json.loads(line) for line in (tmp_path / "logs" / "audit.log").read_text().splitlines()
               if '"skipped"' in line]
    assert len(skipped) == 1 and skipped[0]["reason"].startswith("too-large"), skipped
