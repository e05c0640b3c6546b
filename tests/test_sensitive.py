"""Personal data in text (base/enrichment/sensitive.py): kinds and counts, never values; the Verhoeff
check, the shapes and their boundaries, Malayalam digits, and the false-positive ceiling on text
without personal data (real mail bodies, this repository's docs and data, look-alike numbers).

Every number here is synthetic (sandbox/personal_data.py): random digits given a valid check digit."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from base.document import Document
from base.enrichment.sensitive import (
    find_sensitive,
    flag_sensitive,
    normalise,
    verhoeff_check_digit,
    verhoeff_valid,
)
from sandbox.personal_data import (
    aadhaar,
    invalid_aadhaar,
    lookalike_texts,
    message_texts,
    personal_texts,
    random_twelve_digit_numbers,
    repository_texts,
)

ROOT = Path(__file__).resolve().parents[1]
RNG = random.Random(14)
#: One synthetic Aadhaar number and its written forms.
AADHAAR = aadhaar(RNG)
SPACED = f"{AADHAAR[:4]} {AADHAAR[4:8]} {AADHAAR[8:]}"
DASHED = SPACED.replace(" ", "-")
MALAYALAM_DIGITS = str.maketrans("0123456789", "൦൧൨൩൪൫൬൭൮൯")


# -- Verhoeff -----------------------------------------------------------------------------------------

def test_verhoeff_check_digit_of_the_textbook_example():
    assert verhoeff_check_digit("236") == "3"
    assert verhoeff_valid("2363") and not verhoeff_valid("2364")


def test_verhoeff_catches_every_single_digit_change_and_every_adjacent_swap():
    for _ in range(200):
        number = aadhaar(RNG)
        assert verhoeff_valid(number)
        for at in range(12):
            for digit in "0123456789":
                if digit != number[at]:
                    assert not verhoeff_valid(number[:at] + digit + number[at + 1:])
        for at in range(11):
            swapped = number[:at] + number[at + 1] + number[at] + number[at + 2:]
            if swapped != number:
                assert not verhoeff_valid(swapped)


def test_about_one_random_twelve_digit_number_in_ten_passes_verhoeff():
    numbers = random_twelve_digit_numbers(3, 20000)
    share = sum(verhoeff_valid(n) for n in numbers) / len(numbers)
    assert 0.09 < share < 0.11


# -- Aadhaar ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("written", [SPACED, DASHED, AADHAAR])
def test_aadhaar_in_each_written_form_is_found(written):
    assert find_sensitive(f"Aadhaar No. {written} of the applicant") == {"aadhaar": 1}


def test_aadhaar_with_a_wrong_check_digit_is_not_found():
    wrong = invalid_aadhaar(RNG)
    assert find_sensitive(f"Aadhaar {wrong[:4]} {wrong[4:8]} {wrong[8:]}") == {}
    assert find_sensitive(f"Aadhaar {wrong}") == {}


def test_aadhaar_starting_with_zero_or_one_is_not_found():
    for first in "01":
        body = first + AADHAAR[1:11]
        number = body + verhoeff_check_digit(body)
        assert verhoeff_valid(number)
        assert find_sensitive(f"Aadhaar {number[:4]} {number[4:8]} {number[8:]}") == {}


@pytest.mark.parametrize("text", [
    f"card 4111 {SPACED}",  # the last 12 digits of a 16-digit card number
    f"card {SPACED} 4111",
    f"{DASHED}-4111",
    f"{AADHAAR[:4]} {AADHAAR[4:8]}-{AADHAAR[8:]}",  # mixed separators
    f"ref KMRL{AADHAAR}",  # glued to a code
    f"KMRL/{AADHAAR}",
    f"{AADHAAR}7",  # inside a longer run
    f"7{AADHAAR}",
    f"0.{AADHAAR}",  # a decimal
    f"Invoice No. {AADHAAR}",  # labelled as something else
    f"ഓർഡർ നമ്പർ {AADHAAR}",
])
def test_aadhaar_shaped_digits_inside_something_else_are_not_found(text):
    assert "aadhaar" not in find_sensitive(text)


def test_aadhaar_written_in_malayalam_digits_and_malayalam_context_is_found():
    assert find_sensitive(f"ആധാർ നമ്പർ: {SPACED.translate(MALAYALAM_DIGITS)} (അപേക്ഷകന്റെ)") == {"aadhaar": 1}
    assert find_sensitive(f"ആധാർ{DASHED}ആണ്") == {"aadhaar": 1}


def test_no_break_and_thin_spaces_count_as_spaces():
    assert find_sensitive(f"UID {AADHAAR[:4]}\u00a0{AADHAAR[4:8]}\u202f{AADHAAR[8:]}") == {"aadhaar": 1}
    assert normalise("൧\u00a0൨\u2013") == "1 2-"


# -- PAN ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("holder", list("PCHFATBLJG"))
def test_pan_with_each_holder_type_is_found(holder):
    assert find_sensitive(f"PAN ABC{holder}E1234F") == {"pan": 1}


@pytest.mark.parametrize("text", ["PAN ABCDE1234F", "pan abcpe1234f", "XABCPE1234F", "ABCPE1234FG", "ABCPE12345F",
                                  "Maximo said BMXAA7901E"])
def test_pan_shaped_codes_that_are_not_pans_are_not_found(text):
    assert find_sensitive(text) == {}


# -- mobile -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("written", ["9876543210", "98765 43210", "98765-43210", "987-654-3210", "9876 543 210",
                                     "+91 98765 43210", "+91-9876543210", "+919876543210", "919876543210",
                                     "09876543210", "91 98765-43210"])
def test_mobile_in_each_written_form_is_found(written):
    assert find_sensitive(f"Contact: {written}.") == {"mobile": 1}


@pytest.mark.parametrize("text", [
    "Trains 16305 76302 76303 via Ernakulam",  # train numbers joined by spaces
    "meter 98765 43210 55",
    "98765 43210-12",
    "Landline 0484 2345678",
    "Invoice No. 9876543210",
    "PO 919876543210",
    "Complaint ticket 8123456789 closed",
    "98765.43210",
    "Time 10:98765 43210",
    "5876543210",  # starts with 5
    "98765 4321",  # nine digits
    "987 65 43210",  # not a grouping people write
])
def test_phone_like_numbers_that_are_not_mobiles_are_not_found(text):
    assert "mobile" not in find_sensitive(text)


def test_a_phone_label_wins_over_another_label_before_it():
    assert find_sensitive("Invoice queries: mobile 9876543210") == {"mobile": 1}


def test_a_labelled_phone_number_is_not_read_as_an_aadhaar():
    body = "91" + "98765432"
    number = body + "1" + verhoeff_check_digit(body + "1")  # 12 digits starting 91, Verhoeff-valid
    assert verhoeff_valid(number)
    assert find_sensitive(f"Mob: {number}") == {"mobile": 1}


# -- bank accounts ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "A/c No. 123456789012, IFSC SBIN0001234",
    "Account number: 00112233445",
    "Salary account 998877665544332211",
    "Beneficiary 40012345678 (FDRL0001234, Kaloor)",
    "അക്കൗണ്ട് നമ്പർ 123456789",
    "അക്കൗണ്ടിൽ 123456789 ലേക്ക്",
])
def test_bank_account_next_to_an_ifsc_or_the_word_account_is_found(text):
    assert find_sensitive(text) == {"bank_account": 1}


@pytest.mark.parametrize(("text", "expected"), [
    ("Reference 123456789012 of the meeting", {}),  # no cue
    ("Accounts section, file 1234567890123", {}),  # the plural is a department
    ("Account head 4101: Rs 125000000 sanctioned", {}),  # amounts
    ("Account head 4101: 125000000/- sanctioned", {}),
    ("Account head 4101: ₹125000000 sanctioned", {}),
    ("account 12345678", {}),  # eight digits
    ("account 1234567890123456789", {}),  # nineteen digits
    # The cue belongs to the first number only: a phone label, or another long number, in between.
    ("A/c 12345678901 closed. Phone: 9876543210", {"bank_account": 1, "mobile": 1}),
    ("A/c 12345678901, then 555666777888", {"bank_account": 1}),
    ("Mobile 9876543210 / IFSC-less A/c text", {"mobile": 1}),
])
def test_only_runs_of_digits_with_a_bank_cue_of_their_own_are_accounts(text, expected):
    assert find_sensitive(text) == expected


def test_a_number_is_counted_as_one_kind_only():
    assert find_sensitive(f"A/c {AADHAAR} IFSC SBIN0001234") == {"bank_account": 1}


# -- counts, never values -----------------------------------------------------------------------------

def test_counts_are_distinct_values_per_kind_and_nothing_else_is_returned():
    other = aadhaar(RNG)
    text = f"{SPACED}\n{DASHED}\n{other}\nPAN ABCPE1234F ABCPE1234F\nMob 9876543210, 98765 43211"
    found = find_sensitive(text)
    assert found == {"aadhaar": 2, "pan": 1, "mobile": 2}
    assert all(isinstance(k, str) and isinstance(v, int) for k, v in found.items())
    assert AADHAAR not in repr(found) and "9876543210" not in repr(found)


def test_flag_sensitive_reads_content_text_text_and_title_each_on_its_own():
    document = Document(source="fake", scope="a", source_id="1", version="1", filename=f"{AADHAAR}.pdf",
                        mime_type="application/pdf", size=1, sha256="0" * 64, title="Leave form of 98765",
                        text="43210 and PAN ABCPE1234F", content_text=f"Aadhaar {SPACED}")
    flag_sensitive(document, {})
    # The filename is not read; a number split between the title and the text is not joined.
    assert document.sensitive == {"aadhaar": 1, "pan": 1}


# -- false positives and true positives ---------------------------------------------------------------

def test_real_mail_bodies_without_personal_data_are_almost_never_flagged(mime_corpus):
    texts = list(message_texts(mime_corpus))
    flagged = {name: found for name, found in ((n, find_sensitive(t)) for n, t in texts) if found}
    assert len(texts) >= 90
    # One message carries a parenthesised 10-digit number starting with 8 (a mobile's shape); the
    # ceiling is that one.
    assert len(flagged) <= 1, flagged


def test_this_repositorys_docs_and_data_flag_only_the_department_phone_numbers():
    flagged = {name: found for name, found in ((n, find_sensitive(t)) for n, t in repository_texts(ROOT)) if found}
    # config/departments.toml maps WhatsApp numbers (+91 9447x ...) to departments: mobiles indeed.
    assert flagged == {"config/departments.toml": {"mobile": 4}}


def test_lookalike_numbers_are_never_flagged():
    samples = lookalike_texts(21, 3000)
    flagged = [(s.text, find_sensitive(s.text)) for s in samples if find_sensitive(s.text)]
    assert flagged == []


def test_synthetic_personal_data_is_found_exactly():
    samples = personal_texts(22, 1200)
    wrong = [(s.text, find_sensitive(s.text), s.expected) for s in samples if find_sensitive(s.text) != s.expected]
    assert wrong == []
