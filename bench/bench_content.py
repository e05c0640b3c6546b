"""Reading what documents say, measured as a user meets it: labelled passages drawn into real files
with neutral names (text PDFs, DOCX, XLSX, scanned PNGs and image-only PDFs), put in a SharePoint
library of the Graph simulator, ingested by the SharePoint connector through the whole pipeline into
a local outbox, and each document's ``language`` and ``department`` in its Hub metadata compared with
the passage's label.

    .venv/bin/python -m bench.bench_content [--passages FILE ...] [--formats pdf,docx,xlsx,png,scanned-pdf]
                                            [--limit N] [--json PATH] [--raw PATH]

A passages file is JSON lines with ``text``, ``department`` and ``language`` (en, ml, mixed; Malayalam
typed in Latin letters is ``ml`` with ``script: "Latn"``, or ``language: "manglish"``); other fields are
ignored. By default the held-out halves of the project's labelled sets (tests/data/departments and
tests/data/language): never the halves the rules were tuned on. Formats are assigned in turn, so each
passage is read in one format and each format sees every language and department.

Reports language accuracy (Manglish counts as right when called ``ml``), department macro-F1 overall,
per language and per format, Manglish recall, how each format was read (text layer, OCR) and the
seconds the sync took.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import private_redis

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_SETS = ("tests/data/departments/heldout.jsonl", "tests/data/language/heldout.jsonl")
FORMATS = ("pdf", "docx", "xlsx", "png", "scanned-pdf")
DEPARTMENTS = ("Engineering", "Finance", "Safety", "HR", "Operations", "Executive")
SITE = "sites/records"
LIBRARY = "Incoming"
KEY_PREFIX = "kmrl-bench-content:"


@dataclass(frozen=True)
class Passage:
    text: str
    language: str  # en, ml, mixed, manglish
    department: str  # "" when the set labels language only

    @property
    def expected_language(self) -> str:
        return "ml" if self.language == "manglish" else self.language


def load_passages(paths: Sequence[str]) -> list[Passage]:
    """Passages of every file (see the module docstring); a missing file is an error that names it."""
    passages = []
    for name in paths:
        path = Path(name) if Path(name).is_absolute() else PROJECT / name
        if not path.exists():
            raise SystemExit(f"no passages file at {path}")
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            language = str(row.get("language") or row.get("label") or "").lower()
            if language in ("ml", "malayalam") and str(row.get("script", "")).lower() in ("latn", "latin"):
                language = "manglish"
            language = {"english": "en", "malayalam": "ml", "code-mixed": "mixed"}.get(language, language)
            if language not in ("en", "ml", "mixed", "manglish"):
                continue  # other languages (the language set's negatives) have no department to score here
            passages.append(Passage(str(row["text"]), language, str(row.get("department") or "")))
    return passages


def render(passage: Passage, fmt: str) -> tuple[str, bytes]:
    """(MIME type, bytes) of ``passage`` drawn as ``fmt``."""
    from sandbox import rendering

    return rendering.document(fmt, passage.text)


def macro_f1(pairs: Iterable[tuple[str, str]]) -> float:
    """Macro-averaged F1 over the departments that occur as truth or prediction."""
    pairs = list(pairs)
    labels = sorted({truth for truth, _ in pairs} | {guess for _, guess in pairs if guess in DEPARTMENTS})
    scores = []
    for label in labels:
        tp = sum(1 for t, g in pairs if t == label and g == label)
        fp = sum(1 for t, g in pairs if t != label and g == label)
        fn = sum(1 for t, g in pairs if t == label and g != label)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores) if scores else 0.0


def ingest(passages: list[Passage], formats: Sequence[str], root: Path) -> tuple[list[dict[str, Any]], float]:
    """Each passage as a file in the simulated library, one SharePoint sync; the outbox metadata of
    each (in passage order) and the sync's seconds."""
    from base.hub_client import OutboxHub
    from base.state import StateStore
    from config.settings import Settings
    from connectors.sharepoint_connector import SharePointConnector
    from sandbox.graph import GraphSimulator
    from sandbox.tls import CertAuthority

    sim = GraphSimulator()
    drive = sim.store.add_drive(SITE, LIBRARY)
    for index, passage in enumerate(passages):
        fmt = formats[index % len(formats)]
        mime_type, data = render(passage, fmt)
        extension = {"scanned-pdf": "pdf"}.get(fmt, fmt)
        sim.store.put_file(drive, f"2024/document-{index:04d}.{extension}", data, mime_type=mime_type)
    ca = CertAuthority(str(root / "ca"))
    sim.start(ca)
    try:
        with private_redis() as state_url:
            settings = Settings(redis_url=state_url, state_redis_url=state_url, key_prefix=KEY_PREFIX,
                                hub_outbox_dir=str(root / "outbox"), spool_dir=str(root / "spool"),
                                deadletter_dir=str(root / "deadletter"), log_file="",
                                audit_log=str(root / "audit.log"), spool_min_free_mb=1, log_level="WARNING")
            state = StateStore.from_url(state_url, prefix=KEY_PREFIX)
            connector = SharePointConnector(f"{sim.sharepoint_url}/{SITE}", tenant_id=sim.tenant_id,
                                            client_id=sim.client_id, graph_base_url=sim.graph_url,
                                            authority=sim.authority_host, ca_file=ca.ca_path, settings=settings,
                                            state=state, hub=OutboxHub(str(root / "outbox")))
            started = time.perf_counter()
            summary = connector.sync_documents({"client_id": sim.client_id, "client_secret": sim.client_secret,
                                                "tenant_id": sim.tenant_id})
            seconds = time.perf_counter() - started
            if summary.state != "ok":
                raise SystemExit(f"the sync ended {summary.state}: {[s.error for s in summary.scopes]}")
    finally:
        sim.stop()
    by_name: dict[str, dict[str, Any]] = {}
    for meta_path in (root / "outbox").rglob("metadata.json"):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        by_name[str(meta["filename"])] = meta
    found = []
    for index, _ in enumerate(passages):
        fmt = formats[index % len(formats)]
        extension = {"scanned-pdf": "pdf"}.get(fmt, fmt)
        found.append(by_name.get(f"document-{index:04d}.{extension}", {}))
    return found, seconds


def score(passages: list[Passage], metadata: list[dict[str, Any]], formats: Sequence[str]) -> dict[str, Any]:
    """Every figure of the report, as plain data."""
    rows = []
    for index, (passage, meta) in enumerate(zip(passages, metadata, strict=True)):
        rows.append({"format": formats[index % len(formats)], "language": passage.language,
                     "expected_language": passage.expected_language, "department": passage.department,
                     "got_language": meta.get("language", "missing"), "script": meta.get("language_script", ""),
                     "got_department": meta.get("department", "missing"),
                     "method": (meta.get("extraction") or {}).get("method", "missing")})
    language_right = [r["got_language"] == r["expected_language"] for r in rows]
    manglish = [r for r in rows if r["language"] == "manglish"]
    english = [r for r in rows if r["language"] == "en"]
    with_department = [r for r in rows if r["department"]]
    result: dict[str, Any] = {
        "documents": len(rows),
        "language_accuracy": sum(language_right) / len(rows) if rows else 0.0,
        "language_by_class": {cls: _share(r["got_language"] == r["expected_language"] for r in rows
                                          if r["language"] == cls) for cls in ("en", "ml", "mixed", "manglish")},
        "manglish_recall": _share(r["got_language"] == "ml" for r in manglish),
        "english_called_ml": _share(r["got_language"] == "ml" for r in english),
        "department_macro_f1": macro_f1((r["department"], r["got_department"]) for r in with_department),
        "department_accuracy": _share(r["department"] == r["got_department"] for r in with_department),
        "department_f1_by_language": {lang: macro_f1((r["department"], r["got_department"]) for r in with_department
                                                     if r["language"] == lang)
                                      for lang in ("en", "ml", "mixed", "manglish")
                                      if any(r["language"] == lang for r in with_department)},
        "department_f1_by_format": {fmt: macro_f1((r["department"], r["got_department"]) for r in with_department
                                                  if r["format"] == fmt) for fmt in formats},
        "department_recall": {dept: _share(r["got_department"] == dept for r in with_department
                                           if r["department"] == dept) for dept in DEPARTMENTS},
        "methods_by_format": {fmt: dict(Counter(r["method"] for r in rows if r["format"] == fmt)) for fmt in formats},
        "confusions": dict(Counter(f"{r['department']}->{r['got_department']}" for r in with_department
                                   if r["department"] != r["got_department"]).most_common(12)),
        "language_confusions": dict(Counter(f"{r['language']}->{r['got_language']}" for r in rows
                                            if r["got_language"] != r["expected_language"]).most_common(12)),
    }
    return result


def _share(flags: Iterable[bool]) -> float | None:
    values = list(flags)
    return sum(values) / len(values) if values else None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def report(result: dict[str, Any], seconds: float) -> str:
    lines = [f"documents: {result['documents']}, sync {seconds:.1f} s "
             f"({result['documents'] / seconds:.1f} documents/s)" if seconds else "",
             f"language accuracy: {_pct(result['language_accuracy'])}  "
             + "  ".join(f"{k} {_pct(v)}" for k, v in result["language_by_class"].items()),
             f"Manglish recognised as Malayalam: {_pct(result['manglish_recall'])}; "
             f"English called Malayalam: {_pct(result['english_called_ml'])}",
             f"department macro-F1: {result['department_macro_f1']:.3f} "
             f"(accuracy {_pct(result['department_accuracy'])})",
             "  by language: " + "  ".join(f"{k} {v:.3f}" for k, v in result["department_f1_by_language"].items()),
             "  by format:   " + "  ".join(f"{k} {v:.3f}" for k, v in result["department_f1_by_format"].items()),
             "  recall:      " + "  ".join(f"{k} {_pct(v)}" for k, v in result["department_recall"].items()),
             "read as: " + "; ".join(f"{fmt} {methods}" for fmt, methods in result["methods_by_format"].items()),
             f"department confusions: {result['confusions']}",
             f"language confusions: {result['language_confusions']}"]
    return "\n".join(line for line in lines if line)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--passages", nargs="+", default=list(DEFAULT_SETS))
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--limit", type=int, default=0, help="first N passages only (0: all)")
    parser.add_argument("--json", help="also write the figures to this result file (make bench)")
    parser.add_argument("--raw", help="write every score, confusions included, to this file as JSON")
    args = parser.parse_args(argv)
    formats = [f for f in args.formats.split(",") if f]
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise SystemExit(f"unknown formats {sorted(unknown)}; choose from {', '.join(FORMATS)}")
    from utils.logging import configure_logging

    configure_logging(log_file="", level="WARNING", force=True)
    passages = load_passages(args.passages)
    if args.limit:
        passages = passages[:args.limit]
    with tempfile.TemporaryDirectory(prefix="kmrl-bench-content-") as tmp:
        metadata, seconds = ingest(passages, formats, Path(tmp))
    result = score(passages, metadata, formats)
    result["seconds"] = seconds
    print(report(result, seconds))
    if args.json:
        as_result(result, args).save(Path(args.json))
    if args.raw:
        Path(args.raw).write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    return result


def as_result(result: dict[str, Any], args: argparse.Namespace) -> Any:
    """The figures as a ``bench.report.Result`` (what ``make bench`` reads), with the issue's targets."""
    from bench.report import Figure, Result, met

    def share(value: float | None) -> float | None:
        return None if value is None else round(100 * value, 1)

    language = share(result["language_accuracy"])
    manglish = share(result["manglish_recall"])
    english_ml = share(result["english_called_ml"])
    f1 = round(result["department_macro_f1"], 3)
    figures = [
        Figure("documents read", result["documents"], "", "", None, f"sync {result['seconds']:.1f} s"),
        Figure("language right", language, "%", ">= 97% (issue 14)", met(language, at_least=97.0)),
        Figure("Manglish recognised as Malayalam", manglish, "%", ">= 90% (issue 14)", met(manglish, at_least=90.0)),
        Figure("English called Malayalam", english_ml, "%", "<= 1% (issue 14)",
               None if english_ml is None else english_ml <= 1.0),
        Figure("department macro-F1", f1, "", ">= 0.85 (issue 14)", met(f1, at_least=0.85)),
    ]
    figures += [Figure(f"department macro-F1, {lang}", round(value, 3)) for lang, value
                in result["department_f1_by_language"].items()]
    figures += [Figure(f"department macro-F1, as {fmt}", round(value, 3)) for fmt, value
                in result["department_f1_by_format"].items()]
    figures += [Figure(f"language right, {cls}", share(value), "%") for cls, value
                in result["language_by_class"].items() if value is not None]
    notes = [f"passages: {', '.join(args.passages)} (held-out halves unless named otherwise)",
             f"read as: {result['methods_by_format']}",
             f"department confusions: {result['confusions']}",
             f"language confusions: {result['language_confusions']}"]
    return Result("content", "Reading documents: language and department from their content", "", figures,
                  notes=notes)


if __name__ == "__main__":
    main(sys.argv[1:])
