"""Extraction throughput and peak memory per format (DOCX, XLSX, PPTX, ODT, RTF, HTML, CSV, .eml, .msg).

For each format a large file of its kind is written (Malayalam and English text), then extracted in
a fresh child process twice: with the text cap lifted (every part is read: throughput in MB of file
and of expanded XML or text per second) and with the default limits (the production case: peak RSS
while the cap stops the read). Peak RSS is the child's VmHWM, the interpreter and imports included
(about 15 MB).

    .venv/bin/python -m bench.bench_extraction_formats [--scale 1.0] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.compound_file import outlook_message
from tests.document_builders import MALAYALAM, write_docx, write_pptx, write_xlsx

ROOT = Path(__file__).resolve().parent.parent
W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
PEAK = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024"
LINE = f"{MALAYALAM} — Aluva to Pettah, train 42 delayed by 4 minutes"


def _replace_member(source: Path, target: Path, name: str, chunks: Iterator[bytes]) -> Path:
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            if info.filename == name:
                with new.open(name, "w", force_zip64=True) as member:
                    for chunk in chunks:
                        member.write(chunk)
            else:
                new.writestr(info.filename, old.read(info.filename))
    return target


def make_docx(folder: Path, scale: float) -> Path:
    def body() -> Iterator[bytes]:
        yield f'<w:document xmlns:w="{W}"><w:body>'.encode()
        for number in range(int(100_000 * scale)):
            yield (f"<w:p><w:pPr><w:jc w:val=\"left\"/></w:pPr><w:r><w:rPr><w:b/></w:rPr><w:t>{number}</w:t></w:r>"
                   f"<w:r><w:t xml:space=\"preserve\"> {LINE}</w:t></w:r></w:p>").encode()
        yield b"</w:body></w:document>"
    return _replace_member(write_docx(folder / "seed.docx", paragraphs=["x"]), folder / "large.docx",
                           "word/document.xml", body())


def make_xlsx(folder: Path, scale: float) -> Path:
    seed = write_xlsx(folder / "seed.xlsx", {"Data": [["x"]]})
    words = [f"{MALAYALAM.split()[n % 8]} {n}" for n in range(5000)]

    def sheet() -> Iterator[bytes]:
        yield (b'<?xml version="1.0" encoding="UTF-8"?><worksheet '
               b'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>')
        for row in range(1, int(100_000 * scale) + 1):
            cells = "".join(f'<c r="{column}{row}" t="s"><v>{(row + n) % 5000}</v></c>' if n % 2 else
                            f'<c r="{column}{row}"><v>{row * 10 + n}</v></c>' for n, column in enumerate("ABCDEFGHIJ"))
            yield f'<row r="{row}">{cells}</row>'.encode()
        yield b"</sheetData></worksheet>"

    shared = ('<?xml version="1.0" encoding="UTF-8"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/'
              f'2006/main" count="5000" uniqueCount="5000">{"".join(f"<si><t>{w}</t></si>" for w in words)}</sst>')
    staged = _replace_member(seed, folder / "staged.xlsx", "xl/worksheets/sheet1.xml", sheet())
    target = folder / "large.xlsx"
    with zipfile.ZipFile(staged) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            data = old.read(info.filename)
            if info.filename == "[Content_Types].xml":
                data = data.replace(b"</Types>", b'<Override PartName="/xl/sharedStrings.xml" ContentType="application/'
                                    b'vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>')
            if info.filename == "xl/_rels/workbook.xml.rels":
                data = data.replace(b"</Relationships>", b'<Relationship Id="rIdS" Type="http://schemas.openxmlformats'
                                    b'.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/>'
                                    b"</Relationships>")
            new.writestr(info.filename, data)
        new.writestr("xl/sharedStrings.xml", shared)
    return target


def make_pptx(folder: Path, scale: float) -> Path:
    slides = [(f"Slide {n}", "\n".join([LINE] * 8), f"Notes {n}: {LINE}") for n in range(int(400 * scale))]
    return write_pptx(folder / "large.pptx", slides)


def make_odt(folder: Path, scale: float) -> Path:
    from tests.document_builders import write_odf

    body = "<office:text>" + "".join(f"<text:p>{n} {LINE}</text:p>" for n in range(int(100_000 * scale)))
    return write_odf(folder / "large.odt", "odt", body + "</office:text>")


def make_rtf(folder: Path, scale: float) -> Path:
    from tests.document_builders import rtf_unicode

    path = folder / "large.rtf"
    with path.open("w", encoding="ascii") as handle:
        handle.write("{\\rtf1\\ansi\\ansicpg1252\\deff0{\\fonttbl{\\f0 Arial;}}\\uc1 ")
        for number in range(int(50_000 * scale)):
            handle.write(f"\\pard\\f0\\fs22 {number} {rtf_unicode(LINE)}\\par\n")
        handle.write("}")
    return path


def make_html(folder: Path, scale: float) -> Path:
    path = folder / "large.html"
    with path.open("w", encoding="utf-8") as handle:
        handle.write('<!DOCTYPE html><html><head><meta charset="utf-8"><title>Large</title></head><body>')
        for number in range(int(150_000 * scale)):
            handle.write(f'<div class="row"><p><b>{number}</b> {LINE}</p><script>x({number})</script></div>\n')
        handle.write("</body></html>")
    return path


def make_csv(folder: Path, scale: float) -> Path:
    path = folder / "large.csv"
    with path.open("w", encoding="utf-8") as handle:
        for number in range(int(300_000 * scale)):
            handle.write(f'{number},2025-12-01,"{LINE}",12400\n')
    return path


def make_eml(folder: Path, scale: float) -> Path:
    body = base64.encodebytes("".join(f"{n} {LINE}\n" for n in range(int(60_000 * scale))).encode()).decode()
    attachment = base64.encodebytes(bytes(range(256)) * 4096).decode()
    path = folder / "large.eml"
    path.write_text("Subject: Large\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
                    "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                    f"{body}\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; "
                    f'filename="data.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n{attachment}\r\n--b--\r\n')
    return path


def make_msg(folder: Path, scale: float) -> Path:
    body = "".join(f"{n} {LINE}\r\n" for n in range(int(20_000 * scale)))
    path = folder / "large.msg"
    path.write_bytes(outlook_message(subject="Large", body=body, attachments=[("data.bin", bytes(1_000_000))]))
    return path


FORMATS: dict[str, Callable[[Path, float], Path]] = {
    "docx": make_docx, "xlsx": make_xlsx, "pptx": make_pptx, "odt": make_odt, "rtf": make_rtf,
    "html": make_html, "csv": make_csv, "eml": make_eml, "msg": make_msg,
}


def _expanded_bytes(path: Path) -> int:
    if not zipfile.is_zipfile(path):
        return path.stat().st_size
    with zipfile.ZipFile(path) as package:
        return sum(info.file_size for info in package.infolist())


def run_child(path: Path, max_chars: int | None) -> dict[str, float | int | str | None]:
    limits = "" if max_chars is None else f"max_chars={max_chars}"
    code = ("import json, time\n"
            "from base.extraction import ExtractionLimits, extract_path\n"
            "t = time.perf_counter()\n"
            f"r = extract_path({str(path)!r}, filename={path.name!r}, mime_type='', limits=ExtractionLimits({limits}))\n"
            "s = time.perf_counter() - t\n"
            f"print(json.dumps({{'kind': r.kind, 'seconds': s, 'chars': r.chars, 'pages': r.pages,"
            f" 'truncated': r.truncated, 'error': r.error, 'peak_mb': {PEAK}}}))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    outcome: dict[str, float | int | str | None] = json.loads(done.stdout)
    return outcome


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every file's size")
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated subset")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    rows = []
    print(f"{'format':6} {'file MB':>8} {'read MB':>8} {'s':>6} {'file MB/s':>9} {'read MB/s':>9} {'Mchar/s':>8} "
          f"{'peak MB':>8} {'peak MB (1M-char cap)':>22}")
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as folder:
        for kind in args.formats.split(","):
            path = FORMATS[kind](Path(folder), args.scale)
            size, expanded = path.stat().st_size, _expanded_bytes(path)
            full = run_child(path, 10**9)
            capped = run_child(path, None)
            assert full["kind"] == kind and full["error"] is None, full
            seconds = float(full["seconds"])  # type: ignore[arg-type]
            row = {"format": kind, "file_mb": size / 1e6, "read_mb": expanded / 1e6, "seconds": seconds,
                   "file_mb_s": size / 1e6 / seconds, "read_mb_s": expanded / 1e6 / seconds,
                   "chars": full["chars"], "mchars_s": float(full["chars"]) / 1e6 / seconds,  # type: ignore[arg-type]
                   "peak_mb": full["peak_mb"], "capped_peak_mb": capped["peak_mb"]}
            rows.append(row)
            print(f"{kind:6} {row['file_mb']:8.1f} {row['read_mb']:8.1f} {seconds:6.2f} {row['file_mb_s']:9.1f} "
                  f"{row['read_mb_s']:9.1f} {row['mchars_s']:8.2f} {float(full['peak_mb']):8.1f} "  # type: ignore[arg-type]
                  f"{float(capped['peak_mb']):22.1f}")  # type: ignore[arg-type]
            Path(path).unlink()
    if args.json:
        as_result(rows).save(args.json)


def as_result(rows: list[dict[str, Any]]) -> Any:
    """The figures as a ``bench.report.Result`` (what ``make bench`` reads): per format, the rate of
    what was read and the peak memory of the reading child with the default 1M-character cap."""
    from bench.report import Figure, Result

    figures = []
    for row in rows:
        figures.append(Figure(f"{row['format']}: read MB/s", round(float(row["read_mb_s"]), 1), "MB/s",
                              note=f"{row['read_mb']:.1f} MB read from a {row['file_mb']:.1f} MB file"))
        figures.append(Figure(f"{row['format']}: peak RSS of the child (1M-character cap)",
                              round(float(row["capped_peak_mb"]), 1), "MB"))
    return Result("formats", "Extraction of Office, RTF, HTML, text and mail formats", "", figures,
                  notes=["peak without the cap, whole text kept: " + ", ".join(
                      f"{row['format']} {float(row['peak_mb']):.0f} MB" for row in rows)])


if __name__ == "__main__":
    main()
