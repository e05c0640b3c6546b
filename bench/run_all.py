"""Runs every benchmark in bench/ and rewrites BENCHMARKS.md (``make bench``).

Each benchmark runs in its own process, one after the other (they measure throughput and memory; two
at once would measure each other). The interface a benchmark script offers: it prints its figures
for people, and with ``--json PATH`` it also writes a result file (``bench.report.Result``: figures
with units, targets and whether each is met). For a script that has no ``--json`` yet, an adapter
here reads the figures from its printed table; a figure the adapter cannot find is reported as not
measured, with a note, rather than guessed. Output goes to ``.bench/results/<name>.txt`` beside the
result file, and BENCHMARKS.md is written from all the result files there (a benchmark not run this
time keeps its previous result, dated).

    .venv/bin/python -m bench.run_all [--only email,core] [--quick] [--results DIR] [--no-report]

``--quick`` runs every benchmark at a small size: a check that they all work, not the issues' figures.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.report import DEFAULT_REPORT, DEFAULT_RESULTS, Figure, Result, met, write_report

ROOT = Path(__file__).resolve().parent.parent
Adapter = Callable[[str, Result], None]


@dataclass(frozen=True)
class Bench:
    """One benchmark script: its module, its arguments at full and at quick size, how to read it."""

    name: str
    title: str
    module: str
    args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] = ()
    adapter: Adapter | None = None
    timeout: float = 3600.0  # seconds
    needs: tuple[str, ...] = field(default=())  # programs that must be installed


# -- reading printed tables --------------------------------------------------------------------------

def _number(text: str) -> float | None:
    text = text.strip().replace(",", "")
    try:
        return float(text)
    except ValueError:
        return None


def table_rows(output: str, first_header: str) -> dict[str, dict[str, str]]:
    """The rows of a table printed with columns separated by two or more spaces, by their first cell.

    The header is the first line whose first cell is ``first_header``; rows follow until a blank line.
    """
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if re.split(r"\s{2,}", line.strip())[0] == first_header]
    if not starts:
        return {}
    header = re.split(r"\s{2,}", lines[starts[0]].strip())
    rows: dict[str, dict[str, str]] = {}
    for line in lines[starts[0] + 1:]:
        if not line.strip():
            break
        if set(line.strip()) <= {"-", " "}:
            continue
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = dict(zip(header, cells, strict=False))
    return rows


def _find(output: str, pattern: str) -> float | None:
    match = re.search(pattern, output)
    return _number(match.group(1)) if match else None


def _add(result: Result, label: str, value: float | str | None, unit: str = "", target: str = "",
         verdict: bool | None = None, note: str = "") -> None:
    if value is None:
        result.notes.append(f"could not read '{label}' from the output")
    result.figures.append(Figure(label, value, unit, target, verdict if value is not None else None, note))


def _cell(rows: dict[str, dict[str, str]], row_start: str, column: str) -> float | None:
    for name, row in rows.items():
        if name.startswith(row_start):
            return _number(row.get(column, ""))
    return None


# -- adapters, one per script without --json --------------------------------------------------------

def headless_rows(output: str, columns: Sequence[str], starts: Sequence[str]) -> dict[str, dict[str, str]]:
    """Rows of a table whose header has no first cell: each line starting with one of ``starts``,
    its cells after the name read as ``columns``."""
    rows: dict[str, dict[str, str]] = {}
    for line in output.splitlines():
        for start in starts:
            if line.startswith(start):
                cells = re.split(r"\s{2,}", line.strip())
                rows[cells[0]] = dict(zip(columns, cells[1:], strict=False))
    return rows


def read_email(output: str, result: Result) -> None:
    """bench_email: connector and mbsync rows, the ratio, RSS and no-change lines (issue 3)."""
    rows = headless_rows(output, ("seconds", "msg/s", "MB/s", "peak RSS MB"),
                         ("kmrl-connectors sync email", "mbsync (", "connector alone"))
    ratio = _find(output, r"ratio connector/mbsync: ([\d.]+)")
    rss = _cell(rows, "kmrl-connectors sync email", "peak RSS MB")
    no_change = _find(output, r"no-change sync ([\d.]+) ms")
    _add(result, "kmrl-connectors sync email: messages/s (start-up, fetch, parse, hash, dedup, outbox with fsync)",
         _cell(rows, "kmrl-connectors sync email", "msg/s"), "msg/s")
    _add(result, "kmrl-connectors sync email: MB/s", _cell(rows, "kmrl-connectors sync email", "MB/s"), "MB/s")
    _add(result, "mbsync: messages/s (maildir, fsync)", _cell(rows, "mbsync", "msg/s"), "msg/s")
    _add(result, "mbsync: MB/s", _cell(rows, "mbsync", "MB/s"), "MB/s")
    _add(result, "kmrl-connectors / mbsync messages/s", ratio, "", ">= 1.00 (issues 3, 15)", met(ratio, at_least=1.0))
    _add(result, "kmrl-connectors peak RSS", rss, "MB", "< 150 MB (issues 3, 15)", met(rss, below=150))
    _add(result, "mbsync peak RSS", _cell(rows, "mbsync", "peak RSS MB"), "MB")
    _add(result, "connector alone (no pipeline): messages/s", _cell(rows, "connector alone", "msg/s"), "msg/s")
    _add(result, "second sync with nothing new", no_change, "ms", "< 100 ms (issue 3)", met(no_change, below=100))
    pooled = _find(output, r"connector parsing in the process pool \(EMAIL_PARSE_IN_POOL=1\): [\d.]+ s, ([\d.]+) msg/s")
    if pooled is not None:
        _add(result, "connector parsing in the process pool (EMAIL_PARSE_IN_POOL=1): messages/s", pooled, "msg/s")


def read_language(output: str, result: Result) -> None:
    """bench_language: texts/s per detection path (script paths: 50,000 short texts/s)."""
    for line in output.splitlines():
        match = re.match(r"^(script: [\w +]+?|english|manglish \(Latin\)|langdetect \(foreign Latin\))\s{2,}"
                         r"([\d,]+)\s+([\d,]+)\s+([\d,]+)",
                         line.strip())
        if not match:
            continue
        name, rate = match.group(1).strip(), _number(match.group(3))
        target = ">= 50,000 texts/s (bench_language)" if name.startswith("script") else ""
        _add(result, f"{name}: texts/s", rate, "texts/s", target, met(rate, at_least=50_000) if target else None)
    # The held-out half of the labelled language set (tests/data/language), by class.
    counts = {label: (int(right), int(total)) for label, right, total in
              re.findall(r"^  (en|ml|mixed|Manglish|other Latin|all)\s+(\d+)/(\d+)", output, re.MULTILINE)}
    for label, (right, total) in counts.items():
        share = round(100 * right / total, 1)
        target, verdict = (">= 90% (issue 14)", met(share, at_least=90.0)) if label == "Manglish" else ("", None)
        _add(result, f"held-out {label}: right", share, "%", target, verdict, note=f"{right} of {total}")
    # The language target is on English, Malayalam (either script) and mixed text.
    ours = [counts[label] for label in ("en", "ml", "mixed", "Manglish") if label in counts]
    if ours:
        right, total = sum(r for r, _ in ours), sum(t for _, t in ours)
        share = round(100 * right / total, 1)
        _add(result, "held-out en + ml + mixed + Manglish: right", share, "%", ">= 97% (issue 14)",
             met(share, at_least=97.0), note=f"{right} of {total}")
    english_ml = re.search(r"English called ml: (\d+)/(\d+)", output)
    if english_ml:
        share = round(100 * int(english_ml.group(1)) / int(english_ml.group(2)), 1)
        _add(result, "held-out English called Malayalam", share, "%", "<= 1% (issue 14)", share <= 1.0)
    if not result.figures:
        result.notes.append("no figures found in the output")


def read_classifier(output: str, result: Result) -> None:
    """bench_classifier: macro-F1 on the held-out half of our labelled set and on the real-text held-out
    half, per language and per department, then documents/s (no target stated for speed)."""
    for prefix, name in (("", "own labelled set"), ("real ", "real text (Wikipedia)")):
        overall = re.search(rf"^{prefix}held-out macro-F1 ([\d.]+), accuracy ([\d.]+)", output, re.MULTILINE)
        if not overall:
            continue
        f1 = _number(overall.group(1))
        _add(result, f"held-out macro-F1, {name}", f1, "", ">= 0.85 (issue 14)", met(f1, at_least=0.85))
        _add(result, f"held-out accuracy, {name}", _number(overall.group(2)), "")
    section = ""
    for line in output.splitlines():
        header = re.match(r"^(real )?(language|department)\s+passages", line)
        if header:
            section = f"{(header.group(1) or '').strip()} {header.group(2)}".strip()
            continue
        row = re.match(r"^(\S+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)$", line)
        if section and row:
            _add(result, f"{section} {row.group(1)}: F1", _number(row.group(4)), "", note=f"{row.group(2)} passages")
            continue
        section = ""
        match = re.match(r"^(short \(.*?\)|a page \(.*?\)|long \(.*?\))\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)",
                         line.strip())
        if match:
            _add(result, f"{match.group(1)}: documents/s", _number(match.group(3)), "docs/s")
    if not result.figures:
        result.notes.append("no figures found in the output")


BENCHES = (
    Bench("email", "Email: the whole ingest beside mbsync (issue 3)", "bench.bench_email",
          args=("--compare-pool",), quick_args=("--messages", "500", "--rounds", "1"), adapter=read_email, needs=("dovecot", "mbsync")),
    Bench("sharepoint", "SharePoint: connector alone beside the whole ingest (issue 15), Graph requests, a 1 GB "
          "file (issue 4)", "bench.bench_sharepoint", quick_args=("--files", "300", "--large-mb", "64", "--rounds", "1")),
    Bench("maximo", "Maximo: connector alone beside the whole ingest (issue 15), requests per sync (issue 5)",
          "bench.bench_maximo", quick_args=("--work-orders", "200", "--rounds", "1")),
    Bench("webhook", "WhatsApp webhook under wrk beside a bare endpoint (issues 6, 15)", "bench.bench_webhook",
          quick_args=("--duration", "5", "--bodies", "5000", "--rounds", "1"), needs=("wrk",)),
    Bench("freshness", "Freshness: change at the source to the document in the Hub, pushed; a burst in one folder "
          "(issue 16)", "bench.bench_freshness", quick_args=("--quick",), needs=("dovecot", "redis-server")),
    Bench("watcher", "Email watcher idle cost: 5 accounts of 10 folders, nothing happening (issue 16)",
          "bench.bench_watcher_idle", quick_args=("--seconds", "5"), needs=("dovecot", "redis-server")),
    Bench("workers", "Two workers in two network namespaces (issue 15)", "bench.bench_workers",
          quick_args=("--docs-per-scope", "20", "--rounds", "1"), needs=("redis-server", "ip")),
    Bench("core", "Core pipeline: memory, Redis round trips (issues 9, 15), no-change syncs (issue 9)",
          "bench.bench_core",
          quick_args=("--large-mb", "64", "--documents", "200")),
    Bench("language", "Language detection", "bench.bench_language", quick_args=("--texts", "5000"),
          adapter=read_language),
    Bench("classifier", "Department classifier", "bench.bench_classifier", quick_args=("--documents", "2000"),
          adapter=read_classifier),
    Bench("sensitive", "Sensitive content: speed, false and true positives", "bench.bench_sensitive",
          quick_args=("--mb", "0.2")),
    Bench("demo", "make demo: one round end to end, once installed (README)", "bench.bench_demo",
          needs=("redis-server",)),
    Bench("content", "Reading documents: language and department from their content, as files through "
          "SharePoint (issue 14)", "bench.bench_content", quick_args=("--limit", "40"),
          needs=("pango-view", "pdftoppm", "pdftotext", "tesseract")),
    Bench("formats", "Extraction of Office, RTF, HTML, text and mail formats: MB/s and peak memory (issue 14)",
          "bench.bench_extraction_formats", quick_args=("--scale", "0.1")),
    Bench("extraction", "Extraction: PDF text layer and OCR beside poppler and Tesseract (issue 14)",
          "bench.bench_extraction", args=("--compare-pdfium",),
          quick_args=("--pages", "100", "--images", "1", "--rounds", "1"),
          needs=("pdftotext", "pdfinfo", "pdfunite", "tesseract", "pango-view")),
)


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _module_exists(module: str) -> bool:
    return (ROOT / (module.replace(".", "/") + ".py")).is_file()


def _has_json_flag(module: str) -> bool:
    """Whether the script offers ``--json PATH`` (the interface run_all asks of every benchmark)."""
    helped = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, check=False)
    return "--json" in helped.stdout


def _missing_programs(bench: Bench) -> list[str]:
    import shutil

    return [p for p in bench.needs if shutil.which(p) is None and not Path(f"/usr/sbin/{p}").exists()]


def run_bench(bench: Bench, results: Path, *, quick: bool, position: int) -> Result:
    """Runs one benchmark; its result file is ``results/NN-name.json`` (NN keeps the report's order)."""
    stem = f"{position:02d}-{bench.name}"
    json_path, text_path = results / f"{stem}.json", results / f"{stem}.txt"
    args = list(bench.quick_args if quick else bench.args)
    uses_json = _has_json_flag(bench.module)
    if uses_json:
        args += ["--json", _shown(json_path)]  # run from the repository: a relative path reads better
    argv = [sys.executable, "-m", bench.module, *args]
    command = "python -m " + shlex.join([bench.module, *args])
    started, wall = datetime.now(UTC), time.perf_counter()
    print(f"== {bench.name}: {command}", flush=True)
    missing = _missing_programs(bench)
    if missing:
        result = Result(bench.name, bench.title, command, returncode=127,
                        notes=[f"not run: {', '.join(missing)} not installed"])
    else:
        try:
            done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=bench.timeout, check=False)
            output, code = done.stdout + ("\n--- stderr ---\n" + done.stderr[-20000:] if done.stderr else ""), \
                done.returncode
        except subprocess.TimeoutExpired as exc:
            partial = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            output, code = f"timed out after {bench.timeout:.0f} s\n{partial}", -1
        text_path.write_text(output, encoding="utf-8")
        print(output.split("\n--- stderr ---\n", 1)[0], flush=True)
        if uses_json and json_path.is_file():
            result = Result.from_json(json.loads(json_path.read_text(encoding="utf-8")))
            result.returncode = code
        else:
            result = Result(bench.name, bench.title, command, returncode=code)
            if bench.adapter is None:
                result.notes.append("the script wrote no result file and has no adapter")
            else:
                bench.adapter(output.split("\n--- stderr ---\n", 1)[0], result)
                result.notes.append("figures read from the script's printed output (it has no --json yet)")
            if code != 0:
                result.notes.append(f"exit code {code}; output in {_shown(text_path)}")
    result.title, result.command = bench.title, command
    result.started_at = started.strftime("%Y-%m-%d %H:%M UTC")
    result.seconds = time.perf_counter() - wall
    result.output_file = str(_shown(text_path))
    if quick:
        result.notes.append("quick run (reduced sizes): not the issue's figures")
    result.save(json_path)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", default="", help="comma-separated benchmark names: "
                                                   + ", ".join(b.name for b in BENCHES))
    parser.add_argument("--quick", action="store_true", help="small sizes: check that every benchmark runs")
    parser.add_argument("--results", default=str(DEFAULT_RESULTS))
    parser.add_argument("--report", default=str(DEFAULT_REPORT))
    parser.add_argument("--no-report", action="store_true", help="run, but leave BENCHMARKS.md as it is")
    args = parser.parse_args(argv)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = only - {b.name for b in BENCHES}
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    crashed = []
    for position, bench in enumerate(BENCHES, start=1):
        if only and bench.name not in only:
            continue
        if not _module_exists(bench.module):
            print(f"== {bench.name}: {bench.module} does not exist yet; skipped", flush=True)
            continue
        result = run_bench(bench, results, quick=args.quick, position=position)
        if result.returncode != 0:
            crashed.append(bench.name)
    if not args.no_report:
        command = "make bench" if not argv and not sys.argv[1:] else "python -m bench.run_all " + shlex.join(
            list(argv) if argv is not None else sys.argv[1:])
        print(f"wrote {write_report(results, args.report, command=command)}")
    if crashed:
        print(f"benchmarks that did not finish cleanly: {', '.join(crashed)}", file=sys.stderr)
    return 1 if crashed else 0


if __name__ == "__main__":
    raise SystemExit(main())
