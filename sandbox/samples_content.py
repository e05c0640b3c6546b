"""Documents whose content alone says whose they are: neutral file names in a records library that
no department hint claims, so language and department can only come from reading the files.

Part of round 1 of the sample set (sandbox/samples.py) when this machine can draw real text
(sandbox/rendering.py: pango-view and pdftoppm): a scanned Malayalam safety circular (an image-only
PDF, read by OCR), an English finance statement (a PDF with a text layer), a Malayalam office order
(DOCX), an engineering maintenance register (XLSX), a code-mixed service notice photographed as a
PNG (OCR), and an English board resolution (PDF).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from sandbox import rendering

#: Site and library of the content-only documents (no department hint names either).
SITE = "sites/records"
LIBRARY = "Incoming"

EN, ML, MIXED = "en", "ml", "mixed"

# (key, file name, format, language, department, kind, text)
_DOCUMENTS: tuple[tuple[str, str, str, str, str, str, str], ...] = (
    ("content-1-circular", "scan-0417.pdf", "scanned-pdf", ML, "Safety", "circular",
     "കൊച്ചി മെട്രോ റെയിൽ ലിമിറ്റഡ്\n"
     "സുരക്ഷാ സർക്കുലർ\n"
     "എല്ലാ സ്റ്റേഷനുകളിലും അടുത്ത തിങ്കളാഴ്ച അഗ്നിശമന മോക്ക് ഡ്രിൽ നടത്തും.\n"
     "ജീവനക്കാർ അടിയന്തര ഒഴിപ്പിക്കൽ നടപടിക്രമങ്ങൾ കർശനമായി പാലിക്കണം.\n"
     "അഗ്നിശമന ഉപകരണങ്ങളുടെ പരിശോധന പൂർത്തിയാക്കി സുരക്ഷാ ഓഫീസർക്ക് റിപ്പോർട്ട് നൽകണം.\n"
     "അപകടം ഒഴിവാക്കാൻ എല്ലാവരും സുരക്ഷാ നിർദ്ദേശങ്ങൾ പാലിക്കുക."),
    ("content-2-statement", "document-0418.pdf", "pdf", EN, "Finance", "statement",
     "Statement of accounts for the quarter ended 30 June 2024\n"
     "Payments released to contractors against running bills were reconciled with the bank statement.\n"
     "GST input tax credit was matched with the returns filed, and TDS deducted at source was remitted.\n"
     "The internal audit found two invoices paid twice; the excess payment will be recovered from the\n"
     "next bill. The budget utilisation for capital expenditure stands at 62 per cent."),
    ("content-3-order", "document-0419.docx", "docx", ML, "HR", "office order",
     "ഓഫീസ് ഉത്തരവ്\n"
     "താഴെപ്പറയുന്ന ജീവനക്കാരെ അവരുടെ പേരിന് നേരെ കാണിച്ചിരിക്കുന്ന തസ്തികകളിലേക്ക് സ്ഥലംമാറ്റി നിയമിക്കുന്നു.\n"
     "സ്ഥലംമാറ്റം ലഭിച്ചവർ ഏഴ് ദിവസത്തിനകം പുതിയ തസ്തികയിൽ ജോലിയിൽ പ്രവേശിക്കണം.\n"
     "ഇതുവരെ എടുത്ത അവധി സംബന്ധിച്ച വിവരങ്ങൾ ഭരണ വിഭാഗത്തിൽ സമർപ്പിക്കണം.\n"
     "ശമ്പളം പുതിയ ഓഫീസിൽ നിന്ന് ലഭിക്കുന്നതാണ്."),
    ("content-4-register", "register-0420.xlsx", "xlsx", EN, "Engineering", "maintenance register",
     "Rolling stock maintenance register\n"
     "TS-07 bogie inspection: wheel profile measured, flange wear within limits\n"
     "TS-11 pantograph carbon strip replaced after inspection at the depot\n"
     "Track geometry recording between Kaloor and Town Hall: two rail joints to be re-welded\n"
     "Signalling relay room: point machine lubrication and insulation test completed"),
    ("content-5-notice", "IMG-0421.png", "png", MIXED, "Operations", "service notice",
     "ട്രെയിൻ സർവീസ് അറിയിപ്പ്\n"
     "Monday മുതൽ first train രാവിലെ 05:30 ന് Aluva സ്റ്റേഷനിൽ നിന്ന് പുറപ്പെടും.\n"
     "Peak hours-ൽ ഓരോ ഏഴ് മിനിറ്റിലും ട്രെയിൻ ഉണ്ടായിരിക്കും.\n"
     "യാത്രക്കാർ timetable ശ്രദ്ധിക്കുക; ticket counters രാവിലെ 05:00 ന് തുറക്കും."),
    ("content-6-resolution", "document-0422.pdf", "pdf", EN, "Executive", "board resolution",
     "Extract of the resolution passed at the meeting of the Board of Directors\n"
     "The Board approved the annual report and the audited financial statements for adoption at the\n"
     "annual general meeting, and authorised the Managing Director to sign the memorandum of\n"
     "understanding with the state government on the Phase II corporate plan."),
)


@lru_cache(maxsize=64)
def _render(fmt: str, text: str) -> tuple[str, bytes]:
    return rendering.document(fmt, text)


def content_documents(reference: Callable[[str], str]) -> list[tuple[str, str, str, str, str, str, bytes]]:
    """``(key, filename, mime_type, kind, language, department, data)`` for each content-only document,
    its text ending with ``reference(key)`` (so every seed gives other bytes); empty when this machine
    cannot draw text."""
    if not rendering.available():
        return []
    documents = []
    for key, filename, fmt, language, department, kind, text in _DOCUMENTS:
        mime_type, data = _render(fmt, f"{text}\n{reference(key)}")
        documents.append((key, filename, mime_type, kind, language, department, data))
    return documents
