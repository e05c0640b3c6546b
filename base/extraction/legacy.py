"""Malayalam typed in legacy ASCII-mapped fonts: told by the font's name and by the text itself.

Before Unicode, Malayalam was typed in fonts that draw Malayalam glyphs at Latin code points
(ML-TTKarthika, FML-TTRevathi, Manorama, Matweb, ...), and many Kerala government PDFs still are:
their text layer reads as Latin gibberish ("tIcf kÀ¡mÀ" for "കേരള സർക്കാർ"), so such pages must be
OCRed instead. Two signs, either of which a caller may use:

- ``is_legacy_font(name)``: the font's name (a PDF subset prefix such as ``ABCDEF+`` ignored) is one
  of the known legacy families;
- ``gibberish_share(text)``: the share of the words of ``text`` that no Latin-script writing produces
  but ASCII-mapped Malayalam does (see ``_suspicious``); ``looks_legacy(text, ...)`` compares it
  with a threshold, lower when the document is known to use a legacy font. The text sign catches a
  legacy font that was renamed or embedded under a generic name.

Measured false positives on English prose are in BENCHMARKS.md (bench/bench_extraction.py).
"""

from __future__ import annotations

import re

#: Legacy ASCII-mapped Malayalam font families, as PDFs name them (case-insensitive, at the start of
#: the name after any subset prefix): the ML-TT series and its W/B variants (Karthika, Revathi,
#: Ambili, Indulekha, ...), FML-TT, and the newspaper and publishing fonts of the 1990s.
LEGACY_FONT_PREFIXES = (
    "ml-tt", "mlw-tt", "mlb-tt", "mlbw-tt", "mltt", "fml-", "fml", "manorama", "matweb", "mathrubhumi",
    "indulekha", "karthika", "revathi", "ambili", "panchari", "janaranjani", "kalakaumudi", "pmltkairali",
    "j*mlm*", "shree-mal", "thoolika", "kruthi", "chowara", "dvmalayalam", "malayalamabe", "haritha",
    "ssoft's-veena", "jacobs-mal", "re_infom-kaveri",
)
#: Words of a page needed before the text sign says anything (a page number is not evidence).
MIN_WORDS = 6
#: Share of suspicious words from which a page is legacy Malayalam by its text alone.
STRONG_SHARE = 0.30
#: The share that suffices on a page of a document that uses a legacy font (its name was seen).
WEAK_SHARE = 0.12

# Symbols ML-TT fonts give to consonants ([\]^) and signs ({|}~), and Latin-1 for conjuncts and
# chillus; inside a word, Latin-script writing has none of them. (They also use _ and `, but those
# are everyday characters of identifiers and code in English technical text: REDIS_URL, `make`.)
_ODD_INSIDE = re.compile(r"[A-Za-z\u00a1-\u00ff][\[\\\]^{|}~\u00a1-\u00bf\u00d7\u00f7]"
                         r"|[\[\\\]^{|}~\u00a1-\u00bf\u00d7\u00f7][A-Za-z\u00c0-\u00ff]")
# A capital after a small letter inside a word: a pre-base vowel sign (small) typed before its
# consonant (capital), "tIcf" for കേരള. (camelCase in English prose is rare; see the measurement.)
_CASE_FLIP = re.compile(r"[a-z\u00df-\u00ff][A-Z\u00c0-\u00de]")
# Latin-1 letters and symbols between ASCII letters, or next to each other: "kÀ¡mÀ", "R¢¦n¢".
_LATIN1_RUN = re.compile(r"[\u00a1-\u00ff]{2}|[A-Za-z][\u00a1-\u00ff]+[A-Za-z]")
_ANY_SIGN = re.compile(r"[\u00a1-\u00ff\[\\\]^_`{|}~]|[a-z][A-Z]")
_WORD = re.compile(r"\S+")
_EDGE = "\"'`()[]<>.,;:!?*-–—“”‘’"


def is_legacy_font(name: str) -> bool:
    """Whether the PDF font ``name`` (e.g. "GHJKLM+ML-TTKarthika") is a legacy ASCII-mapped family."""
    base = name.split("+", 1)[1] if "+" in name[:8] else name
    return base.lower().startswith(LEGACY_FONT_PREFIXES)


def _suspicious(word: str) -> bool:
    return bool(_ODD_INSIDE.search(word) or _CASE_FLIP.search(word) or _LATIN1_RUN.search(word))


def gibberish_share(text: str) -> tuple[float, int]:
    """(share of suspicious words, words considered): words with at least two letters, Latin or
    Latin-1, after edge punctuation is stripped; Malayalam-script and digit-only words are not
    considered."""
    considered = suspicious = 0
    for match in _WORD.finditer(text):
        word = match.group().strip(_EDGE)
        if len(word) < 2 or not any("A" <= c <= "z" or "\u00c0" <= c <= "\u00ff" for c in word):
            continue
        if any(c >= "\u0100" for c in word):
            continue  # Unicode text of another script is not ASCII-mapped Malayalam
        considered += 1
        suspicious += _suspicious(word)
    return (suspicious / considered if considered else 0.0), considered


def page_share(text: str) -> float:
    """``gibberish_share`` of one page, or 0.0 when the page has too few words to judge (or no sign
    at all, which one regex pass over the page tells)."""
    if not _ANY_SIGN.search(text):
        return 0.0
    share, words = gibberish_share(text)
    return share if words >= MIN_WORDS else 0.0


def looks_legacy(text: str, *, legacy_font_in_document: bool = False) -> bool:
    """Whether ``text`` (one page) reads as ASCII-mapped Malayalam (see the module docstring)."""
    return page_share(text) >= (WEAK_SHARE if legacy_font_in_document else STRONG_SHARE)
