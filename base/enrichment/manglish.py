"""Malayalam typed in Latin letters ("Manglish", as field staff write on WhatsApp): is a Latin text one?

Two kinds of evidence, both cheap:
- a lexicon: very frequent Manglish words (njan, ente, illa, aanu, undu, innu, naale, ...) and verb and
  case endings (-unnu, -unnilla, -ittundu, -anam, -inte, -ilekku, ...) counted per word;
- a character n-gram model (naive Bayes over 1- to 3-grams of padded words, as langdetect reads text):
  the average log-ratio of Manglish against English and against other Latin-script languages, from
  ``manglish_ngrams.json`` (made by tests/data/language/train_manglish.py from the tuning half of the
  labelled set and langdetect's own profiles).

A text is Manglish when its n-grams are more Manglish than English and than the other languages by a
margin and the lexicon agrees; the margins were chosen on the tuning half (see MIN_* below).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

#: The n-gram model beside this module.
MODEL_PATH = Path(__file__).with_name("manglish_ngrams.json")
#: Characters of a text the n-gram model reads at most; its answer settles well before this.
MAX_SCORED_CHARS = 600
#: Distinct words whose n-gram scores are kept (about 200 bytes each).
WORD_CACHE_SIZE = 65_536
#: Fewest words for any answer: one or two words are too few to tell Manglish from a name or a code.
MIN_WORDS = 2
#: Average n-gram log-ratio of Manglish over English and over the other Latin-script languages (nats per
#: n-gram) from which the n-grams alone call a text Manglish. On the tuning half no English text scored
#: above 0.0 against English and no other language above -0.18 against the others.
MIN_VS_ENGLISH = 0.3
MIN_VS_OTHER = 0.2
#: Lower margins that suffice when the lexicon agrees: Manglish full of English nouns ("report submit
#: cheythittundu") reads half English by its n-grams.
MIN_VS_ENGLISH_WITH_MARKERS = 0.0
MIN_VS_OTHER_WITH_MARKERS = 0.05
#: Share of words that must be Manglish function words or carry a Manglish ending for the lower margins.
MIN_MARKER_SHARE = 0.12

# Very frequent Manglish words, in the spellings people type (njan/nyan/ngan, aanu/anu, illa/ila).
# Words that are also common English or Indonesian/Tagalog/Finnish words are left out ('ini', 'ang',
# 'on', 'ja', 'mana', 'sir', 'one'); the postpositions typed apart ('il', 'nu', 'ne') are shared with
# Italian or French, which the n-gram margin against the other languages keeps apart.
MARKER_WORDS = frozenset(
    str.split(
        """njan nyan ngan njaan nan ente nte ninte ningal ningalude ningalu njangal njangalude nammal nammude namukku
    enikku enik avan aval avar avaru avante avalude avarude ivide evide avide evideya ividey enthu entha enth
    enthanu enthina enthaa ethra eppo eppol eppozha alle alla illa ila illaa illallo undu und undo undallo
    aanu anu aan aano ano aanallo aayi ayi aayo ayo aakum akum aayirunnu ayirunnu aavum ippo ipo ippol ippozhum
    innu inn naale nale innale pinne athu ithu atho itho onnum ellam ellavarum ellarum kure nalla sheri shari
    seri mathi venam venda vendi vannu poyi varum pokum varam pokam kitti kittum kittiyilla kittiyo paranju
    parayu parayam cheyyanam cheyanam cheythu cheithu cheyyu cheyu cheyyam cheyam thanne onnu randu moonnu
    manikku maniku il ilu nu inu ku kku ne ye ennu enna ennal enkil pakshe karanam kaaranam vare muthal kondu
    koode ille ivan oru ee aa chetta chechi saare saar sarinu aarum aarenkilum arenkilum entho enthokke"""
    )
)
# Endings of Malayalam verbs and nouns as typed in Latin letters: present (-unnu), negative (-unnilla,
# -illa), perfect (-ittundu), obligation (-anam), genitive (-inte, -nte), dative (-ikku, -kku), locative
# (-ilekku, -il is too English: 'until', 'council').
_MARKER_ENDING = re.compile(
    r"(?:unnu|unnilla|unnila|unnund|unnundu|ittundu|ittund|ittilla|ittila|illa|anam|enam|kkanam|inte|ilekku|ikku|"
    r"aakum|akkum|ikkum|ukkum|aayi|aanu|irunnu|uvan|aanam|aamo|illallo|ittu|ichu|umo)$"
)
_WORD = re.compile(r"[a-z]+")
# Malayalam romanised with diacritics (ISO 15919 and its kin: ādāyaṁ, kēraḷaṁ, paṭṭika) read as the same
# letters typed plainly; these marks are rare in the European languages the model tells Manglish from.
_PLAIN_LETTERS = str.maketrans(
    "āīūēōṭḍṇḷḻṣśṛṟṉṁṃñṅĀĪŪĒŌṬḌṆḶḺṢŚṚṞṈṀṂṄ",
    "aiueotdnllssrrnmmnnAIUEOTDNLLSSRRNMMN",
)


@dataclass(frozen=True)
class ManglishEvidence:
    """What the detector saw: ``words`` read, ``markers`` among them (lexicon words or endings), and
    the average n-gram log-ratio of Manglish over English (``vs_english``) and over other Latin-script
    languages (``vs_other``), in nats per n-gram (positive: more Manglish)."""

    words: int
    markers: int
    vs_english: float
    vs_other: float

    @property
    def other_over_english(self) -> float:
        """Average n-gram log-ratio of the other Latin-script languages over English (positive: less
        English); a by-product of the two ratios above."""
        return self.vs_english - self.vs_other

    @property
    def is_manglish(self) -> bool:
        if self.words < MIN_WORDS:
            return False
        if self.vs_english >= MIN_VS_ENGLISH and self.vs_other >= MIN_VS_OTHER:
            return True
        return (
            self.markers >= max(1.0, MIN_MARKER_SHARE * self.words)
            and self.vs_english >= MIN_VS_ENGLISH_WITH_MARKERS
            and self.vs_other >= MIN_VS_OTHER_WITH_MARKERS
        )


@lru_cache(maxsize=1)
def _model() -> dict[str, tuple[float, float]]:
    data = json.loads(MODEL_PATH.read_text(encoding="utf-8"))
    return {gram: (float(pair[0]), float(pair[1])) for gram, pair in data["ngrams"].items()}


def is_marker(word: str) -> bool:
    """Whether a lower-case ASCII word is a Manglish function word or carries a Manglish ending."""
    return word in MARKER_WORDS or (len(word) >= 5 and _MARKER_ENDING.search(word) is not None)


@lru_cache(maxsize=WORD_CACHE_SIZE)
def _word_score(word: str) -> tuple[int, int, float, float]:
    """(1 if a marker else 0, n-grams, summed log-ratio against English, against the others) of one
    lower-case word; cached, because a document repeats its words."""
    model = _model()
    padded = f" {word} "
    grams = 0
    vs_english = vs_other = 0.0
    for n in (1, 2, 3):
        for start in range(len(padded) - n + 1):
            pair = model.get(padded[start:start + n])
            grams += 1
            if pair is not None:
                vs_english += pair[0]
                vs_other += pair[1]
    return int(is_marker(word)), grams, vs_english, vs_other


def evidence(text: str) -> ManglishEvidence:
    """The lexicon and n-gram evidence for ``text`` (only its first MAX_SCORED_CHARS characters are read)."""
    words = markers = grams = 0
    vs_english = vs_other = 0.0
    head = text[:MAX_SCORED_CHARS]
    if not head.isascii():
        head = head.translate(_PLAIN_LETTERS)
    for word in _WORD.findall(head.lower()):
        marker, word_grams, word_english, word_other = _word_score(word)
        words += 1
        markers += marker
        grams += word_grams
        vs_english += word_english
        vs_other += word_other
    if not grams:
        return ManglishEvidence(0, 0, 0.0, 0.0)
    return ManglishEvidence(words, markers, vs_english / grams, vs_other / grams)


def is_manglish(text: str) -> bool:
    """Whether a Latin-script ``text`` is Malayalam typed in Latin letters."""
    return evidence(text).is_manglish
