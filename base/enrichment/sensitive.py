"""Personal data in a document's text: which kinds, and how many distinct values of each.

``find_sensitive(text)`` returns ``{kind: count}`` for the kinds found (``aadhaar``, ``pan``,
``mobile``, ``bank_account``) and never a value: nothing here logs, stores or returns the numbers
themselves. ``flag_sensitive`` is the enrichment step that sets ``Document.sensitive`` from what was
read out of the content, the connector's text and the title (India's DPDP Act: the Hub and the
content rules must know which documents carry personal data).

What counts as each kind (digits may be ASCII or Malayalam ൦-൯; no-break and thin spaces count as
spaces; a number glued to a Latin letter, a ``/`` or an ``_`` is part of a code, never a match):

- **aadhaar**: 12 digits, the first 2-9, written ``2345 6789 0124``, ``2345-6789-0124`` or
  ``234567890124``, whose last digit is the Verhoeff check digit of the first eleven (about 1 in 10
  random 12-digit numbers pass it, so the shape is required too). A grouped number that continues
  with another group of four (a 16-digit card number) is not one; a bare 12-digit number labelled
  as something else just before it (invoice, order, tender, reference, ... see ``_OTHER_LABEL``), or
  as a phone with no Aadhaar label nearer, is not one either.
- **pan**: ``AAAAA9999A`` in capitals whose fourth letter is a holder type (P person, C company,
  H HUF, F firm, A AOP, T trust, B BOI, L local authority, J juridical person, G government);
  IBM Maximo message ids (``BMXAA7901E``), which have the same shape, are not.
- **mobile**: 10 digits starting 6-9, optionally after ``+91``, ``91`` (each optionally followed by a
  space or dash) or ``0``, written whole or grouped 5-5, 3-3-4 or 4-3-3 with one kind of separator
  (space or dash). Not inside a longer run of digits, including one joined by single spaces or
  dashes (a list of train numbers ``16305 76302 76303``). A number written as one run of digits
  (``9876543210``, ``919876543210``) with a non-phone label (invoice, PO, ticket, ...) in the
  ``LABEL_WINDOW`` characters before it, and no phone label (mobile, phone, tel, contact,
  WhatsApp, ഫോൺ, മൊബൈൽ), is not one.
- **bank_account**: a run of 9-18 digits with an IFSC (``SBIN0001234``: four capitals, ``0``, six
  capitals or digits) within ``BANK_WINDOW`` characters before or after it, or the word ``account``,
  ``A/c``, ``acct`` or അക്കൗണ്ട് (any suffix) within ``BANK_WINDOW`` characters before it, with no
  other run of 9 or more digits (nor, before it, a phone label) between the cue and the run. The
  plural "accounts" (the Accounts section) and "accountant" are not the word; an amount (``Rs``,
  ``INR`` or ``₹`` just before, ``/-`` just after) is never an account. A run taken as a bank
  account is not also counted as an Aadhaar or a mobile number.

Known misses, by design: a number split across lines, written with dots (``98765.43210``), or
preceded by a lone digit and one space (``1 98765 43210`` in a table with single-space columns).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping

from base.document import Document

#: The kinds ``find_sensitive`` reports, in the order they are looked for (an earlier kind claims
#: its characters, so one number is counted once).
KINDS = ("bank_account", "aadhaar", "pan", "mobile")
#: Characters before (and, for an IFSC, after) a digit run searched for a bank-account word or IFSC.
BANK_WINDOW = 48  # characters
#: Characters before a bare number searched for a label that says what the number is.
LABEL_WINDOW = 32  # characters

# -- the Verhoeff check digit (dihedral group D5) -----------------------------------------------------

_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 4, 0, 6, 7, 8, 9, 5), (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7), (4, 0, 1, 2, 3, 9, 5, 6, 7, 8), (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2), (7, 6, 5, 9, 8, 2, 1, 0, 4, 3), (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 5, 7, 6, 2, 8, 3, 0, 9, 4), (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7), (9, 4, 5, 3, 1, 2, 6, 8, 7, 0), (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5), (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)
_INV = (0, 4, 3, 2, 1, 5, 6, 7, 8, 9)


def verhoeff_valid(digits: str) -> bool:
    """True when the last of ``digits`` (ASCII) is the Verhoeff check digit of the others."""
    check = 0
    for position, digit in enumerate(reversed(digits)):
        check = _D[check][_P[position % 8][ord(digit) - 48]]
    return check == 0


def verhoeff_check_digit(digits: str) -> str:
    """The Verhoeff check digit to append to ``digits`` (ASCII) so that ``verhoeff_valid`` holds."""
    check = 0
    for position, digit in enumerate(reversed(digits)):
        check = _D[check][_P[(position + 1) % 8][ord(digit) - 48]]
    return str(_INV[check])


# -- normalising --------------------------------------------------------------------------------------

# One character for one, so positions in the normalised text are positions in the original.
_NORMALISE = {chr(0x0D66 + i): str(i) for i in range(10)}  # Malayalam digits ൦-൯
_NORMALISE.update(dict.fromkeys("\u00a0\u2007\u2009\u202f", " "))  # no-break, figure, thin spaces
_NORMALISE.update(dict.fromkeys("\u2010\u2011\u2012\u2013", "-"))  # hyphens and the en dash
# Replacing only what occurs (str.translate walks every character: 30 ms a MB of Malayalam).
_TO_NORMALISE = re.compile("[" + "".join(_NORMALISE) + "]+")


def normalise(text: str) -> str:
    """``text`` with Malayalam digits as ASCII digits and space and dash look-alikes as `` `` and ``-``;
    the same length, so a position in one is the same position in the other."""
    return _TO_NORMALISE.sub(lambda m: "".join(_NORMALISE[c] for c in m.group()), text)


# -- patterns -----------------------------------------------------------------------------------------

# Not glued to a code: no ASCII letter, digit, '/', '_' (or '+', for the mobile prefix) right before;
# no decimal or time ("0.2345...", "10:98765...").
_LEFT = r"(?<![0-9A-Za-z/_+])(?<![0-9][.,:])"
_RIGHT = r"(?![0-9A-Za-z/_])(?![.,:][0-9])"

# Each pattern opens with a look-ahead for its first character: the regex engine then skips quickly
# to the next place that character occurs instead of trying the look-behinds at every position.
_AADHAAR = re.compile(
    r"(?=[2-9])" + _LEFT + r"(?:"
    r"(?<![0-9]{4} )(?P<spaced>[2-9][0-9]{3} [0-9]{4} [0-9]{4})(?! [0-9]{4}(?![0-9]))"
    r"|(?<![0-9]{4}-)(?P<dashed>[2-9][0-9]{3}-[0-9]{4}-[0-9]{4})(?!-[0-9]{4}(?![0-9]))"
    r"|(?P<bare>[2-9][0-9]{11})"
    r")" + _RIGHT
)
# (A PAN's first letter is matched before its look-behind: capitals are too common for a look-ahead.)
_PAN = re.compile(r"[A-Z](?<![0-9A-Za-z][A-Z])[A-Z]{2}[PCHFATBLJG][A-Z][0-9]{4}[A-Z](?![0-9A-Za-z])")
_MOBILE = re.compile(
    r"(?=[+0-9])" + _LEFT + r"(?<![0-9][ -])"
    r"(?P<prefix>\+91[ -]?|91[ -]?|0)?"
    r"(?P<number>[6-9][0-9]{9}"
    r"|[6-9][0-9]{4}(?P<s1>[ -])[0-9]{5}"
    r"|[6-9][0-9]{2}(?P<s2>[ -])[0-9]{3}(?P=s2)[0-9]{4}"
    r"|[6-9][0-9]{3}(?P<s3>[ -])[0-9]{3}(?P=s3)[0-9]{3})"
    + _RIGHT + r"(?![ -][0-9])"
)
_DIGIT_RUN = re.compile(r"(?=[0-9])(?<![0-9A-Za-z/_-])[0-9]{9,18}" + _RIGHT)
_IFSC = re.compile(r"(?=[A-Z])(?<![0-9A-Za-z])[A-Z]{4}0[A-Z0-9]{6}(?![0-9A-Za-z])")
_BANK_WORD = re.compile(r"(?i:(?<![a-z])(?:a/c|acct|account)(?![a-z]))|അക്ക(?:ൗ|ൌ|ൌ)ണ്ട")
_BANK_CUE = re.compile(f"{_BANK_WORD.pattern}|{_IFSC.pattern}")
_PHONE_LABEL = re.compile(r"(?i:(?<![a-z])(?:mob|mobile|phone|ph|tel|telephone|contact|whatsapp|cell|call)(?![a-z]))"
                          r"|ഫോൺ|ഫോണ്|മൊബൈൽ|മൊബൈല്")
_OTHER_LABEL = re.compile(r"(?i:(?<![a-z])(?:invoice|inv|po|order|bill|tender|ref|reference|voucher|challan|receipt|"
                          r"ticket|pnr|gst|gstin|cin|doc|document|file|serial|sl|wo|work order|asset|item|"
                          r"part|batch|lot|loa|contract|agreement)(?![a-z]))"
                          r"|ഓർഡർ|ഓര്ഡര്|ഇൻവോയ്സ്|ടെൻഡർ|ടെണ്ടർ|ബിൽ|ബില്|ടിക്കറ്റ്|റഫറൻസ്|ഫയൽ")
_AADHAAR_LABEL = re.compile(r"(?i:(?<![a-z])(?:aadhaar|aadhar|uid|uidai)(?![a-z]))|ആധാ")
#: IBM Maximo message ids (``BMXAA7901E``) have the PAN shape; KMRL's work orders quote them.
_NOT_PAN = ("BMX",)
#: An amount, not an account: a currency just before the digits, or ``/-`` just after.
_CURRENCY_BEFORE = re.compile(r"(?i:(?<![a-z])(?:rs|inr)\.?|₹)\s*$")
_LONG_RUN = re.compile(r"[0-9]{9}")


def _labelled_otherwise(text: str, start: int) -> bool:
    """True when the characters just before ``start`` name the number as something other than a
    person's (an invoice or order number), and not as a phone number."""
    before = text[max(0, start - LABEL_WINDOW):start]
    return _OTHER_LABEL.search(before) is not None and _PHONE_LABEL.search(before) is None


def _bare_aadhaar_is_something_else(text: str, start: int) -> bool:
    """True when the label before a bare 12-digit number says it is not an Aadhaar: another
    document's number, or a phone ("Mob: 919876543210") without an Aadhaar label nearer."""
    if _labelled_otherwise(text, start):
        return True
    before = text[max(0, start - LABEL_WINDOW):start]
    return _PHONE_LABEL.search(before) is not None and _AADHAAR_LABEL.search(before) is None


def _last(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    found = None
    for found in pattern.finditer(text):  # noqa: B007 - the last one is wanted
        pass
    return found


def _bank_context(text: str, start: int, end: int) -> bool:
    """True when the digit run ``text[start:end]`` is a bank account (see the module docstring): a
    bank word or IFSC before it with no other long number or phone label in between, or an IFSC
    after it with no other long number in between; never an amount."""
    if _CURRENCY_BEFORE.search(text, max(0, start - 8), start) or text.startswith("/-", end):
        return False
    before = text[max(0, start - BANK_WINDOW):start]
    cue = _last(_BANK_CUE, before)
    if cue is not None:
        between = before[cue.end():]
        if not _LONG_RUN.search(between) and not _PHONE_LABEL.search(between):
            return True
    after = _IFSC.search(text, end, min(len(text), end + BANK_WINDOW))
    return after is not None and not _LONG_RUN.search(text, end, after.start())


class _Claims:
    """Character spans already counted as one kind, so no span is counted as two. The spans never
    overlap (only a free span is taken), so sorted starts and ends answer ``free`` by bisection."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def free(self, start: int, end: int) -> bool:
        at = bisect.bisect_left(self._starts, end)  # spans at ``at`` and after start at or past ``end``
        return at == 0 or self._ends[at - 1] <= start

    def take(self, start: int, end: int) -> None:
        at = bisect.bisect_left(self._starts, start)
        self._starts.insert(at, start)
        self._ends.insert(at, end)


def _digits(value: str) -> str:
    return "".join(ch for ch in value if "0" <= ch <= "9")


def find_sensitive(text: str) -> dict[str, int]:
    """``{kind: number of distinct values}`` of the personal data in ``text`` (kinds: ``KINDS``;
    the module docstring says what each is). Kinds not found are left out: ``{}`` for clean text.
    Never returns, logs or keeps a value."""
    if not text:
        return {}
    text = normalise(text)
    found: dict[str, set[str]] = {kind: set() for kind in KINDS}
    claims = _Claims()
    for match in _DIGIT_RUN.finditer(text):
        if _bank_context(text, match.start(), match.end()):
            found["bank_account"].add(match.group())
            claims.take(match.start(), match.end())
    for match in _AADHAAR.finditer(text):
        digits = _digits(match.group())
        if not verhoeff_valid(digits) or not claims.free(match.start(), match.end()):
            continue
        if match.group("bare") and _bare_aadhaar_is_something_else(text, match.start()):
            continue
        found["aadhaar"].add(digits)
        claims.take(match.start(), match.end())
    found["pan"].update(match.group() for match in _PAN.finditer(text) if not match.group().startswith(_NOT_PAN))
    for match in _MOBILE.finditer(text):
        if not claims.free(match.start(), match.end()):
            continue
        # Written as one run of digits (prefix included): nothing but a label tells it from a code.
        bare = match.group().isdigit()
        if bare and _labelled_otherwise(text, match.start()):
            continue
        found["mobile"].add(_digits(match.group("number")))
        claims.take(match.start(), match.end())
    return {kind: len(values) for kind, values in found.items() if values}


def sensitive_text(parts: Iterable[str | None]) -> str:
    """The texts searched, joined by newlines (a number never runs from one part into the next)."""
    return "\n".join(p for p in parts if p)


def flag_sensitive(document: Document, hints: Mapping[str, str]) -> None:
    """Sets ``document.sensitive`` from what was read out of its content, the connector's text and
    its title (an enrichment step; ``hints`` are not used)."""
    document.sensitive = find_sensitive(sensitive_text([document.content_text, document.text, document.title]))
