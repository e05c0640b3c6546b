"""Synthetic personal data and its look-alikes, for the sensitive-content tests and benchmark.

Nothing here is anyone's data: Aadhaar numbers are random digits given a valid Verhoeff check digit,
PANs and mobile numbers random in the valid shapes, bank accounts random digits beside the IFSC of a
made-up branch. ``personal_texts`` writes them into sentences (English, Malayalam, both; Malayalam
digits in some) and says which kinds each sentence holds; ``lookalike_texts`` writes text with no
personal data but many numbers that look like it: timetables, train and tender numbers, invoice, PO
and work-order numbers, dates, times, amounts, random long digit strings. Deterministic per seed.

``message_texts`` and ``repository_texts`` read real text without personal data: the text parts of a
folder of mail messages (../shared/testdata/mime) and this repository's docs, test data and the demo's
sample texts. The sensitive-content tests and ``bench.bench_sensitive`` measure false positives on them.
"""

from __future__ import annotations

import email
import email.policy
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from base.enrichment.sensitive import verhoeff_check_digit, verhoeff_valid

_MALAYALAM_DIGITS = str.maketrans("0123456789", "൦൧൨൩൪൫൬൭൮൯")


@dataclass(frozen=True)
class Sample:
    """A text and the ``find_sensitive`` answer it should get (``{}`` for a look-alike)."""

    text: str
    expected: dict[str, int]
    what: str


def aadhaar(rng: random.Random) -> str:
    """A 12-digit number in the Aadhaar shape with a valid Verhoeff check digit (nobody's)."""
    body = str(rng.randint(2, 9)) + "".join(rng.choice("0123456789") for _ in range(10))
    return body + verhoeff_check_digit(body)


def invalid_aadhaar(rng: random.Random) -> str:
    """An Aadhaar-shaped number whose check digit is wrong."""
    number = aadhaar(rng)
    wrong = [d for d in "0123456789" if not verhoeff_valid(number[:-1] + d)]
    return number[:-1] + rng.choice(wrong)


def pan(rng: random.Random) -> str:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return ("".join(rng.choice(letters) for _ in range(3)) + rng.choice("PCHFATBLJG") + rng.choice(letters)
            + "".join(rng.choice("0123456789") for _ in range(4)) + rng.choice(letters))


def mobile(rng: random.Random) -> str:
    return rng.choice("6789") + "".join(rng.choice("0123456789") for _ in range(9))


def account(rng: random.Random) -> str:
    return str(rng.randint(1, 9)) + "".join(rng.choice("0123456789") for _ in range(rng.randint(8, 17)))


def ifsc(rng: random.Random) -> str:
    return rng.choice(["SBIN", "FDRL", "CNRB", "UTIB", "HDFC", "KSCB"]) + "0" + "".join(
        rng.choice("0123456789") for _ in range(6))


def _grouped_aadhaar(rng: random.Random, number: str) -> str:
    sep = rng.choice([" ", "-", ""])
    return sep.join((number[:4], number[4:8], number[8:]))


def _written_mobile(rng: random.Random, number: str) -> str:
    prefix = rng.choice(["", "+91 ", "+91-", "91", "0", "+91"])
    body = rng.choice([number, f"{number[:5]} {number[5:]}", f"{number[:5]}-{number[5:]}",
                       f"{number[:3]}-{number[3:6]}-{number[6:]}", f"{number[:4]} {number[4:7]} {number[7:]}"])
    return prefix + body


def personal_texts(seed: int = 1, n: int = 400) -> list[Sample]:
    """``n`` sentences each holding one or more synthetic personal numbers, with the kinds expected."""
    rng = random.Random(seed)
    samples: list[Sample] = []
    for i in range(n):
        kind = i % 6
        if kind == 0:
            number = _grouped_aadhaar(rng, aadhaar(rng))
            template = rng.choice([
                "Applicant's Aadhaar No. {x} is linked to the staff record.",
                "ആധാർ നമ്പർ: {x} (അപേക്ഷകന്റെ)",
                "Please verify UID {x} before issuing the smart card.",
                "KYC: ആധാർ {x}, verified by HR",
            ])
            text = template.format(x=number)
            if rng.random() < 0.3:
                text = text.translate(_MALAYALAM_DIGITS)
            samples.append(Sample(text, {"aadhaar": 1}, "aadhaar"))
        elif kind == 1:
            samples.append(Sample(rng.choice([
                "PAN of the contractor: {x}", "Vendor PAN {x}; GST registration attached.",
                "പാൻ നമ്പർ {x}",
            ]).format(x=pan(rng)), {"pan": 1}, "pan"))
        elif kind == 2:
            number = _written_mobile(rng, mobile(rng))
            text = rng.choice([
                "Contact the site engineer on {x} for access.", "Mob: {x}", "ഫോൺ: {x}",
                "For queries call {x} between 10 and 5.", "WhatsApp {x} (station controller)",
            ]).format(x=number)
            if rng.random() < 0.2:
                text = text.translate(_MALAYALAM_DIGITS)
            samples.append(Sample(text, {"mobile": 1}, "mobile"))
        elif kind == 3:
            samples.append(Sample(rng.choice([
                "Salary credit to A/c No. {a}, IFSC {i}.",
                "Beneficiary account number {a} ({i}, Kaloor branch)",
                "അക്കൗണ്ട് നമ്പർ {a}, IFSC {i}",
                "Refund to account {a}",
                "Bank details: {a} / {i}",
            ]).format(a=account(rng), i=ifsc(rng)), {"bank_account": 1}, "bank_account"))
        elif kind == 4:
            text = (f"Name: Staff {i}\nAadhaar: {_grouped_aadhaar(rng, aadhaar(rng))}\nPAN: {pan(rng)}\n"
                    f"Mobile: {_written_mobile(rng, mobile(rng))}\nA/c: {account(rng)} IFSC: {ifsc(rng)}")
            samples.append(Sample(text, {"aadhaar": 1, "pan": 1, "mobile": 1, "bank_account": 1}, "form"))
        else:
            first, second = aadhaar(rng), aadhaar(rng)
            text = (f"ലിസ്റ്റ്: 1) ആധാർ {_grouped_aadhaar(rng, first)}\n2) ആധാർ {_grouped_aadhaar(rng, second)}\n"
                    f"Repeated: {_grouped_aadhaar(rng, first)}")
            samples.append(Sample(text, {"aadhaar": 2}, "two-aadhaar"))
    return samples


def _time(rng: random.Random) -> str:
    return f"{rng.randint(5, 23):02d}:{rng.randint(0, 59):02d}"


def _date(rng: random.Random) -> str:
    y, m, d = rng.randint(2015, 2026), rng.randint(1, 12), rng.randint(1, 28)
    return rng.choice([f"{d:02d}-{m:02d}-{y}", f"{y}-{m:02d}-{d:02d}", f"{d:02d}/{m:02d}/{y}", f"{d:02d}.{m:02d}.{y}",
                       f"{y}{m:02d}{d:02d}", f"{d:02d}{m:02d}{y}"])


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def lookalike_texts(seed: int = 1, n: int = 600) -> list[Sample]:
    """``n`` lines of text with no personal data whose numbers look like personal data's."""
    rng = random.Random(seed)
    makers = [
        lambda: "Timetable: " + " ".join(_time(rng) for _ in range(rng.randint(6, 14))),
        lambda: f"Trains {' '.join(str(rng.randint(10000, 99999)) for _ in range(rng.randint(3, 8)))} via Ernakulam",
        lambda: f"TS-{rng.randint(1, 25):02d} dep Aluva {_time(rng)} arr Pettah {_time(rng)} km {rng.randint(0, 26)}."
                f"{rng.randint(0, 999):03d} headway {rng.randint(4, 12)} min",
        lambda: f"Tender No. {rng.randint(2018, 2026)}_KMRL_{rng.randint(100000, 999999)}_{rng.randint(1, 3)} dated "
                f"{_date(rng)}",
        lambda: f"Tender ID KMRL/ENG/{rng.randint(2018, 2026)}/{_digits(rng, 4)}, EMD Rs. "
                f"{rng.randint(1, 99)},{rng.randint(10, 99)},{rng.randint(100, 999)}.00",
        lambda: f"Invoice No. {rng.choice('6789')}{_digits(rng, 9)} dated {_date(rng)}",
        lambda: f"PO {rng.choice(['45', '46', '47', '81', '91'])}{_digits(rng, 8)} against invoice "
                f"{rng.choice('6789')}{_digits(rng, 9)}",
        lambda: f"Work order WO{_digits(rng, 8)} / Ref {rng.randint(2, 9)}{_digits(rng, 11)}",
        lambda: f"Order number {rng.randint(2, 9)}{_digits(rng, 11)}, GSTIN 32"
                f"{''.join(rng.choice('ABCDEFGH') for _ in range(5))}{_digits(rng, 4)}A1Z{rng.randint(1, 9)}",
        lambda: f"Dates: {_date(rng)}, {_date(rng)} {_time(rng)}:{rng.randint(0, 59):02d}, {_date(rng)}",
        lambda: f"Amount Rs. {rng.randint(100000000, 999999999)}.{rng.randint(0, 99):02d} passed by the Accounts "
                "section",
        lambda: f"Account head {rng.randint(1000, 9999)}: Rs {rng.randint(100000000, 999999999)} sanctioned, "
                f"₹{rng.randint(100000000, 999999999)} spent",
        lambda: f"Serial {_digits(rng, rng.randint(13, 40))} (meter reading)",
        lambda: f"Barcode {rng.randint(2, 9)}{_digits(rng, 15)}",
        lambda: f"Energy meter {_digits(rng, 4)} {_digits(rng, 4)} {_digits(rng, 4)} {_digits(rng, 4)} kWh log",
        lambda: f"Landline 0484 {rng.randint(2, 5)}{_digits(rng, 6)}, fax 0484-{rng.randint(2, 5)}{_digits(rng, 6)}",
        lambda: f"Coordinates {rng.uniform(9.9, 10.1):.10f}, {rng.uniform(76.2, 76.4):.10f}",
        lambda: f"Version {rng.randint(1, 9)}.{rng.randint(0, 99)}.{_digits(rng, 10)}",
        lambda: f"ഓർഡർ നമ്പർ {rng.randint(2, 9)}{_digits(rng, 11)}, തീയതി {_date(rng)}",
        lambda: f"Complaint ticket {rng.choice('6789')}{_digits(rng, 9)} closed",
        lambda: f"PNR {rng.choice('6789')}{_digits(rng, 9)} / file KMRL-{_digits(rng, 10)}",
    ]
    return [Sample(makers[i % len(makers)](), {}, "lookalike") for i in range(n)]


def random_twelve_digit_numbers(seed: int = 1, n: int = 10000) -> list[str]:
    """``n`` uniformly random 12-digit numbers (leading zeros allowed): what Verhoeff alone would pass."""
    rng = random.Random(seed)
    return [_digits(rng, 12) for _ in range(n)]


# -- text without personal data, from real files ----------------------------------------------------

def message_texts(folder: Path) -> Iterator[tuple[str, str]]:
    """(file name, every text part of the message joined) for each message in ``folder``."""
    for path in sorted(folder.iterdir()):
        if path.name == "MANIFEST.tsv" or not path.is_file():
            continue
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)
        texts = []
        for part in message.walk():
            if part.get_content_maintype() != "text":
                continue
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                continue
            charset = part.get_content_charset() or "utf-8"
            try:
                texts.append(payload.decode(charset, errors="replace"))
            except LookupError:
                texts.append(payload.decode("latin-1"))
        yield path.name, "\n".join(texts)


def repository_texts(root: Path) -> Iterator[tuple[str, str]]:
    """(name, text) of the repository's docs and test data, and the demo's sample texts."""
    from sandbox.samples import kmrl_samples

    for pattern in ("*.md", "env.example", "config/*.toml", "tests/data/*.md"):
        for path in sorted(root.glob(pattern)):
            yield str(path.relative_to(root)), path.read_text(encoding="utf-8")
    for path in sorted(root.glob("tests/data/*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            yield f"{path.name}:{row['id']}", row["text"]
    for seed in (1, 2, 3):
        for round_no in (1, 2):
            samples = kmrl_samples(seed, round_no)
            for mail in samples.mails:
                yield f"samples:{seed}:{round_no}:{mail.key}", f"{mail.subject}\n{mail.body}"
            for wo in samples.work_orders:
                yield f"samples:{seed}:{round_no}:{wo.wonum}", f"{wo.description}\n{wo.long_description}"
            for message in samples.whatsapp:
                yield f"samples:{seed}:{round_no}:{message.file.key}", message.caption
