"""A realistic KMRL sample set, generated at run time: what the demo and the end-to-end test seed.

``kmrl_samples(seed, round_no)`` returns a ``SampleSet``: mails with attachments for the IMAP
mailbox, Maximo work orders with doclinks, SharePoint files in sites and libraries, and WhatsApp
media with captions. The documents are work orders, invoices, incident reports, circulars, board
minutes and rosters in English, Malayalam and both, as real PDF, DOCX, XLSX and PNG files
(sandbox/sample_formats.py). Round 1 is the initial load; round 2 holds only new items (for the
second round of the end-to-end test) and names the SharePoint file that round deletes.

Every file carries the text a connector hands to enrichment (the mail's subject and body, the work
order's description, the WhatsApp caption, the SharePoint file and library names) and most carry
text of their own that the extraction step reads, so each ``SampleFile`` states the language and
department the pipeline is expected to find. The content-only documents (sandbox/samples_content.py)
have neutral names: only their text, read by a text layer or OCR, can say what they are.

Deterministic: the same ``(seed, round_no)`` gives the same bytes; numbers, dates and amounts come
from ``random.Random`` seeded with both, so different seeds give different documents. Within one
set every file's bytes are distinct, except the one deliberate duplicate (the board minutes
forwarded a second time) that shows content dedup.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from sandbox.sample_formats import (
    MIME_DOCX,
    MIME_PDF,
    MIME_PNG,
    MIME_XLSX,
    Cell,
    docx_document,
    pdf_document,
    png_image,
    xlsx_document,
)
from sandbox.samples_content import LIBRARY, SITE, content_documents

#: The mailbox the demo's mails are delivered to: a records desk that no department hint claims,
#: so the department comes from what each mail says.
DEMO_MAILBOX = "records@kmrl.co.in"
#: India Standard Time, the zone of every date in the set.
IST = timezone(timedelta(hours=5, minutes=30), "IST")
#: Maximo sites the work orders belong to.
MAXIMO_SITES = ("MUTTOM", "ALUVA")

EN, ML, MIXED = "en", "ml", "mixed"


@dataclass(frozen=True)
class SampleFile:
    """One document: its bytes and what the pipeline should make of it.

    key: unique within the set (``email-1-invoice``). kind: work order, invoice, incident report,
    circular, board minutes, roster, leave application, photo. language / department: what
    enrichment is expected to find from what the file says when its text can be read (a Malayalam
    workbook in a library with an English name is Malayalam; a PDF drawn in Helvetica, whose page can
    show English only and whose Malayalam is in its document properties, is English), else from the
    text its source gives (see the module docstring).
    """

    key: str
    filename: str
    mime_type: str
    data: bytes
    kind: str
    language: str
    department: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class MailSample:
    """A mail for the mailbox: ``to_bytes()`` is the RFC 5322 message with its attachments."""

    key: str
    sender: str
    subject: str
    body: str
    date: datetime
    attachments: tuple[SampleFile, ...]

    def to_bytes(self, mailbox: str = DEMO_MAILBOX) -> bytes:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = mailbox
        message["Subject"] = self.subject
        message["Date"] = format_datetime(self.date)
        # Deterministic, and unique per mail and date (a real Message-ID never repeats either).
        message["Message-ID"] = f"<{self.key}.{int(self.date.timestamp())}@kmrl.co.in>"
        message.set_content(self.body)
        for attachment in self.attachments:
            maintype, _, subtype = attachment.mime_type.partition("/")
            message.add_attachment(attachment.data, maintype=maintype, subtype=subtype,
                                   filename=attachment.filename)
        if message.is_multipart():
            # email picks a random boundary; a fixed one keeps the message byte-for-byte deterministic.
            message.set_boundary(f"kmrl-{self.key}-{int(self.date.timestamp())}")
        return message.as_bytes(policy=SMTP)


@dataclass(frozen=True)
class WorkOrderSample:
    """A Maximo work order; each doclink is ``(file, doclink description)``."""

    wonum: str
    siteid: str
    worktype: str
    description: str
    long_description: str
    location: str
    doclinks: tuple[tuple[SampleFile, str], ...]


@dataclass(frozen=True)
class SharePointSample:
    """A file at ``path`` in ``library`` of the site at ``site`` (``sites/operations``)."""

    site: str
    library: str
    path: str
    file: SampleFile


@dataclass(frozen=True)
class WhatsAppSample:
    """A media message: ``kind`` document or image, from ``sender`` (digits), with ``caption``."""

    kind: str
    sender: str
    profile_name: str
    caption: str
    file: SampleFile


@dataclass
class SampleSet:
    """One round of the sample set, per source, plus what the round deletes."""

    seed: int
    round_no: int
    mails: list[MailSample] = field(default_factory=list)
    work_orders: list[WorkOrderSample] = field(default_factory=list)
    sharepoint: list[SharePointSample] = field(default_factory=list)
    whatsapp: list[WhatsAppSample] = field(default_factory=list)
    #: SharePoint files (site, library, path) this round deletes.
    sharepoint_deletions: list[tuple[str, str, str]] = field(default_factory=list)

    def files(self, source: str | None = None) -> Iterator[tuple[str, SampleFile]]:
        """``(source, file)`` for every document of the round (of one ``source`` when given)."""
        if source in (None, "email"):
            for mail in self.mails:
                for attachment in mail.attachments:
                    yield "email", attachment
        if source in (None, "maximo"):
            for wo in self.work_orders:
                for doc, _ in wo.doclinks:
                    yield "maximo", doc
        if source in (None, "sharepoint"):
            for entry in self.sharepoint:
                yield "sharepoint", entry.file
        if source in (None, "whatsapp"):
            for message in self.whatsapp:
                yield "whatsapp", message.file

    def count(self, source: str) -> int:
        """How many documents the round gives ``source``."""
        return sum(1 for _ in self.files(source))

    def distinct_sha256(self, sources: tuple[str, ...] | None = None) -> set[str]:
        """The distinct contents of the round (of ``sources`` when given)."""
        return {f.sha256 for s, f in self.files() if sources is None or s in sources}


def _row(*cells: Cell) -> list[Cell]:
    return list(cells)


# -- document builders ------------------------------------------------------------------------------------

class _Writer:
    """Builds the files of one set; ``rng`` supplies the numbers, so the seed changes every file."""

    def __init__(self, seed: int, round_no: int) -> None:
        self.rng = random.Random(f"kmrl-samples:{seed}:{round_no}")
        self.round_no = round_no
        self.day = datetime(2024, 4, 8 + 7 * (round_no - 1), 10, 0, tzinfo=IST)

    def date(self, n: int) -> datetime:
        return self.day + timedelta(hours=n * 3, minutes=self.rng.randrange(60))

    def number(self, low: int, high: int) -> int:
        return self.rng.randrange(low, high)

    def rupees(self, low: int, high: int) -> str:
        return f"{self.rng.randrange(low, high):,}.00"

    def reference(self, key: str) -> str:
        """The file's KMRL reference line: unique per key, and different for every seed."""
        return f"Reference: KMRL/{key}/{self.number(10_000, 100_000)}"

    def pdf(self, key: str, filename: str, kind: str, language: str, department: str, *, title: str,
            lines: list[str], subject: str, keywords: str, author: str = "Kochi Metro Rail Limited",
            lang: str = "") -> SampleFile:
        # The PDF's /Lang: the language of its document properties, which may differ from its page's.
        lang = lang or {EN: "en-IN", ML: "ml-IN", MIXED: "ml-IN"}[language]
        data = pdf_document(title=title, lines=[*lines, self.reference(key)], subject=subject, keywords=keywords,
                            author=author, lang=lang)
        return SampleFile(key, filename, MIME_PDF, data, kind, language, department)

    def docx(self, key: str, filename: str, kind: str, language: str, department: str, *, title: str,
             paragraphs: list[str], subject: str, author: str = "Kochi Metro Rail Limited") -> SampleFile:
        data = docx_document(title=title, paragraphs=[*paragraphs, self.reference(key)], subject=subject,
                             keywords=kind, author=author, description=subject)
        return SampleFile(key, filename, MIME_DOCX, data, kind, language, department)

    def xlsx(self, key: str, filename: str, kind: str, language: str, department: str, *, sheet: str,
             rows: Sequence[Sequence[Cell]], subject: str) -> SampleFile:
        data = xlsx_document(sheet=sheet, rows=[*rows, [self.reference(key)]], title=sheet, subject=subject,
                             keywords=kind, author="Kochi Metro Rail Limited", description=subject)
        return SampleFile(key, filename, MIME_XLSX, data, kind, language, department)

    def png(self, key: str, filename: str, kind: str, language: str, department: str, *, title: str,
            description: str) -> SampleFile:
        colour = (self.number(40, 220), self.number(40, 220), self.number(40, 220))
        stripe = (255 - colour[0], 255 - colour[1], 255 - colour[2])
        data = png_image(width=96 + self.number(0, 64), height=64 + self.number(0, 32), colour=colour, stripe=stripe,
                         title=title, description=f"{description}. {self.reference(key)}",
                         stripe_every=4 + self.number(0, 8))
        return SampleFile(key, filename, MIME_PNG, data, kind, language, department)


# -- round 1 ------------------------------------------------------------------------------------------------

def _round_one_mails(w: _Writer) -> list[MailSample]:
    inv = w.number(900, 999)
    amount = w.rupees(180_000, 950_000)
    invoice = w.pdf(
        "email-1-invoice", f"INV-2024-{inv:04d} traction spares.pdf", "invoice", EN, "Finance",
        title=f"Tax invoice INV-2024-{inv:04d}",
        lines=[f"Supplier: Keltron Traction Components, Kochi. Amount payable: Rs {amount} including GST.",
               f"Against purchase order PO-{w.number(5000, 5999)} for traction motor bearings and brake pads.",
               "Payment due within 30 days by NEFT to the account on record."],
        subject="Tax invoice for rolling stock spares", keywords="invoice, GST, payment, purchase order")
    statement = w.xlsx(
        "email-1-statement", f"Statement of bills April 2024 ({inv}).xlsx", "invoice", EN, "Finance",
        sheet="Bills April 2024",
        rows=[["Invoice", "Date", "Amount (Rs)", "GST (Rs)", "Status"],
              *[_row(f"INV-2024-{inv - i:04d}", f"2024-04-0{i + 1}", w.number(50_000, 400_000),
                     w.number(5_000, 40_000), "Payment pending") for i in range(4)]],
        subject="Statement of bills for payment")
    circular = w.docx(
        "email-2-circular", f"സുരക്ഷാ സർക്കുലർ {w.number(10, 99)}.docx", "circular", ML, "Safety",
        title="സുരക്ഷാ സർക്കുലർ: അഗ്നിശമന മോക്ക് ഡ്രിൽ",
        paragraphs=["എല്ലാ സ്റ്റേഷനുകളിലും വെള്ളിയാഴ്ച അഗ്നിശമന മോക്ക് ഡ്രിൽ നടത്തും.",
                    "സ്റ്റേഷൻ കൺട്രോളർമാർ യാത്രക്കാരെ ഒഴിപ്പിക്കാനുള്ള സമയം രേഖപ്പെടുത്തണം.",
                    f"പ്രഥമശുശ്രൂഷ കിറ്റുകളും ഫയർ എക്സ്റ്റിംഗ്വിഷറുകളും പരിശോധിക്കണം. നമ്പർ {w.number(100, 999)}."],
        subject="സുരക്ഷാ സർക്കുലർ")
    meeting = w.number(55, 70)
    minutes = w.pdf(
        "email-3-minutes", f"Draft minutes {meeting}th board meeting.pdf", "board minutes", EN, "Executive",
        title=f"Draft minutes of the {meeting}th meeting of the Board of Directors",
        lines=["Present: the Chairman, the Managing Director and the Directors.",
               "Item 1: the board approved the phase 2 Kakkanad extension agenda.",
               f"Item 2: the Company Secretary placed the compliance report; next meeting on {w.number(2, 28)} May."],
        subject="Board of Directors meeting minutes", keywords="board meeting, minutes, agenda")
    leave = w.docx(
        "email-4-leave", "Leave application - അവധി അപേക്ഷ.docx", "leave application", MIXED, "HR",
        title="Casual leave application / അവധി അപേക്ഷ",
        paragraphs=[f"Employee number KMRL-{w.number(1000, 9999)}, station controller, Aluva.",
                    "ഞാൻ മൂന്ന് ദിവസത്തെ കാഷ്വൽ അവധിക്ക് അപേക്ഷിക്കുന്നു.",
                    "Casual leave from 15 to 17 April; duty swapped with a colleague as per the roster."],
        subject="Leave application")
    return [
        MailSample("email-1", "Keltron Accounts <billing@keltron.in>",
                   f"Tax invoice INV-2024-{inv:04d} for traction spares: payment due",
                   f"Dear Sir,\n\nPlease find attached our tax invoice INV-2024-{inv:04d} for Rs {amount} (GST "
                   "included) and the statement of bills for April. Kindly arrange payment by NEFT.\n\n"
                   "Regards,\nAccounts, Keltron", w.date(0), (invoice, statement)),
        MailSample("email-2", "KMRL Safety <safety@kmrl.co.in>", "സുരക്ഷാ സർക്കുലർ: അഗ്നിശമന മോക്ക് ഡ്രിൽ",
                   "എല്ലാ സ്റ്റേഷൻ കൺട്രോളർമാരും ശ്രദ്ധിക്കുക: വെള്ളിയാഴ്ച അഗ്നിശമന മോക്ക് ഡ്രിൽ നടത്തുന്നു. "
                   "സുരക്ഷാ സർക്കുലർ ഇതോടൊപ്പം ചേർക്കുന്നു.", w.date(1), (circular,)),
        MailSample("email-3", "Company Secretary <cs@kmrl.co.in>",
                   f"Draft minutes of the {meeting}th board meeting",
                   "The draft minutes of the Board of Directors meeting are attached for the Managing "
                   "Director's review before circulation.", w.date(2), (minutes,)),
        MailSample("email-4", "MD Office <md.office@kmrl.co.in>",
                   f"Fwd: Draft minutes of the {meeting}th board meeting",
                   "Forwarding the draft minutes of the board meeting for the record.", w.date(3), (minutes,)),
        MailSample("email-5", "Anjali Menon <anjali.menon@kmrl.co.in>",
                   "Leave application / അവധി അപേക്ഷ - station controller",
                   "Sir, I request casual leave for three days. ഞാൻ മൂന്ന് ദിവസത്തെ അവധിക്ക് അപേക്ഷിക്കുന്നു. "
                   "My application is attached.", w.date(4), (leave,)),
    ]


def _round_one_work_orders(w: _Writer) -> list[WorkOrderSample]:
    base = 4400 + w.number(0, 400)
    ts = w.number(1, 25)
    checklist = w.pdf(
        "maximo-1-checklist", f"WO{base} bogie inspection checklist.pdf", "work order", EN, "Engineering",
        title=f"Work order {base}: preventive maintenance checklist, trainset TS-{ts:02d}",
        lines=["Bogie inspection: wheel flange wear, primary suspension, brake pads.",
               f"Measured flange thickness {w.number(26, 32)} mm; brake pad wear within limits."],
        subject="Preventive maintenance checklist", keywords="work order, bogie, brake")
    readings = w.xlsx(
        "maximo-1-readings", f"WO{base} brake readings.xlsx", "work order", EN, "Engineering", sheet="Brake readings",
        rows=[["Axle", "Pad (mm)", "Disc (mm)"],
              *[_row(f"A{i}", w.number(8, 20), w.number(40, 45)) for i in range(1, 5)]],
        subject="Brake readings")
    report = w.docx(
        "maximo-2-report", f"WO{base + 1} traction motor report.docx", "work order", EN, "Engineering",
        title=f"Corrective maintenance report, work order {base + 1}",
        paragraphs=[f"Traction motor overheating observed on TS-{ts + 4:02d} between Aluva and Edappally.",
                    "Motor bearing replaced at Muttom depot; tested OK."], subject="Corrective maintenance")
    photo = w.png("maximo-2-photo", f"WO{base + 1} bearing photo.png", "photo", EN, "Engineering",
                  title="Traction motor bearing", description="Worn traction motor bearing removed at Muttom depot")
    inspection = w.pdf(
        "maximo-3-inspection", f"WO{base + 2} fire equipment inspection.pdf", "incident report", EN, "Safety",
        title=f"Fire equipment inspection, Aluva station (work order {base + 2})",
        lines=["Malayalam report: the full text is in the document properties.",
               f"Extinguishers checked: {w.number(20, 40)}; hydrant pressure recorded."],
        subject="ആലുവ സ്റ്റേഷനിലെ അഗ്നിശമന ഉപകരണങ്ങളുടെ സുരക്ഷാ പരിശോധന",
        keywords="സുരക്ഷ, അഗ്നിശമന, പരിശോധന", lang="ml-IN")
    escalator = w.pdf(
        "maximo-4-escalator", f"WO{base + 3} escalator ES-04 repair.pdf", "work order", EN, "Engineering",
        title=f"Emergency repair of escalator ES-04, Edappally (work order {base + 3})",
        lines=["Step chain fault; escalator stopped at 07:42 and restarted after repair."],
        subject="എസ്കലേറ്റർ തകരാർ - അറ്റകുറ്റപ്പണി", keywords="escalator, repair", lang="ml-IN")
    return [
        WorkOrderSample(str(base), "MUTTOM", "PM", f"Preventive maintenance of bogie and brakes, trainset TS-{ts:02d}",
                        "Quarterly preventive maintenance: bogie inspection and brake pad readings.", "MUTTOM-DEPOT",
                        ((checklist, "Bogie inspection checklist"), (readings, "Brake pad readings"))),
        WorkOrderSample(str(base + 1), "MUTTOM", "CM",
                        f"Corrective maintenance: traction motor bearing, TS-{ts + 4:02d}",
                        "Traction motor overheating; bearing replaced and motor tested.", "MUTTOM-DEPOT",
                        ((report, "Corrective maintenance report"), (photo, "Photo of the worn bearing"))),
        WorkOrderSample(str(base + 2), "ALUVA", "SAF", "ആലുവ സ്റ്റേഷനിലെ അഗ്നിശമന ഉപകരണങ്ങളുടെ സുരക്ഷാ പരിശോധന",
                        "എല്ലാ ഫയർ എക്സ്റ്റിംഗ്വിഷറുകളും ഹൈഡ്രന്റുകളും പരിശോധിച്ചു.", "ALVA-FIRE",
                        ((inspection, "അഗ്നിശമന പരിശോധന റിപ്പോർട്ട്"),)),
        WorkOrderSample(str(base + 3), "ALUVA", "EM", "Escalator ES-04 breakdown at Edappally - എസ്കലേറ്റർ തകരാർ",
                        "Emergency repair of the step chain. എസ്കലേറ്റർ അറ്റകുറ്റപ്പണി പൂർത്തിയായി.", "EDAP-ES04",
                        ((escalator, "Escalator repair report"),)),
    ]


def _round_one_sharepoint(w: _Writer) -> list[SharePointSample]:
    month = w.number(1, 12)
    roster = w.xlsx(
        "sharepoint-1-roster", "Duty roster April 2024 - station controllers.xlsx", "roster", EN, "Operations",
        sheet="Duty roster",
        rows=[["Station", "Shift", "Controller"],
              *[[s, shift, f"SC-{w.number(100, 999)}"] for s in ("Aluva", "Edappally", "Kaloor")
                for shift in ("Morning", "Evening")]],
        subject="Duty roster of station controllers")
    roster_ml = w.xlsx(
        "sharepoint-2-roster", "ഡ്യൂട്ടി റോസ്റ്റർ മെയ് 2024 - ആലുവ സ്റ്റേഷൻ.xlsx", "roster", ML, "Operations",
        sheet="റോസ്റ്റർ",
        rows=[["സ്റ്റേഷൻ", "ഷിഫ്റ്റ്", "കൺട്രോളർ"],
              *[["ആലുവ", shift, f"SC-{w.number(100, 999)}"] for shift in ("രാവിലെ", "വൈകുന്നേരം")]],
        subject="ഡ്യൂട്ടി റോസ്റ്റർ")
    incident = w.pdf(
        "sharepoint-3-incident", f"Incident report IR-2024-{w.number(10, 99):03d} passenger injury at Kaloor.pdf",
        "incident report", EN, "Safety",
        title="Incident report: passenger injury at Kaloor station",
        lines=["A passenger slipped near platform 1; first aid given by station staff.",
               "Root cause: wet floor after cleaning; safety signage added."],
        subject="Incident report", keywords="incident, injury, first aid, safety")
    incident_ml = w.docx(
        "sharepoint-4-incident", "സംഭവ റിപ്പോർട്ട് - എസ്കലേറ്റർ അപകടം ഇടപ്പള്ളി.docx", "incident report", ML, "Safety",
        title="സംഭവ റിപ്പോർട്ട്: ഇടപ്പള്ളി സ്റ്റേഷനിലെ എസ്കലേറ്റർ അപകടം",
        paragraphs=["ഒരു യാത്രക്കാരന് എസ്കലേറ്ററിൽ ചെറിയ പരിക്ക് പറ്റി.",
                    f"പ്രഥമശുശ്രൂഷ നൽകി. സമയം {w.number(7, 21)}:{w.number(10, 59)}."],
        subject="സംഭവ റിപ്പോർട്ട്")
    energy = w.pdf(
        "sharepoint-5-invoice", f"Invoice KSEB energy bill {month:02d}-2024.pdf", "invoice", EN, "Finance",
        title="KSEB energy bill for traction and station supply",
        lines=[f"Bill amount Rs {w.rupees(2_000_000, 9_000_000)}; payment due within 15 days.",
               "Tax invoice: GST not applicable on electricity."],
        subject="Energy bill", keywords="invoice, bill, payment")
    budget = w.xlsx(
        "sharepoint-6-budget", "Budget FY25 capex - ബജറ്റ് സംഗ്രഹം.xlsx", "invoice", MIXED, "Finance",
        sheet="Capex FY25",
        rows=[["Head / ശീർഷകം", "Budget (Rs crore)"], ["Phase 2 civil works", w.number(300, 900)],
              ["Rolling stock", w.number(100, 400)], ["ബജറ്റ് ആകെ", w.number(800, 1500)]],
        subject="Capital expenditure budget / ബജറ്റ്")
    board = w.docx(
        "sharepoint-7-agenda", f"Board meeting {w.number(55, 70)} agenda.docx", "board minutes", EN, "Executive",
        title="Agenda for the meeting of the Board of Directors",
        paragraphs=["1. Confirmation of the minutes of the previous board meeting.",
                    "2. Managing Director's report on operations and ridership.",
                    "3. Any other item with the permission of the Chairman."],
        subject="Board meeting agenda")
    board_ml = w.pdf(
        "sharepoint-8-minutes", "ഡയറക്ടർ ബോർഡ് യോഗം - മിനിറ്റ്സ്.pdf", "board minutes", EN, "Executive",
        title=f"Board of Directors: minutes in Malayalam ({w.number(1, 99)})",
        lines=["Malayalam minutes: the full text is in the document properties."],
        subject="ഡയറക്ടർ ബോർഡ് യോഗത്തിന്റെ മിനിറ്റ്സ്", keywords="ഡയറക്ടർ ബോർഡ്, മിനിറ്റ്സ്", lang="ml-IN")
    content = [SharePointSample(SITE, LIBRARY, f"2024/{filename}", SampleFile(key, filename, mime, data, kind, language,
                                                                           department))
               for key, filename, mime, kind, language, department, data in content_documents(w.reference)]
    return [
        SharePointSample("sites/operations", "Rosters", "April/Duty roster April 2024 - station controllers.xlsx",
                         roster),
        SharePointSample("sites/operations", "Rosters", "May/ഡ്യൂട്ടി റോസ്റ്റർ മെയ് 2024 - ആലുവ സ്റ്റേഷൻ.xlsx",
                         roster_ml),
        SharePointSample("sites/safety", "Incident Reports", f"Kaloor/{incident.filename}", incident),
        SharePointSample("sites/safety", "Incident Reports", f"Edappally/{incident_ml.filename}", incident_ml),
        SharePointSample("sites/finance", "Invoices", f"Energy/{energy.filename}", energy),
        SharePointSample("sites/finance", "Invoices", f"Budget/{budget.filename}", budget),
        SharePointSample("sites/boardsecretariat", "Board Papers", f"2024/{board.filename}", board),
        SharePointSample("sites/boardsecretariat", "Board Papers", f"2024/{board_ml.filename}", board_ml),
        *content,
    ]


#: WhatsApp numbers of KMRL desks (config/departments.toml [hints.phone] knows them) and a field engineer.
MAINTENANCE_CONTROL = "919447100201"
SAFETY_OFFICER = "919447300410"
HR_HELPDESK = "919447400120"
OPERATIONS_CONTROL = "914842350000"


def _round_one_whatsapp(w: _Writer) -> list[WhatsAppSample]:
    pantograph = w.png("whatsapp-1-photo", "pantograph.png", "photo", EN, "Engineering",
                       title="Pantograph damage", description=f"Pantograph damage on TS-{w.number(1, 25):02d}")
    leak = w.pdf(
        "whatsapp-2-circular", "സുരക്ഷാ മുന്നറിയിപ്പ്.pdf", "circular", EN, "Safety",
        title="Safety warning: water leak on platform 2, Edappally",
        lines=["Malayalam warning: the full text is in the document properties.",
               f"Warning number {w.number(100, 999)}."],
        subject="സുരക്ഷാ മുന്നറിയിപ്പ്: പ്ലാറ്റ്ഫോം 2 ൽ ചോർച്ച", keywords="സുരക്ഷ, മുന്നറിയിപ്പ്", lang="ml-IN")
    leave = w.docx(
        "whatsapp-3-leave", "Casual leave - അവധി അപേക്ഷ.docx", "leave application", MIXED, "HR",
        title="Casual leave application",
        paragraphs=["Casual leave for two days. രണ്ട് ദിവസത്തെ അവധി.",
                    f"Employee number KMRL-{w.number(1000, 9999)}."], subject="Leave application")
    crowd = w.png("whatsapp-4-photo", "crowd.png", "photo", MIXED, "Operations",
                  title="Peak hour crowd", description="Crowd at Aluva platform 1 during peak hour")
    ridership = w.xlsx(
        "whatsapp-5-roster", "Train service roster 12 April.xlsx", "roster", EN, "Operations",
        sheet="Service roster",
        rows=[["Train", "First departure", "Headway (min)"],
              *[_row(f"T{n:02d}", f"06:{n:02d}", w.number(7, 12)) for n in range(1, 5)]],
        subject="Train service roster")
    return [
        WhatsAppSample("image", MAINTENANCE_CONTROL, "Maintenance Control",
                       "Pantograph damage on the trainset at Muttom depot, photo for the repair work order",
                       pantograph),
        WhatsAppSample("document", SAFETY_OFFICER, "Safety Officer",
                       "സുരക്ഷാ മുന്നറിയിപ്പ്: ഇടപ്പള്ളി പ്ലാറ്റ്ഫോം 2 ൽ ചോർച്ച, യാത്രക്കാർ ശ്രദ്ധിക്കുക", leak),
        WhatsAppSample("document", HR_HELPDESK, "HR Helpdesk",
                       "Casual leave application - അവധി അപേക്ഷ, Anjali Menon, station controller", leave),
        WhatsAppSample("image", OPERATIONS_CONTROL, "Operations Control Centre",
                       "Crowd at Aluva platform 1 during peak hour - യാത്രക്കാരുടെ തിരക്ക്", crowd),
        WhatsAppSample("document", "919846012345", "Station Controller",
                       "Train service roster and schedule for 12 April: first train and headway", ridership),
    ]


# -- round 2: only new items, and one deletion ----------------------------------------------------------------

def _round_two(w: _Writer, seed: int) -> SampleSet:
    sample = SampleSet(seed=seed, round_no=2)
    ref = w.number(1000, 9999)
    advice = w.pdf(
        "email-6-payment", f"Payment advice NEFT {ref}.pdf", "invoice", EN, "Finance",
        title=f"Payment advice: NEFT transfer {ref}",
        lines=[f"Amount Rs {w.rupees(100_000, 900_000)} paid against invoice; TDS deducted."],
        subject="Payment advice", keywords="payment, NEFT, TDS")
    sample.mails.append(MailSample("email-6", "KMRL Accounts <accounts@kmrl.co.in>",
                                   f"Payment advice: NEFT {ref} released",
                                   "The payment against your invoice has been released by NEFT; the payment "
                                   "advice with TDS details is attached.", w.date(0), (advice,)))
    wonum = str(5000 + w.number(0, 400))
    signal = w.pdf(
        "maximo-5-signal", f"WO{wonum} track circuit fault.pdf", "work order", EN, "Engineering",
        title=f"Work order {wonum}: track circuit fault between Kaloor and Town Hall",
        lines=["Signal dropped at 07:42; relay replaced; tested OK."],
        subject="Corrective maintenance", keywords="signal, relay, repair")
    sample.work_orders.append(WorkOrderSample(
        wonum, "MUTTOM", "CM", "Track circuit failure between Kaloor and Town Hall: relay replaced",
        "Corrective maintenance of the track circuit; signalling restored.", "KLR-TC12",
        ((signal, "Track circuit repair report"),)))
    minutes = w.docx(
        "sharepoint-9-minutes", f"Minutes of the board meeting {w.number(71, 80)}.docx", "board minutes", EN,
        "Executive", title="Minutes of the meeting of the Board of Directors",
        paragraphs=["The board approved the annual report and the Managing Director's proposals."],
        subject="Board meeting minutes")
    sample.sharepoint.append(SharePointSample("sites/boardsecretariat", "Board Papers", f"2024/{minutes.filename}",
                                              minutes))
    sample.sharepoint_deletions.append(
        ("sites/operations", "Rosters", "April/Duty roster April 2024 - station controllers.xlsx"))
    brake = w.png("whatsapp-6-photo", "brake.png", "photo", EN, "Engineering",
                  title="Brake pad wear", description=f"Brake pad wear on TS-{w.number(1, 25):02d}")
    sample.whatsapp.append(WhatsAppSample("image", MAINTENANCE_CONTROL, "Maintenance Control",
                                          "Brake pad wear found during inspection, repair needed", brake))
    return sample


def kmrl_samples(seed: int = 2024, round_no: int = 1) -> SampleSet:
    """The KMRL sample set for ``round_no`` (1: initial load; 2: new items and one deletion)."""
    if round_no not in (1, 2):
        raise ValueError("the sample set has rounds 1 and 2")
    writer = _Writer(seed, round_no)
    if round_no == 2:
        return _round_two(writer, seed)
    return SampleSet(seed=seed, round_no=1, mails=_round_one_mails(writer),
                     work_orders=_round_one_work_orders(writer), sharepoint=_round_one_sharepoint(writer),
                     whatsapp=_round_one_whatsapp(writer))
