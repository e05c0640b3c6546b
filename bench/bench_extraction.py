"""Extraction benchmark: PDF text layer and OCR beside the bare poppler and Tesseract commands.

- Text layer, pages/s: ours through ``extract_path`` and through the process pool
  (``ProcessPool.run(extract, ExtractionRequest(...))``) against ``pdftotext -enc UTF-8 FILE -`` on
  the same files in the same run, interleaved, median of ``--rounds`` (target: at least 0.5x
  pdftotext). Files: 1,000 pages of English in Helvetica, and 1,000 pages of shaped Malayalam made by
  cairo (pango-view, Manjari), each page holding a circular. The character cap is raised so that
  every page is read, as pdftotext reads it.
- OCR, pages/s: ours (``extract_path`` on PNG scans, and through the pool) against ``tesseract IMAGE
  stdout -l mal+eng --psm 3`` on the same images, run back to back per image; the ratio is the median
  of paired runs (target: at least 0.9x the bare command). The bare command is also timed with
  Tesseract's default OpenMP threads, for information: on a busy two-core host they are much slower.
- Peak RSS of the whole process tree while the pool extracts a 1,000-page Malayalam PDF with the
  default limits: a fresh parent process, its pool child and the child's pdfinfo / pdftotext,
  sampled from /proc every few milliseconds (target: under 200 MB).
- The legacy-font text sign (base/extraction/legacy.py): its false positives on English prose (the
  text/plain bodies of the real messages in ../shared/testdata/mime, the project's Markdown files,
  the READMEs in /usr/share/doc), cut into pages of 300 words, and its detection of ML-TT pages.
- ``--compare-pdfium``: pypdfium2 (if installed) against pdftotext on shaped Malayalam PDFs in three
  fonts: fidelity (words exactly as typed), pages/s, peak RSS, licence.

    .venv/bin/python -m bench.bench_extraction [--pages 1000] [--images 6] [--rounds 3]
        [--dir .bench/extraction] [--compare-pdfium] [--json PATH]
"""

from __future__ import annotations

import argparse
import email
import email.policy
import glob
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from base.extraction import ExtractionLimits, ExtractionRequest, extract, extract_path, legacy
from base.pool import ProcessPool
from bench import extraction_samples as samples
from bench.report import Figure, Result, met

ROOT = Path(__file__).resolve().parent.parent
#: Targets of issue 14.
TEXT_RATIO_TARGET = 0.5
OCR_RATIO_TARGET = 0.9
RSS_TARGET_MB = 200
#: Words per page when English prose is cut into pages for the false-positive count.
WORDS_PER_PAGE = 300
#: How often the process tree's memory is sampled, seconds.
SAMPLE_EVERY = 0.005
#: Enough characters for every page of the text-layer files (the default cap would stop early).
ALL_TEXT = ExtractionLimits(max_chars=50_000_000)


def median_seconds(run: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def interleaved(runs: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Median seconds of each run, the runs interleaved round by round (load drifts hit all alike)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


# -- files ---------------------------------------------------------------------------------------

def text_files(folder: Path, pages: int) -> dict[str, Path]:
    english = [f"Work order {n}: inspection of the viaduct bearings between pier {n} and pier {n + 1}. " * 6
               for n in range(40)]
    files = {"English, Helvetica": samples.write_text_pdf(folder / "english.pdf",
                                                          ["\n".join(english)] * pages)}
    page = samples.render_pdf(samples.MALAYALAM_CIRCULAR * 2, folder / "ml-page.pdf", font="Manjari 12")
    files["Malayalam, cairo (Manjari)"] = samples.unite([page] * pages, folder / "malayalam.pdf")
    return files


def scan_images(folder: Path, count: int) -> list[Path]:
    texts = [samples.MALAYALAM_CIRCULAR * 2, samples.ENGLISH_NOTE * 3, samples.MIXED_NOTE * 3]
    fonts = ["Rachana 12", "DejaVu Sans 11", "Manjari 12"]
    return [samples.render_png(texts[i % 3], folder / f"scan-{i}.png", font=fonts[i % 3], dpi=300)
            for i in range(count)]


# -- text layer ----------------------------------------------------------------------------------

def text_layer_figures(files: dict[str, Path], rounds: int) -> list[Figure]:
    figures = []
    with ProcessPool(size=1, seconds=600) as pool:
        for label, path in files.items():
            pages = extract_path(str(path), filename=path.name, mime_type="", limits=ALL_TEXT).pages
            request = ExtractionRequest(filename=path.name, mime_type="application/pdf", path=str(path),
                                        limits=ALL_TEXT)
            pool.run(extract, request)  # the child is started and has imported the PDF code
            seconds = interleaved({
                "pdftotext": lambda p=path: subprocess.run(["pdftotext", "-enc", "UTF-8", str(p), "-"],
                                                           stdout=subprocess.DEVNULL, check=True),
                "ours": lambda p=path: extract_path(str(p), filename=p.name, mime_type="", limits=ALL_TEXT),
                "pool": lambda r=request: pool.run(extract, r),
            }, rounds)
            rate = {name: pages / value for name, value in seconds.items()}
            figures += [
                Figure(f"{label}: pdftotext pages/s", round(rate["pdftotext"]), "pages/s", note=f"{pages} pages"),
                Figure(f"{label}: ours (extract_path) pages/s", round(rate["ours"]), "pages/s"),
                Figure(f"{label}: ours through the pool pages/s", round(rate["pool"]), "pages/s"),
                Figure(f"{label}: ours / pdftotext", round(rate["ours"] / rate["pdftotext"], 2), "",
                       f">= {TEXT_RATIO_TARGET} (issue 14)", met(rate["ours"] / rate["pdftotext"],
                                                                   at_least=TEXT_RATIO_TARGET)),
                Figure(f"{label}: ours through the pool / pdftotext", round(rate["pool"] / rate["pdftotext"], 2), "",
                       f">= {TEXT_RATIO_TARGET} (issue 14)", met(rate["pool"] / rate["pdftotext"],
                                                                   at_least=TEXT_RATIO_TARGET)),
            ]
    return figures


# -- OCR -----------------------------------------------------------------------------------------

def ocr_figures(images: list[Path], rounds: int) -> list[Figure]:
    """Each image OCRed by each way in turn, ``rounds`` times. pages/s = images / the sum over images of
    the median seconds; the ratios are paired: the median over images and rounds of (bare seconds /
    our seconds) for runs of the same image back to back, so that a load spike on the shared host,
    which lasts longer than one run, weighs on both sides of a ratio alike."""
    one_thread = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    default_threads = {k: v for k, v in os.environ.items() if k != "OMP_THREAD_LIMIT"}
    limits = ExtractionLimits()

    def bare(image: Path, env: dict[str, str]) -> None:
        subprocess.run(["tesseract", str(image), "stdout", "-l", limits.ocr_languages, "--psm", "3"],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)

    def ours(image: Path) -> None:
        result = extract_path(str(image), filename=image.name, mime_type="", limits=limits)
        assert result.ocr_pages == 1 and result.error is None, result.error

    times: dict[str, list[list[float]]] = {"bare-1": [], "bare": [], "ours": [], "pool": []}
    with ProcessPool(size=1, seconds=600) as pool:
        def pooled(image: Path) -> None:
            pool.run(extract, ExtractionRequest(filename=image.name, mime_type="image/png", path=str(image),
                                                limits=limits))

        pooled(images[0])  # the child is started and has imported the OCR code
        ways = {"bare-1": lambda i: bare(i, one_thread), "ours": ours, "pool": pooled,
                "bare": lambda i: bare(i, default_threads)}
        for image in images:
            for name in ways:
                times[name].append([])
            for _ in range(rounds):
                for name, way in ways.items():
                    started = time.perf_counter()
                    way(image)
                    times[name][-1].append(time.perf_counter() - started)
    rate = {name: len(images) / sum(statistics.median(per_image) for per_image in values)
            for name, values in times.items()}

    def paired(ours_name: str) -> float:
        ratios = [bare_s / ours_s for bare_runs, our_runs in zip(times["bare-1"], times[ours_name], strict=True)
                  for bare_s, ours_s in zip(bare_runs, our_runs, strict=True)]
        return round(statistics.median(ratios), 3)

    ours_ratio, pool_ratio = paired("ours"), paired("pool")
    return [
        Figure("tesseract (OMP_THREAD_LIMIT=1) pages/s", round(rate["bare-1"], 3), "pages/s",
               note=f"{len(images)} pages at 300 dpi, mal+eng, {rounds} rounds"),
        Figure("tesseract (default threads: OpenMP) pages/s", round(rate["bare"], 3), "pages/s"),
        Figure("ours (extract_path) pages/s", round(rate["ours"], 3), "pages/s"),
        Figure("ours through the pool pages/s", round(rate["pool"], 3), "pages/s"),
        Figure("ours / tesseract, paired runs (median)", ours_ratio, "", f">= {OCR_RATIO_TARGET} (issue 14)",
               met(ours_ratio, at_least=OCR_RATIO_TARGET)),
        Figure("ours through the pool / tesseract, paired runs (median)", pool_ratio, "",
               f">= {OCR_RATIO_TARGET} (issue 14)", met(pool_ratio, at_least=OCR_RATIO_TARGET)),
    ]


# -- memory of the process tree ------------------------------------------------------------------

def _tree_rss_kib(root: int) -> int:
    """Resident memory of ``root`` and all its descendants, KiB (one pass over /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        parents[pid] = int(fields[1])
        rss[pid] = int(fields[21]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    total, members = 0, {root}
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in members and pid not in members:
                members.add(pid)
                changed = True
    for pid in members:
        total += rss.get(pid, 0)
    return total


def child_rss(path: str) -> None:
    """In a fresh process: the pool extracts ``path`` with the default limits; prints the outcome."""
    with ProcessPool(size=1, seconds=600) as pool:
        result = pool.run(extract, ExtractionRequest(filename=Path(path).name, mime_type="application/pdf",
                                                     path=path, limits=ExtractionLimits()))
    print(json.dumps({"pages": result.pages, "chars": result.chars, "error": result.error}))


def tree_rss_figures(path: Path) -> list[Figure]:
    process = subprocess.Popen([sys.executable, "-m", "bench.bench_extraction", "--child-rss", str(path)], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    peak, samples_taken = 0, 0
    done = threading.Event()

    def wait() -> None:
        process.wait()
        done.set()

    threading.Thread(target=wait, daemon=True).start()
    while not done.wait(SAMPLE_EVERY):
        peak = max(peak, _tree_rss_kib(process.pid))
        samples_taken += 1
    out = json.loads(process.stdout.read().strip().splitlines()[-1]) if process.stdout else {}
    peak_mb = peak / 1024
    return [Figure(f"peak RSS of the process tree, {out.get('pages'):,}-page Malayalam PDF through the pool",
                   round(peak_mb, 1), "MB",
                   f"< {RSS_TARGET_MB} MB (issue 14)", met(peak_mb, below=RSS_TARGET_MB),
                   note=f"{out.get('pages')} pages, {out.get('chars'):,} chars kept, {samples_taken} samples")]


# -- the legacy-font text sign -------------------------------------------------------------------

def english_pages() -> dict[str, list[str]]:
    """English prose from three sources, cut into pages of WORDS_PER_PAGE words."""
    sources: dict[str, list[str]] = {"mail bodies (../shared/testdata/mime)": [], "project Markdown": [],
                                     "/usr/share/doc READMEs": []}
    for name in sorted(glob.glob(str(ROOT.parent / "shared" / "testdata" / "mime" / "*"))):
        if name.endswith((".tsv", ".md")):
            continue
        with open(name, "rb") as handle:
            message = email.message_from_binary_file(handle, policy=email.policy.default)
        for part in message.walk():
            if part.get_content_type() == "text/plain":
                try:
                    sources["mail bodies (../shared/testdata/mime)"].append(part.get_content())
                except (LookupError, ValueError):
                    continue
    for name in sorted(glob.glob(str(ROOT / "**" / "*.md"), recursive=True)):
        if "/.venv/" not in name and "/.bench/" not in name:
            sources["project Markdown"].append(Path(name).read_text(encoding="utf-8", errors="replace"))
    for name in sorted(glob.glob("/usr/share/doc/*/README*"))[:400]:
        if name.endswith((".gz", ".bz2", ".xz")):
            continue
        try:
            sources["/usr/share/doc READMEs"].append(Path(name).read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
    pages: dict[str, list[str]] = {}
    for label, texts in sources.items():
        pages[label] = []
        for text in texts:
            words = text.split()
            pages[label] += [" ".join(words[i: i + WORDS_PER_PAGE]) for i in range(0, len(words), WORDS_PER_PAGE)
                             if len(words[i: i + WORDS_PER_PAGE]) >= legacy.MIN_WORDS]
    return pages


def legacy_sign_figures(folder: Path) -> list[Figure]:
    figures = []
    for label, pages in english_pages().items():
        strong = sum(legacy.looks_legacy(p) for p in pages)
        weak = sum(legacy.looks_legacy(p, legacy_font_in_document=True) for p in pages)
        figures.append(Figure(f"legacy sign on English prose, {label}: pages flagged",
                              round(100 * strong / max(1, len(pages)), 2), "%",
                              note=f"{strong} of {len(pages)} pages of {WORDS_PER_PAGE} words; "
                                   f"{weak} with the lower bar of a document with a legacy font"))
        print(f"  {label}: {strong} of {len(pages)} pages flagged ({weak} at the lower bar)")
    fonts = folder / "legacy-fonts"
    fonts.mkdir(exist_ok=True)
    source = samples.LEGACY_SOURCE + samples.MALAYALAM_CIRCULAR
    typed = samples.build_legacy_font(fonts, text=source).encode(source)
    lines = [line for line in typed.splitlines() if line.strip()]
    judged = [line for line in lines if len(line.split()) >= legacy.MIN_WORDS]
    caught = sum(legacy.looks_legacy(line) for line in judged)
    share, _words = legacy.gibberish_share(typed)
    figures.append(Figure("legacy sign on ML-TT text: lines of 6+ words caught by their text alone",
                          round(100 * caught / max(1, len(judged)), 1), "%",
                          note=f"{caught} of {len(judged)} lines; {share:.0%} of all its words suspicious"))
    print(f"  ML-TT lines caught: {caught} of {len(judged)}; words suspicious: {share:.0%}")
    return figures


# -- pypdfium2 -----------------------------------------------------------------------------------

def _pdfium_text(path: str) -> tuple[str, int]:
    import pypdfium2 as pdfium  # type: ignore[import-not-found]

    document = pdfium.PdfDocument(path)
    pages = []
    for page in document:
        textpage = page.get_textpage()
        pages.append(textpage.get_text_range())
        textpage.close()
        page.close()
    document.close()
    return "\f".join(pages), len(pages)


def child_pdfium(path: str) -> None:
    """In a fresh process: pypdfium2 reads every page of ``path``; prints pages and peak RSS."""
    started = time.perf_counter()
    _text, pages = _pdfium_text(path)
    seconds = time.perf_counter() - started
    with open("/proc/self/status", encoding="ascii") as status:
        hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(json.dumps({"pages": pages, "seconds": seconds, "peak_rss_mb": hwm / 1024}))


def _words_right(expected: str, got: str) -> float:
    import difflib

    wanted, found = expected.split(), got.split()
    matcher = difflib.SequenceMatcher(None, wanted, found, autojunk=False)
    return sum(block.size for block in matcher.get_matching_blocks()) / len(wanted)


def pdfium_figures(folder: Path, long_pdf: Path, rounds: int) -> list[Figure]:
    try:
        import pypdfium2 as pdfium
    except ImportError:
        return [Figure("pypdfium2 comparison", "not run", note="pypdfium2 is not installed in this environment")]
    from importlib.metadata import version

    figures = []
    for font in ("Manjari", "Rachana", "Meera"):
        pdf = samples.render_pdf(samples.MALAYALAM_CIRCULAR + samples.MIXED_NOTE, folder / f"fidelity-{font}.pdf",
                                 font=f"{font} 13")
        expected = samples.MALAYALAM_CIRCULAR + samples.MIXED_NOTE
        poppler = subprocess.run(["pdftotext", "-enc", "UTF-8", str(pdf), "-"], capture_output=True,
                                 check=True).stdout.decode()
        pdfium, _pages = _pdfium_text(str(pdf))
        ours = extract_path(str(pdf), filename=pdf.name, mime_type="", limits=ALL_TEXT).text
        figures.append(Figure(f"{font}: words exactly as typed, pdftotext / ours / pypdfium2",
                              f"{_words_right(expected, poppler):.1%} / {_words_right(expected, ours):.1%} / "
                              f"{_words_right(expected, pdfium):.1%}", note=f"{len(expected.split())} words"))
    pages = int(subprocess.run(["pdfinfo", str(long_pdf)], capture_output=True, text=True,
                               check=True).stdout.split("Pages:")[1].split()[0])

    def pdfium_run() -> dict[str, Any]:
        out = subprocess.run([sys.executable, "-m", "bench.bench_extraction", "--child-pdfium", str(long_pdf)],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return dict(json.loads(out.strip().splitlines()[-1]))

    runs = [pdfium_run() for _ in range(rounds)]
    poppler_seconds = median_seconds(lambda: subprocess.run(["pdftotext", "-enc", "UTF-8", str(long_pdf), "-"],
                                                            stdout=subprocess.DEVNULL, check=True), rounds)
    rss = subprocess.run(["/usr/bin/time", "-f", "%M", "pdftotext", "-enc", "UTF-8", str(long_pdf), "/dev/null"],
                         capture_output=True, text=True, check=False).stderr.strip().splitlines()
    figures += [
        Figure(f"Malayalam, {pages:,} pages: pypdfium2 pages/s (in-process, text of every page)",
               round(pages / statistics.median(r["seconds"] for r in runs)), "pages/s"),
        Figure(f"Malayalam, {pages:,} pages: pdftotext pages/s", round(pages / poppler_seconds), "pages/s"),
        Figure("pypdfium2 peak RSS (the reading process)", round(max(r["peak_rss_mb"] for r in runs), 1), "MB"),
        Figure("pdftotext peak RSS", round(int(rss[-1]) / 1024, 1) if rss and rss[-1].isdigit() else None, "MB"),
        Figure("licences", f"pypdfium2 {version('pypdfium2')}: Apache-2.0 or BSD-3-Clause (PDFium: BSD-3-Clause); "
                           "poppler-utils: GPL-2.0-or-later, run as a separate program"),
    ]
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pages", type=int, default=1000, help="pages of each text-layer file")
    parser.add_argument("--images", type=int, default=6, help="scanned pages OCRed per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=str(ROOT / ".bench" / "extraction"))
    parser.add_argument("--skip", default="", help="comma-separated: text, ocr, rss, legacy")
    parser.add_argument("--compare-pdfium", action="store_true", help="also measure pypdfium2 (if installed)")
    parser.add_argument("--json", help="also write the figures to this result file")
    parser.add_argument("--child-rss", help=argparse.SUPPRESS)
    parser.add_argument("--child-pdfium", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_rss:
        child_rss(args.child_rss)
        return 0
    if args.child_pdfium:
        child_pdfium(args.child_pdfium)
        return 0
    from utils.logging import configure_logging

    configure_logging(log_file="", level="WARNING")
    missing = [p for p in ("pdftotext", "pdfinfo", "pdfunite", "tesseract", "pango-view") if shutil.which(p) is None]
    if missing:
        print(f"not installed: {', '.join(missing)} (make install)", file=sys.stderr)
        return 2
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    folder = Path(args.dir).resolve()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started, wall = datetime.now(UTC), time.perf_counter()
    result = Result("extraction", "Extraction: PDF text layer and OCR beside poppler and Tesseract (issue 14)",
                    "python -m bench.bench_extraction " + shlex.join(argv if argv is not None else sys.argv[1:]),
                    started_at=started.strftime("%Y-%m-%d %H:%M UTC"))
    files = text_files(folder, args.pages)
    if "text" not in skip:
        result.figures += text_layer_figures(files, args.rounds)
    if "ocr" not in skip:
        result.figures += ocr_figures(scan_images(folder, args.images), args.rounds)
    if "rss" not in skip:
        result.figures += tree_rss_figures(files["Malayalam, cairo (Manjari)"])
    if "legacy" not in skip:
        result.figures += legacy_sign_figures(folder)
    if args.compare_pdfium:
        result.figures += pdfium_figures(folder, files["Malayalam, cairo (Manjari)"], args.rounds)
    result.seconds = time.perf_counter() - wall
    result.print_table()
    if args.json:
        result.save(args.json)
    return 0  # a missed target is a figure, not a failure of the benchmark


if __name__ == "__main__":
    raise SystemExit(main())
