"""Malayalam department terms: which written words count as a term, respecting word boundaries and endings.

Malayalam glues case endings, plurals and postpositions onto a word (ശമ്പളം, ശമ്പളത്തിന്റെ,
ശമ്പളവും), so a term cannot be matched as a whole word; but matching it anywhere inside a word
finds it inside unrelated longer words (വൈകി "late" inside വൈകിട്ട് "evening", യോഗം "meeting"
inside ഉപയോഗം "use"). A term here is matched at the start of a word, and what follows it must
begin the way a Malayalam ending begins after that kind of word end:

- a word ending in a virama or a chillu (ബ്രേക്ക്, തകരാർ, ബിൽ): the word itself, a vowel sign in
  place of the virama (ബ്രേക്കിൽ, തകരാറിൽ: ർ may come back as ര or റ; ബില്ലുകൾ once doubled
  consonants are read as one), or the personal plural -മാർ (ടെക്നീഷ്യന്മാർ);
- a word ending in ം (ശമ്പളം): ം, or -ത്ത-, -ങ്ങ-, -മാ-, -മോ-, -മെ-, -മി-, -വു- (ശമ്പളത്തിന്റെ,
  ശമ്പളങ്ങൾ, ശമ്പളവും);
- a word ending in a vowel (വൈകി, അവധി, സുരക്ഷ): nothing, the glide യ (വൈകിയ, അവധിയിൽ) or വ with
  its vowel (ഗഡുവായി), the dative -ക്ക്/-ക്കു or the plural -കൾ, and after a bare consonant the long
  ാ of a compound's first part (സുരക്ഷാ); so വൈകിട്ട്, where ട follows, is a different word.

A known limit: after a virama or chillu any vowel sign is taken for an ending, so a rare unrelated
word that continues the term with a vowel sign matches it.

Operators may loosen a term in config/departments.toml: ``stem*`` runs on into anything after it
(ശമ്പള* also matches ശമ്പളസ്കെയിൽ), and a leading ``*`` lets it close a compound as well
(``*സുരക്ഷ`` matches അഗ്നിസുരക്ഷ). A term of several words matches those words in a row, each
with its endings.

Every string here is in the canonical form of ``canonical_malayalam``: chillus written as
consonant + virama, so text typed with atomic chillus (ർ), with legacy joiners (ര്‍) or with
none (ര്, common in older web pages) reads the same; doubled consonants written once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VIRAMA = "\u0d4d"
ANUSVARA = "\u0d02"
#: Chillu letters (and the dot reph) and the consonant + virama each stands for.
CHILLU = {
    "\u0d7a": "\u0d23\u0d4d",  # ൺ -> ണ്
    "\u0d7b": "\u0d28\u0d4d",  # ൻ -> ന്
    "\u0d7c": "\u0d30\u0d4d",  # ർ -> ര്
    "\u0d7d": "\u0d32\u0d4d",  # ൽ -> ല്
    "\u0d7e": "\u0d33\u0d4d",  # ൾ -> ള്
    "\u0d7f": "\u0d15\u0d4d",  # ൿ -> ക്
    "\u0d4e": "\u0d30\u0d4d",  # ൎ (dot reph, old orthography) -> ര്
}
_CHILLU_RE = re.compile("[" + "".join(CHILLU) + "]")
# A doubled consonant (പ്പ) read as one: spellings differ in gemination (വായ്പ / വായ്പ്പ,
# നിർമാണം / നിർമ്മാണം), and the doubled oblique -ത്ത- and dative -ക്ക- need not be told apart.
_GEMINATE = re.compile("([\u0d15-\u0d39])\u0d4d\\1")
_AU_SIGN, _AU_LENGTH = "\u0d4c", "\u0d57"  # ൌ (older) and ൗ (modern) spell the same vowel sign
#: A run of Malayalam letters and signs: one Malayalam word of normalised text.
MALAYALAM_WORD = re.compile(r"[\u0d00-\u0d7f]+")
_VOWEL_SIGNS = frozenset(chr(code) for code in [*range(0x0D3E, 0x0D45), 0x0D46, 0x0D47, 0x0D48, 0x0D4A, 0x0D4B,
                                                0x0D4C, 0x0D57, 0x0D62, 0x0D63])
_CONSONANTS = frozenset(chr(code) for code in range(0x0D15, 0x0D3A))
_RA, _RRA = "\u0d30", "\u0d31"
# How a word ending in ം may continue: oblique -ത്ത-, plural -ങ്ങ-, and -മ-/-വ- before a vowel.
_ANUSVARA_ENDINGS = ("\u0d02", "ത", "ങ", "മാ", "മോ", "മെ", "മി", "വു")
# How a word ending in a vowel may continue without a glide: dative -ക്ക്/-ക്കു and plural -കൾ
# (geminates already read as one consonant).
_VOWEL_ENDING = "ക"
# The glide that joins an ending to a vowel end: യ (വൈകിയ, അവധിയിൽ), or വ with its vowel after u/o
# (ഗഡുവായി); വ then a virama (പിഴവ്, "error", after പിഴ "fine") is another word.
_Y_GLIDE, _V_GLIDE = "യ", "വ"
_PERSONAL_PLURAL = VIRAMA + "മാ"


def canonical_malayalam(text: str) -> str:
    """``text`` with each chillu (and dot reph) written as consonant + virama, doubled consonants
    written once, one spelling of the au sign, and no doubled virama.

    Callers have already removed zero-width joiners, which makes legacy chillus (ന്‍) plain
    consonant + virama too. The result is only for matching, never for display."""
    if _CHILLU_RE.search(text):
        text = _CHILLU_RE.sub(lambda match: CHILLU[match.group()], text)
    text = text.replace(VIRAMA + VIRAMA, VIRAMA).replace(_AU_SIGN, _AU_LENGTH)
    return _GEMINATE.sub(r"\1", text)


@dataclass(frozen=True)
class MalayalamTerm:
    """How one written Malayalam word of a term is matched (all strings canonical).

    ``base`` is what a matching word starts with (the term without its closing virama or ം);
    ``alternates`` are other spellings of the base before an ending (ർ's ര coming back as റ).
    """

    written: str
    base: str
    alternates: tuple[str, ...]
    ending: str  # "virama" | "anusvara" | "vowel" | "consonant" (bare, inherent a) | "any"

    def matches(self, word: str, start: int = 0) -> bool:
        """Whether ``word`` from ``start`` on is this term with an allowed ending."""
        for base in (self.base, *self.alternates):
            if word.startswith(base, start) and self._ending_allowed(word[start + len(base):]):
                return True
        return False

    def _ending_allowed(self, rest: str) -> bool:
        if self.ending == "any" or not rest:
            return True
        if self.ending == "virama":
            return rest == VIRAMA or rest[0] in _VOWEL_SIGNS or rest.startswith(_PERSONAL_PLURAL)
        if self.ending == "anusvara":
            return rest.startswith(_ANUSVARA_ENDINGS)
        # A vowel end: a glide and its vowel, the dative or plural, or (bare consonant) a compound's ാ.
        if rest[0] == _Y_GLIDE or (rest[0] == _V_GLIDE and len(rest) > 1 and rest[1] in _VOWEL_SIGNS):
            return True
        if rest[0] == _VOWEL_ENDING:
            return True
        return self.ending == "consonant" and rest[0] == "\u0d3e"


def parse_term_word(word: str, *, runs_on: bool) -> MalayalamTerm:
    """The matcher for one canonical Malayalam word of a term (``runs_on``: written with a trailing ``*``)."""
    if runs_on:
        return MalayalamTerm(word, word, (), "any")
    if word.endswith(VIRAMA) and len(word) > 1:
        base = word[:-1]
        alternates = (base[:-1] + _RRA,) if base.endswith(_RA) else ()
        return MalayalamTerm(word, base, alternates, "virama")
    if word.endswith(ANUSVARA) and len(word) > 1:
        return MalayalamTerm(word, word[:-1], (), "anusvara")
    if word[-1] in _CONSONANTS:
        return MalayalamTerm(word, word, (), "consonant")
    return MalayalamTerm(word, word, (), "vowel")
