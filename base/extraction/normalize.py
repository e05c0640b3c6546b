"""One spelling for text read out of documents, so that the same word always matches the same term.

Malayalam has two encodings of its chillu letters (the vowel-less final consonants of ൽ, ൻ, ർ, ൾ,
ൺ, ൿ): the atomic code points of Unicode 5.1 and the older consonant + virama + ZERO WIDTH JOINER
sequences. Tesseract, old fonts and many PDF producers emit the older form; people type the newer.
Both are rewritten to the atomic chillu, stray ZERO WIDTH JOINER / NON-JOINER characters after a
virama are dropped (they change how a word is drawn, not what it says), and the text is put in NFC.
"""

from __future__ import annotations

import re
import unicodedata

_VIRAMA = "\u0d4d"
_ZWJ, _ZWNJ = "\u200d", "\u200c"
# Consonant + virama + ZWJ -> the atomic chillu (Unicode 5.1, U+0D7A..U+0D7F).
_CHILLU = {
    "\u0d23": "\u0d7a",  # ണ -> ൺ
    "\u0d28": "\u0d7b",  # ന -> ൻ
    "\u0d30": "\u0d7c",  # ര -> ർ
    "\u0d32": "\u0d7d",  # ല -> ൽ
    "\u0d33": "\u0d7e",  # ള -> ൾ
    "\u0d15": "\u0d7f",  # ക -> ൿ
}
_OLD_CHILLU = re.compile("([" + "".join(_CHILLU) + "])" + _VIRAMA + _ZWJ)
_MALAYALAM = re.compile("[\u0d00-\u0d7f]")
_JOINER_AFTER_VIRAMA = re.compile(_VIRAMA + "[" + _ZWJ + _ZWNJ + "]")


def normalize_text(text: str) -> str:
    """``text`` with Malayalam chillus in their atomic form, joiners after viramas dropped, in NFC.
    Text without Malayalam comes back in NFC only."""
    text = unicodedata.normalize("NFC", text)
    if _MALAYALAM.search(text) is None:
        return text
    text = _OLD_CHILLU.sub(lambda match: _CHILLU[match.group(1)], text)
    return _JOINER_AFTER_VIRAMA.sub(_VIRAMA, text)
