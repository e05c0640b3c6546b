"""Language of a document's text: 'en', 'ml', 'mixed', another ISO 639-1 code, or 'unknown'.

``detect_language_details`` decides by script first, because script is cheap and certain: Malayalam is
its own Unicode block (U+0D00-U+0D7F), so Malayalam, English-with-Malayalam and other single-language
scripts (Tamil, Kannada, ...) never reach a statistical model. Latin-script text is read word by word:
English by its function words; Malayalam typed in Latin letters ("Manglish") by a lexicon of its
function words and endings and a character n-gram model (``manglish.py``); what neither claims, and
scripts shared by several languages (Devanagari, Arabic, Cyrillic, Han), go to langdetect, seeded so
the same text always gets the same answer.

Mixed is defined by words, not by a share of letters: Malayalam text that embeds two or more English
words in Latin letters (acronyms such as KMRL, codes such as DCC-04, numbers, URLs, e-mail addresses
and file names are not words), and English text that carries two or more Malayalam words. Manglish
that borrows English nouns ("train late aayi, passengers complaint cheythu") is Malayalam: its grammar
and endings are Malayalam, and a reader needs Malayalam to read it.

Counting is done on the UTF-8 bytes, in C: a Malayalam character is any code point of its block
(letters, vowel signs, viramas: so a Malayalam word weighs about what its transliteration weighs
in Latin letters), a Latin letter is an ASCII letter or one of Latin-1 / Latin Extended-A and -B.
Letters of other scripts are counted exactly (a regex) only when they could change the answer.
"""

from __future__ import annotations

import os
import re
import threading
import unicodedata
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from base.enrichment import manglish
from utils.env import EnvReader, parse_number

ENGLISH = "en"
MALAYALAM = "ml"
MIXED = "mixed"
UNKNOWN = "unknown"

#: ISO 15924 codes for ``LanguageResult.script``.
LATIN = "Latn"
MALAYALAM_SCRIPT = "Mlym"

#: Environment variable holding an optional floor for 'mixed': the share (0..1] of Latin + Malayalam
#: characters the minority script must also hold. Read by each call that needs it (a text with both
#: scripts), so a change needs no restart. Unset: no floor, the word rule alone decides.
MIXED_THRESHOLD_ENV = "LANGUAGE_MIXED_THRESHOLD"
#: No floor by default: a share of letters misses short English terms in Malayalam text ("ആദായ നികുതി
#: (Income tax)"), which the word rule counts.
DEFAULT_MIXED_THRESHOLD: float | None = None
#: English words in Latin letters that make Malayalam text 'mixed' (one is a loan, not a second language).
MIXED_MIN_ENGLISH_WORDS = 2
#: Malayalam words that make English text 'mixed'.
MIXED_MIN_MALAYALAM_WORDS = 2
#: Fewer letters than this and nothing can be said: 'unknown'.
MIN_LETTERS = 3
#: Latin text shorter than this (letters) that the stopword check cannot call English is 'unknown':
#: below it langdetect guesses rather than detects.
LANGDETECT_MIN_LETTERS = 10
#: Plain-ASCII Latin text of at most this many words with no foreign function word is English: KMRL's
#: short Latin-script texts (titles, filenames, captions) are, and on a few nouns langdetect guesses
#: ("Leave application casual leave" -> 'it').
SHORT_TEXT_WORDS = 12
#: ... unless its n-grams read this much more like another Latin-script language than like English
#: (nats per n-gram; Tagalog and Swahili messages score 0.4 to 0.8, English titles below 0).
SHORT_TEXT_MAX_OTHER_OVER_ENGLISH = 0.3
#: English function words after which the check stops reading, when no foreign one was seen.
ENOUGH_ENGLISH_WORDS = 6
#: Only the head of a long text is looked at (characters); a document's language shows in its first pages.
MAX_SAMPLE_CHARS = 10_000
#: What langdetect reads at most (characters); its cost grows with the text and its answer does not.
LANGDETECT_MAX_CHARS = 1_000
#: Words looked at by the English stopword check.
MAX_WORDS_CHECKED = 200
#: Seed for langdetect's random sampling, so its answers are deterministic.
LANGDETECT_SEED = 0


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Function words frequent in English and rare as words of other Latin-script languages. Words that
# are also common elsewhere ('in', 'is', 'on', 'for', 'a', 'was', 'will', 'we', 'die') are left out
# on purpose: they would call Dutch, German or Danish text English.
_ENGLISH_WORDS = _words(
    """the and of to with this that these those which from have has had been were are shall should
    would could please your our their they there what when where who not it by be at or but if you
    she all also after before into than then only its about between under any each such may must can
    kindly regarding attached hereby"""
)
# Function words of the other Latin-script languages langdetect knows; one of them in a text makes
# the stopword check step aside. Words that are also English in KMRL's documents ('as', 'do', 'van',
# 'est' as in "est. cost") are left out.
_FOREIGN_WORDS = _words(
    """der und das ist nicht mit den dem ein eine zu von für auf sich wir ich werden wird bitte
    le la les des une et du pour dans qui avec sur pas nous vous sont cette aux
    el los las del que por con para está como pero
    il di che gli della sono non sulla
    da dos das em não uma com
    het een en ik niet zijn op dat voor
    yang dan ini itu untuk dengan tidak akan saya sudah belum karena sedang dalam pada
    ang mga ng ako hindi ngayon kwa hadi naar tot wordt
    och att det som är og er ikke jeg på
    ve bir bu için ile"""
)
_WORD = re.compile(r"[a-zà-öø-ÿ]+")


def _letter_class(start: int, end: int) -> str:
    """A regex character class of the letters (category L*) between two code points, inclusive."""
    return "".join(re.escape(chr(cp)) for cp in range(start, end + 1) if unicodedata.category(chr(cp)).startswith("L"))


_LATIN_LETTER = re.compile(f"[{_letter_class(0x0041, 0x024F)}{_letter_class(0x1E00, 0x1EFF)}]")
_NON_ASCII_LATIN_LETTER = re.compile(f"[{_letter_class(0x00C0, 0x024F)}{_letter_class(0x1E00, 0x1EFF)}]")
_OTHER_SCRIPT_LETTER = re.compile(r"[^\W\d_\u0041-\u024f\u1e00-\u1eff\u0d00-\u0d7f]")
_ASCII_LETTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# UTF-8 starts U+0D00-U+0D3F with E0 B4 and U+0D40-U+0D7F with E0 B5; E0 is always a lead byte,
# so these pairs cannot appear inside another character.
_MALAYALAM_UTF8 = (b"\xe0\xb4", b"\xe0\xb5")
# Lead bytes of U+00C0-U+027F (Latin-1 letters, Latin Extended-A and -B) and of any non-ASCII character.
_LATIN_EXTENDED_LEADS = bytes(range(0xC3, 0xCA))
_NON_ASCII_LEADS = bytes(range(0xC0, 0x100))


def _count(data: bytes, members: bytes) -> int:
    """How many bytes of ``data`` are in ``members`` (bytes.translate deletes them in C)."""
    return len(data) - len(data.translate(None, members))


# Scripts other than Latin and Malayalam, by block: (first code point, language or None). None means
# several languages share the script and langdetect tells them apart.
_SCRIPT_BLOCKS: tuple[tuple[int, str | None], ...] = (
    (0x0000, None),
    (0x0370, "el"),  # Greek
    (0x0400, None),  # Cyrillic: ru, uk, bg, mk ...
    (0x0530, "hy"),
    (0x0590, "he"),
    (0x0600, None),  # Arabic: ar, fa, ur
    (0x0900, None),  # Devanagari: hi, mr, ne
    (0x0980, "bn"),
    (0x0A00, "pa"),  # Gurmukhi
    (0x0A80, "gu"),
    (0x0B00, "or"),
    (0x0B80, "ta"),
    (0x0C00, "te"),
    (0x0C80, "kn"),
    (0x0D00, MALAYALAM),
    (0x0D80, "si"),
    (0x0E00, "th"),
    (0x0E80, None),
    (0x10A0, "ka"),  # Georgian
    (0x1100, "ko"),  # Hangul Jamo
    (0x1200, None),
    (0x3040, "ja"),  # Hiragana, Katakana
    (0x3100, None),
    (0x4E00, None),  # Han: zh, ja
    (0xA000, None),
    (0xAC00, "ko"),  # Hangul syllables
    (0xD7B0, None),
)
_SCRIPT_STARTS = [start for start, _ in _SCRIPT_BLOCKS]
#: Letters of another script sampled to find which script dominates.
_SCRIPT_SAMPLE_LETTERS = 64
#: A script block is counted by its UTF-8 prefixes when it needs at most this many.
_MAX_UTF8_PREFIXES = 8

_langdetect_lock = threading.Lock()
_langdetect_factory: Any = None


@dataclass(frozen=True)
class LanguageResult:
    """What ``detect_language_details`` found.

    code: 'en', 'ml', 'mixed', another ISO 639-1 code, or 'unknown' (what ``detect_language`` returns).
    script: '' when the text is in its language's own script (English in Latin letters, Malayalam in
    Malayalam script, mixed in both) or nothing applies; 'Latn' for Malayalam typed in Latin letters
    (Manglish). languages: the languages present, heaviest first: ('ml', 'en') for Malayalam with English
    words, ('en', 'ml') for English with a Malayalam phrase, one code otherwise, () for 'unknown'.
    """

    code: str
    script: str = ""
    languages: tuple[str, ...] = ()


_UNKNOWN_RESULT = LanguageResult(UNKNOWN)
_ENGLISH_RESULT = LanguageResult(ENGLISH, "", (ENGLISH,))
_MALAYALAM_RESULT = LanguageResult(MALAYALAM, "", (MALAYALAM,))
_MANGLISH_RESULT = LanguageResult(MALAYALAM, LATIN, (MALAYALAM,))
_MIXED_ML_EN_RESULT = LanguageResult(MIXED, "", (MALAYALAM, ENGLISH))
_MIXED_EN_ML_RESULT = LanguageResult(MIXED, "", (ENGLISH, MALAYALAM))


def detect_language(text: str, *, mixed_threshold: float | None = None) -> str:
    """Returns the language code of ``text``: ``detect_language_details(text).code``."""
    return detect_language_details(text, mixed_threshold=mixed_threshold).code


def detect_language_details(text: str, *, mixed_threshold: float | None = None) -> LanguageResult:
    """Returns the language of ``text``, its script when unusual, and the languages present.

    'ml' for Malayalam, in Malayalam script or typed in Latin letters (then script 'Latn'); 'en' for
    English; 'mixed' for Malayalam text with two or more English words in Latin letters (acronyms, codes,
    numbers, URLs, e-mail addresses and file names do not count) and for English text with two or more
    Malayalam words; another ISO 639-1 code ('de', 'ta', 'hi', ...) for other languages; 'unknown' for
    empty text, text with fewer than three letters, symbols and emoji only, and short Latin text that
    cannot be told. ``mixed_threshold`` (default from the environment variable
    LANGUAGE_MIXED_THRESHOLD, else none) is an extra floor: 'mixed' also needs the smaller script to
    hold at least that share of the Latin + Malayalam letters. The same text always gets the same
    answer. Only the first 10,000 characters are read.

    Raises ValueError for ``mixed_threshold`` outside (0, 1], and ConfigError when it comes from an
    environment variable that is not such a number.
    """
    if not text:
        return _UNKNOWN_RESULT
    if mixed_threshold is not None:
        _checked_threshold(mixed_threshold)
    sample = text[:MAX_SAMPLE_CHARS]
    if sample.isascii():
        # The common case (English mail, filenames): no script to weigh.
        if _count(sample.encode("ascii"), _ASCII_LETTERS) < MIN_LETTERS:
            return _UNKNOWN_RESULT
        return _latin_language(sample)
    data = sample.encode("utf-8", "surrogatepass")
    malayalam = data.count(_MALAYALAM_UTF8[0]) + data.count(_MALAYALAM_UTF8[1])
    latin_extended = _count(data, _LATIN_EXTENDED_LEADS)
    latin = _count(data, _ASCII_LETTERS) + latin_extended
    # Non-ASCII characters that are neither Malayalam nor Latin: letters of another script, or
    # symbols (curly quotes, the rupee sign, emoji).
    other = _count(data, _NON_ASCII_LEADS) - malayalam - latin_extended
    if other > malayalam + latin:
        return _single(_other_script_language(sample, data, other))
    if malayalam + latin < MIN_LETTERS:
        return _UNKNOWN_RESULT
    if malayalam and latin:
        return _both_scripts(sample, malayalam, latin, mixed_threshold)
    if malayalam:
        return _MALAYALAM_RESULT
    return _latin_language(sample)


def _single(code: str) -> LanguageResult:
    return _UNKNOWN_RESULT if code == UNKNOWN else LanguageResult(code, "", (code,))


def _both_scripts(sample: str, malayalam: int, latin: int, mixed_threshold: float | None) -> LanguageResult:
    """A text with Malayalam and Latin letters: the heavier script's language, or 'mixed' by the word rule."""
    # Only a text with both scripts reads the threshold (an environment look-up costs microseconds).
    threshold = _mixed_threshold() if mixed_threshold is None else mixed_threshold
    share_allows_mixed = threshold is None or min(malayalam, latin) >= threshold * (malayalam + latin)
    # Latin letters of acronyms, codes, URLs and file names weigh nothing in a language's favour: a
    # Malayalam notice that ends with www.kochimetro.org is Malayalam. They are only counted out (a
    # regex over the text) when the raw letter count says Latin is heavier.
    english_words, english_letters = _english_words(sample) if latin > malayalam else (-1, 0)
    if malayalam >= english_letters:
        if english_words < 0:
            english_words = english_word_count(sample)
        if share_allows_mixed and english_words >= MIXED_MIN_ENGLISH_WORDS:
            return _MIXED_ML_EN_RESULT
        return _MALAYALAM_RESULT
    phrase = share_allows_mixed and malayalam_word_count(sample, MIXED_MIN_MALAYALAM_WORDS) >= MIXED_MIN_MALAYALAM_WORDS
    # Latin text beside a Malayalam phrase in KMRL's documents is English (or Manglish, which the Latin
    # check finds first): langdetect is not asked to tell it.
    latin_result = _latin_language(sample, undecided=_MIXED_EN_ML_RESULT if phrase else None)
    if latin_result.code in (MALAYALAM, UNKNOWN):
        # Manglish with some Malayalam script is Malayalam still; too little Latin to tell leaves
        # the Malayalam words to speak.
        return latin_result if latin_result.code == MALAYALAM else _MALAYALAM_RESULT
    if phrase and latin_result.code == ENGLISH:
        return _MIXED_EN_ML_RESULT
    return latin_result


# An English word: Latin letters, with at least one small letter (KMRL, CMRS, PDF are acronyms), not
# touching a digit or another Latin letter (TS-09, DCC-04, TS11 are codes), nor a dot, @, slash or
# colon that makes it part of a URL, an e-mail address, a domain or a file name (www.kochimetro.org,
# info@kmrl.co.in, report.pdf); a dot before a space ends a sentence, not a name. A hyphenated compound
# or a file-name stem ("fire-audit", "fire_audit") is one word; a hyphen before Malayalam ("station-ലെ")
# ends the word. Lookarounds instead of a pass that first strips URLs: one regex scan of the text.
_ENGLISH_WORD = re.compile(
    r"(?<![A-Za-z0-9_'\u2019.@/\\])(?<![A-Za-z0-9][-_])(?=[A-Za-z_-]*[a-z])[A-Za-z]+(?:[-_][A-Za-z]+)*"
    r"(?![A-Za-z0-9_@/\\]|[-_.][A-Za-z0-9]|:/)"
)
_MALAYALAM_WORD = re.compile(r"[\u0d00-\u0d7f][\u0d00-\u0d7f\u200c\u200d]*")
# Abbreviations written in letters that are not English words of the text: "Rs 1,200", "No. 45", "Dr.".
_ABBREVIATIONS = _words("rs no nos dr mr mrs ms sri shri smt st km kg hrs hr am pm ph tel fax ref dt ltd pvt co vs etc")


def english_word_count(text: str) -> int:
    """English words in Latin letters in ``text``: tokens of two or more letters
    that are neither acronyms (all capitals: KMRL, CMRS, PDF), nor codes (with digits: DCC-04, TS11),
    nor abbreviations (Rs, No, Dr), nor parts of URLs, e-mail addresses or file names."""
    return _english_words(text)[0]


def _english_words(text: str) -> tuple[int, int]:
    """(words, their letters) as ``english_word_count`` counts them."""
    words = [word for word in _ENGLISH_WORD.findall(text) if len(word) > 1 and word.lower() not in _ABBREVIATIONS]
    return len(words), sum(map(len, words)) - sum(word.count("-") + word.count("_") for word in words)


def malayalam_word_count(text: str, enough: int) -> int:
    """Malayalam words (runs of Malayalam letters and signs) in ``text``, counted up to ``enough``."""
    count = 0
    for _ in _MALAYALAM_WORD.finditer(text):
        count += 1
        if count >= enough:
            break
    return count


def _mixed_threshold() -> float | None:
    """LANGUAGE_MIXED_THRESHOLD from the environment, read at each call; the parsed value is cached."""
    raw = EnvReader(os.environ).raw(MIXED_THRESHOLD_ENV)
    return DEFAULT_MIXED_THRESHOLD if raw is None else _parse_threshold(raw)


@lru_cache(maxsize=8)
def _parse_threshold(raw: str) -> float:
    return parse_number(raw, MIXED_THRESHOLD_ENV, whole=False, what="a number in (0, 1]", above=0, maximum=1)


def _checked_threshold(value: float) -> float:
    if not 0 < value <= 1:
        raise ValueError(f"mixed_threshold must be in (0, 1], got {value!r}")
    return value


def _latin_language(sample: str, *, undecided: LanguageResult | None = None) -> LanguageResult:
    """Manglish by its lexicon and n-grams; English by its function words, or as a short plain-ASCII
    text; otherwise ``undecided`` when given, else langdetect if there is enough text for it."""
    english = foreign = markers = words = 0
    for words, match in enumerate(_WORD.finditer(sample.lower()), start=1):
        token = match.group()
        if token in _ENGLISH_WORDS:
            english += 1
            if english >= ENOUGH_ENGLISH_WORDS and not foreign and not markers:
                return _ENGLISH_RESULT
        elif token in _FOREIGN_WORDS:
            foreign += 1
        elif manglish.is_marker(token):
            markers += 1
        if words >= MAX_WORDS_CHECKED:
            break
    # Plain English (function words, no Manglish word) skips the n-gram model; everything else is
    # weighed by it, short texts included: "njan naale leave edukkum" has no English function word,
    # and Malayalam transliterated from formal text ("suraksha parishodhanayil ...") has no marker.
    evidence = manglish.evidence(sample) if markers or english < ENOUGH_ENGLISH_WORDS else None
    # English function words outnumbering the Manglish ones make it English with Malayalam names
    # ("Aluva to Thrippunithura"), whatever the n-grams of the names say.
    if evidence is not None and evidence.is_manglish and markers >= english:
        return _MANGLISH_RESULT
    if english >= 2 and english > 3 * foreign:
        return _ENGLISH_RESULT
    if (
        not foreign
        and words <= SHORT_TEXT_WORDS
        and not _NON_ASCII_LATIN_LETTER.search(sample)
        and (evidence is None or evidence.other_over_english < SHORT_TEXT_MAX_OTHER_OVER_ENGLISH)
    ):
        return _ENGLISH_RESULT
    if undecided is not None:
        return undecided
    if len(_LATIN_LETTER.findall(sample)) < LANGDETECT_MIN_LETTERS:
        return _UNKNOWN_RESULT
    return _single(_langdetect(sample))


def _other_script_language(sample: str, data: bytes, other: int) -> str:
    """The language of the script most of the ``other`` non-Latin, non-Malayalam characters are in
    (langdetect's answer for a script several languages share), or 'unknown' without letters."""
    first = _OTHER_SCRIPT_LETTER.search(sample)
    if first is None:
        return UNKNOWN  # symbols and emoji only
    block = bisect_right(_SCRIPT_STARTS, ord(first.group())) - 1
    prefixes = _utf8_prefixes(block)
    in_block = sum(data.count(prefix) for prefix in prefixes)
    if not prefixes or 2 * in_block <= other:
        # Several scripts, or one too large to count by bytes: count letters and vote on a sample.
        letters = _OTHER_SCRIPT_LETTER.findall(sample)
        if len(letters) < MIN_LETTERS:
            return UNKNOWN
        votes = Counter(bisect_right(_SCRIPT_STARTS, ord(letter)) - 1 for letter in letters[:_SCRIPT_SAMPLE_LETTERS])
        block = votes.most_common(1)[0][0]
    elif in_block < MIN_LETTERS:
        return UNKNOWN
    language = _SCRIPT_BLOCKS[block][1]
    return language if language is not None else _langdetect(sample)


@lru_cache(maxsize=len(_SCRIPT_BLOCKS))
def _utf8_prefixes(block: int) -> tuple[bytes, ...]:
    """The UTF-8 prefixes (all bytes but the last) shared by each 64 code points of a script block,
    so ``data.count`` can count the block's characters in C; empty for blocks too large for that."""
    start = _SCRIPT_STARTS[block] & ~0x3F
    end = _SCRIPT_STARTS[block + 1] if block + 1 < len(_SCRIPT_STARTS) else 0x10000
    prefixes = tuple(dict.fromkeys(chr(cp).encode("utf-8", "surrogatepass")[:-1] for cp in range(start, end, 64)))
    return prefixes if 0 < len(prefixes) <= _MAX_UTF8_PREFIXES and all(prefixes) else ()


def _langdetect(sample: str) -> str:
    """langdetect's most probable language as ISO 639-1 ('zh-cn' -> 'zh'), or 'unknown'."""
    from langdetect.lang_detect_exception import LangDetectException

    detector = _factory().create()
    detector.append(sample[:LANGDETECT_MAX_CHARS])
    try:
        code: str = detector.detect()
    except LangDetectException:
        return UNKNOWN
    return UNKNOWN if code == UNKNOWN else code.split("-", 1)[0]


def _factory() -> Any:
    """A langdetect factory of our own, loaded once (about a second), seeded for repeatable answers.

    langdetect's module-level ``detect`` publishes its factory before the profiles are loaded, so a
    second thread can see an empty one; this one is published only when complete.
    """
    global _langdetect_factory
    if _langdetect_factory is None:
        with _langdetect_lock:
            if _langdetect_factory is None:
                from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

                factory = DetectorFactory()
                factory.load_profile(PROFILES_DIRECTORY)
                factory.set_seed(LANGDETECT_SEED)
                _langdetect_factory = factory
    return _langdetect_factory
