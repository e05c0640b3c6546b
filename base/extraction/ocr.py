"""Text out of images (PNG, JPEG, TIFF) by OCR, with Tesseract and its Malayalam and English models.

Tesseract runs as its own command (``tesseract IMAGE stdout -l mal+eng --psm 3``) with
``OMP_THREAD_LIMIT=1``: one core per document, as the pool gives each task one, and no cost on top
of Tesseract's own (bench/bench_extraction.py measures pages/s against the bare command). What a
caller may rely on:

- an image's size is read from its header first (base/extraction/images.py): one over
  ``MAX_IMAGE_PIXELS`` is refused with an error and never decoded (a decompression bomb);
- every page of a multi-page TIFF counts against ``limits.ocr_max_pages``; pages beyond it are not
  OCRed and a note says how many ("3 pages over the OCR page limit"), with ``truncated`` set;
- an image under ``MIN_OCR_PIXELS`` (an icon) is not OCRed, and that is no error;
- a missing ``tesseract`` or language model is an error naming the Debian packages, not a traceback;
- the text is Unicode NFC Malayalam with atomic chillus (ൽ, not ല്‍ as Tesseract writes them).
"""

from __future__ import annotations

import codecs
import os
import re
import unicodedata

from base.extraction import OCR, ExtractionCut, Job, commands
from base.extraction.images import MAX_IMAGE_PIXELS, ImageHeaderError, image_pages, megapixels

#: Tesseract's page segmentation mode: fully automatic layout analysis, no orientation detection.
PSM = "3"
#: Where Tesseract looks for models when TESSDATA_PREFIX does not say (Debian's tesseract-ocr 5).
TESSDATA_DIRS = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata",
                 "/usr/share/tessdata", "/usr/local/share/tessdata")
#: Images with fewer pixels than this (e.g. 64 x 64) are icons, bullets or tracking pixels: not OCRed
#: (Tesseract reads noise into them).
MIN_OCR_PIXELS = 4096
#: Tesseract writes a form feed after each page of a multi-page image.
PAGE_SEPARATOR = "\f"

# Old-style chillus (consonant + virama + ZWJ) to the atomic ones, as Unicode 5.1 and typed text have them.
_CHILLUS = {"ണ്\u200d": "ൺ", "ന്\u200d": "ൻ", "ര്\u200d": "ർ", "ല്\u200d": "ൽ", "ള്\u200d": "ൾ", "ക്\u200d": "ൿ"}
_CHILLU_RE = re.compile("|".join(map(re.escape, _CHILLUS)))
# A ZWNJ after a virama at the end of a word only keeps the virama visible; it is no text.
_END_ZWNJ = re.compile("\u0d4d\u200c(?=\\s|$|[.,;:!?)])")


def normalise(text: str) -> str:
    """Tesseract's Malayalam as typed Unicode text (NFC, atomic chillus)."""
    text = _CHILLU_RE.sub(lambda m: _CHILLUS[m.group()], text)
    return unicodedata.normalize("NFC", _END_ZWNJ.sub("\u0d4d", text))


def tesseract_environ() -> dict[str, str]:
    """Tesseract's environment: ours, with one OpenMP thread (several only fight over the pool's cores)."""
    return {**os.environ, "OMP_THREAD_LIMIT": "1"}


#: (languages, TESSDATA_PREFIX) whose models were found: checked once per process while present, and
#: again each time while missing (an operator may install them while the worker runs).
_models_found: set[tuple[str, str | None]] = set()


def _missing_models(languages: str, tessdata_prefix: str | None) -> tuple[str, ...]:
    if (languages, tessdata_prefix) in _models_found:
        return ()
    folders = [tessdata_prefix] if tessdata_prefix else list(TESSDATA_DIRS)
    wanted = [lang for lang in languages.split("+") if lang]
    missing = tuple(lang for lang in wanted
                    if not any(os.path.isfile(os.path.join(d, f"{lang}.traineddata")) for d in folders))
    if not missing:
        _models_found.add((languages, tessdata_prefix))
    return missing


def check_models(languages: str) -> None:
    """Raises ``commands.CommandMissing`` naming the Debian packages when a model in ``languages``
    (e.g. "mal+eng") is not installed. Tesseract itself would only warn and read with the others."""
    missing = _missing_models(languages, os.environ.get("TESSDATA_PREFIX"))
    if missing:
        packages = ", ".join(f"tesseract-ocr-{lang}" for lang in missing)
        raise commands.CommandMissing(f"Tesseract language model {', '.join(missing)} is not installed "
                                      f"(Debian packages: {packages})")


def ocr_pages(path: str, job: Job, *, max_pages: int) -> tuple[list[str], bool]:
    """The text of each page of the image at ``path``, at most ``max_pages`` pages (Tesseract is
    stopped after that many), and whether it was stopped. Raises ``ExtractionCut`` at the time limit
    (the pages already read are lost with it only for this image)."""
    check_models(job.limits.ocr_languages)
    argv = ["tesseract", path, "stdout", "-l", job.limits.ocr_languages, "--psm", PSM]
    pages: list[str] = []
    pending = ""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    chunks = commands.stream(argv, job, env=tesseract_environ())
    try:
        for chunk in chunks:
            pending += decoder.decode(chunk)
            *done, pending = pending.split(PAGE_SEPARATOR)
            pages += done
            if len(pages) >= max_pages:
                break
    finally:
        chunks.close()
    stopped = len(pages) >= max_pages
    if not stopped:
        pending += decoder.decode(b"", final=True)
        if pending.strip() or not pages:
            pages.append(pending)
    return [normalise(page).strip() for page in pages[:max_pages]], stopped


def extract_image(job: Job) -> None:
    """The extractor of kinds png, jpeg and tiff (see the module docstring)."""
    try:
        sizes = image_pages(job.path, job.kind)
    except ImageHeaderError as exc:
        raise ValueError(f"unreadable {job.kind.upper()} header: {exc}") from None
    job.pages = len(sizes)
    for width, height in sizes:
        if width * height > MAX_IMAGE_PIXELS:
            raise ExtractionCut(f"image of {width} x {height} pixels ({megapixels(width, height):,.0f} "
                                f"megapixels) is over the limit of {MAX_IMAGE_PIXELS / 1e6:g} megapixels; "
                                "not OCRed")
        if width == 0 or height == 0:
            raise ValueError(f"unreadable {job.kind.upper()} header: an image of {width} x {height} pixels")
    if all(width * height < MIN_OCR_PIXELS for width, height in sizes):
        return  # an icon: nothing to read, nothing wrong
    budget = max(0, job.limits.ocr_max_pages - job.ocr_pages)
    over = len(sizes) - budget
    if budget:
        job.method = OCR
        texts, _stopped = ocr_pages(job.path, job, max_pages=min(budget, len(sizes)))
        job.ocr_pages += len(texts)
        for number, text in enumerate(texts):
            job.sink.write(("\n\n" if number and text else "") + text)
    if over > 0:
        job.notes.append(f"{over} page{'s' if over != 1 else ''} over the OCR page limit")
        job.sink.truncated = True
