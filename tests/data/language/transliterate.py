"""Malayalam script to Latin letters the way people type it ("Manglish"), in several informal styles.

Used only to build the labelled language set (``make_set.py``): Malayalam sentences become Manglish
sentences with the spellings field staff use ("njan/nyan", "aanu/anu", "kk/k", "undu/und").
Styles:
- ``careful``: long vowels doubled (aa, ee, oo), geminates kept, zh for ഴ, word-final -u kept;
- ``casual``: long vowels mostly single, geminates mostly kept, -u sometimes dropped;
- ``sms``: long vowels single, geminates often single, ny for ഞ, l for ഴ at times, -u often dropped.
"""

from __future__ import annotations

import random

VIRAMA = "\u0d4d"
ZERO_WIDTH = {"\u200c", "\u200d"}
STYLES = ("careful", "casual", "sms")

VOWELS = {
    "അ": "a", "ആ": "aa", "ഇ": "i", "ഈ": "ee", "ഉ": "u", "ഊ": "oo", "ഋ": "ru", "എ": "e", "ഏ": "e",
    "ഐ": "ai", "ഒ": "o", "ഓ": "o", "ഔ": "au",
}
SIGNS = {
    "\u0d3e": "aa", "\u0d3f": "i", "\u0d40": "ee", "\u0d41": "u", "\u0d42": "oo", "\u0d43": "ru",
    "\u0d46": "e", "\u0d47": "e", "\u0d48": "ai", "\u0d4a": "o", "\u0d4b": "o", "\u0d4c": "au", "\u0d57": "au",
}
CONSONANTS = {
    "ക": "k", "ഖ": "kh", "ഗ": "g", "ഘ": "gh", "ങ": "ng", "ച": "ch", "ഛ": "chh", "ജ": "j", "ഝ": "jh",
    "ഞ": "nj", "ട": "t", "ഠ": "th", "ഡ": "d", "ഢ": "dh", "ണ": "n", "ത": "th", "ഥ": "th", "ദ": "d",
    "ധ": "dh", "ന": "n", "പ": "p", "ഫ": "f", "ബ": "b", "ഭ": "bh", "മ": "m", "യ": "y", "ര": "r",
    "റ": "r", "ല": "l", "ള": "l", "ഴ": "zh", "വ": "v", "ശ": "sh", "ഷ": "sh", "സ": "s", "ഹ": "h",
}
CHILLU = {"ൺ": "n", "ൻ": "n", "ർ": "r", "ൽ": "l", "ൾ": "l", "ൿ": "k", "ം": "m", "ഃ": "h"}
# Conjuncts whose reading is not the sum of their letters.
CLUSTERS = {
    ("ന", "റ"): "nt", ("റ", "റ"): "tt", ("ക", "ഷ"): "ksh", ("ങ", "ക"): "nk", ("ങ", "ങ"): "ng",
    ("ഞ", "ഞ"): "nj", ("ഞ", "ച"): "nch", ("ന", "ത"): "nth", ("ണ", "ട"): "nd", ("ത", "ത"): "tth",
    ("ച", "ച"): "cch", ("ന", "ദ"): "nd", ("മ", "പ"): "mb", ("ട", "ട"): "tt",
}


def _vowel(roman: str, style: str, rng: random.Random) -> str:
    if len(roman) == 2 and roman[0] == roman[1]:  # aa, ee, oo
        keep = {"careful": 0.9, "casual": 0.45, "sms": 0.15}[style]
        if rng.random() >= keep:
            return "i" if roman == "ee" else "u" if roman == "oo" else roman[0]
    return roman


def _cluster(letters: list[str], style: str, rng: random.Random) -> str:
    out: list[str] = []
    index = 0
    while index < len(letters):
        pair = tuple(letters[index:index + 2])
        if len(pair) == 2 and pair in CLUSTERS:
            roman = CLUSTERS[pair]  # type: ignore[index]
            index += 2
        elif len(pair) == 2 and pair[0] == pair[1]:
            single = CONSONANTS[pair[0]]
            keep = {"careful": 0.95, "casual": 0.7, "sms": 0.35}[style]
            roman = single + single[-1] if rng.random() < keep else single
            index += 2
        else:
            roman = CONSONANTS[letters[index]]
            if letters[index] == "ട" and rng.random() < 0.8:
                roman = "d"  # a lone retroflex t is voiced between vowels and typed d: "edukkum", "veedu"
            index += 1
        if roman == "tth" and rng.random() < {"careful": 0.3, "casual": 0.6, "sms": 0.8}[style]:
            roman = "th"
        if roman == "cch" and rng.random() < {"careful": 0.5, "casual": 0.7, "sms": 0.9}[style]:
            roman = "ch"
        out.append(roman)
    text = "".join(out)
    if "nj" in text and style == "sms" and rng.random() < 0.5:
        text = text.replace("nj", "ny")
    if "zh" in text and style != "careful" and rng.random() < 0.3:
        text = text.replace("zh", "l")
    return text


def transliterate(text: str, style: str, rng: random.Random) -> str:
    """``text`` with every Malayalam letter in Latin letters; everything else is kept as it is."""
    out: list[str] = []
    chars = [c for c in text if c not in ZERO_WIDTH]
    i = 0
    while i < len(chars):
        char = chars[i]
        if char in CONSONANTS:
            letters = [char]
            j = i + 1
            while j + 1 < len(chars) and chars[j] == VIRAMA and chars[j + 1] in CONSONANTS:
                letters.append(chars[j + 1])
                j += 2
            out.append(_cluster(letters, style, rng))
            if j < len(chars) and chars[j] in SIGNS:
                out.append(_vowel(SIGNS[chars[j]], style, rng))
                j += 1
            elif j < len(chars) and chars[j] == VIRAMA:
                # Word-final virama is the half-u (samvruthokaram): "undu", "und", "aanu", "aan".
                at_end = j + 1 >= len(chars) or not ("\u0d00" <= chars[j + 1] <= "\u0d7f")
                drop = {"careful": 0.1, "casual": 0.35, "sms": 0.6}[style]
                if at_end and rng.random() >= drop:
                    out.append("u")
                j += 1
            else:
                out.append("a")
            i = j
        elif char in VOWELS:
            out.append(_vowel(VOWELS[char], style, rng))
            i += 1
        elif char in CHILLU:
            out.append(CHILLU[char])
            i += 1
        elif char in SIGNS or char == VIRAMA:
            i += 1  # a sign without its consonant (typo in the source): nothing to read
        else:
            out.append(char)
            i += 1
    return "".join(out)
