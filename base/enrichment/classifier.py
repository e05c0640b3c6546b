"""Department of a document, from weighted keywords and source hints (rules in config/departments.toml).

``classify(text, hints)`` adds up, per department, the weights of the distinct terms found in the
text and of the source hints that point to it (Maximo work type, mailbox, sender, SharePoint site or
library, WhatsApp number); the highest score wins. The answer carries the terms that won it, e.g.
``["hint:worktype=PM", "keyword:pantograph"]``, so a person can see why. With nothing matched the
document goes to the configured default department with confidence 0.

Latin terms match whole words (found by a tokeniser and dict look-ups, so the cost does not grow
with the number of rules); Malayalam terms match inside words (one regex), because Malayalam glues
endings and compounds onto its stems. Reading the rules file lives in base/enrichment/department_rules.py.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from base.enrichment.department_rules import (
    DEPARTMENTS_FILE_ENV,
    HINT_KINDS,
    MALAYALAM,
    WORD,
    Rule,
    configured_path,
    hint_keys,
    load_rules,
    normalise,
)
from base.enrichment.malayalam_terms import MALAYALAM_WORD

__all__ = ["DEPARTMENTS_FILE_ENV", "HINT_KINDS", "Classification", "Classifier", "classify", "get_classifier"]

# What may match at one token: nothing; one single-word rule that surely does; or (phrase and word
# rules whose first word it is, longest first; the stem rule it starts with).
_Starts = Rule | tuple[tuple[Rule, ...], Rule | None] | None
_Weights = tuple[tuple[str, float], ...]
#: Distinct words (per script) whose rule look-up is kept between calls; past it the memo starts over.
WORD_CACHE_SIZE = 100_000  # words


@dataclass(frozen=True)
class Classification:
    """A department, a confidence in [0, 1], and the terms and hints that chose it (strongest first)."""

    department: str
    confidence: float
    matched_terms: list[str] = field(default_factory=list)


class Classifier:
    """Department rules loaded from a TOML file; ``classify`` is thread-safe.

    Parameters:
        path: the rules file (default: DEPARTMENTS_FILE, else config/departments.toml). Raises
            ConfigError naming the file and the entry when it is missing or malformed.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.rules = load_rules(Path(path) if path is not None else configured_path())
        self.path = self.rules.path
        self.departments = self.rules.departments
        self.default_department = self.rules.default_department
        self.max_chars = self.rules.max_chars
        self._order = {name: index for index, name in enumerate(self.departments)}
        # What each word seen so far can start (see _keyword_matches); bounded by WORD_CACHE_SIZE.
        self._latin_starts: dict[str, _Starts] = {}
        self._malayalam_words: dict[str, tuple[tuple[Rule, ...], tuple[Rule, ...]]] = {}

    def classify(self, text: str, hints: Mapping[str, str] | None = None) -> Classification:
        """The department of ``text`` given the source ``hints`` (keys as in HINT_KINDS; others ignored).

        Content and hints are added up per department, but hints give way as the content speaks:
        they count in full while the text's terms score at most ``content_enough_score`` points in
        all, and beyond that in proportion (``content_enough_score / content points``), so a folder
        name decides a title or an empty body but not a document that says what it is.

        Confidence is the winner's share of all points times how strong its score is on its own
        (``score / (score + half_confidence_score)``): 0 with nothing matched, near 1 only for much
        unopposed evidence.
        """
        rules = self._keyword_matches(normalise(text[: self.max_chars])) if text else []
        content = [(rule.label, rule.weights) for rule in rules]
        hinted = self._hint_matches(hints or {})
        content_points = sum(weight for _, weights in content for _, weight in weights)
        enough = self.rules.content_enough_score
        hint_factor = 1.0 if content_points <= enough else enough / content_points
        scores: dict[str, float] = {}
        evidence: dict[str, list[tuple[float, str]]] = {}
        for matches, factor in ((hinted, hint_factor), (content, 1.0)):
            for label, weights in matches:
                for department, weight in weights:
                    scores[department] = scores.get(department, 0.0) + weight * factor
                    evidence.setdefault(department, []).append((weight * factor, label))
        if not scores:
            return Classification(self.default_department, 0.0, [])
        department = max(scores, key=lambda name: (scores[name], -self._order[name]))
        top = scores[department]
        share = top / sum(scores.values())
        confidence = round(share * top / (top + self.rules.half_confidence_score), 3)
        terms = [label for _, label in sorted(evidence[department], key=lambda item: -item[0])]
        return Classification(department, confidence, terms)

    def _keyword_matches(self, text: str) -> list[Rule]:
        """Distinct rules found in normalised ``text``, in order of first appearance."""
        found: dict[str, Rule] = {}
        tokens = WORD.findall(text)
        # Documents repeat their words and share most of them: what can start at a distinct token is
        # worked out once and kept. Most tokens start nothing; many start exactly one word rule.
        starts = self._latin_starts
        if len(starts) > WORD_CACHE_SIZE:
            starts.clear()
        position, count = 0, len(tokens)
        while position < count:
            token = tokens[position]
            if token in starts:
                candidates = starts[token]
            else:
                candidates = starts[token] = self._rules_starting_with(token)
            if candidates is None:
                position += 1
                continue
            if isinstance(candidates, Rule):
                rule = candidates
            else:
                phrases, stem = candidates
                matched = next((phrase for phrase in phrases if _words_match(phrase, tokens, position)), stem)
                if matched is None:
                    position += 1
                    continue
                rule = matched
            if rule.label not in found:
                found[rule.label] = rule
            position += len(rule.words)
        if MALAYALAM.search(text):
            for rule in self._malayalam_matches(MALAYALAM_WORD.findall(text)):
                found.setdefault(rule.label, rule)
        return list(found.values())

    def _malayalam_matches(self, words: list[str]) -> list[Rule]:
        """Malayalam rules found in a text's Malayalam words (see base/enrichment/malayalam_terms.py)."""
        found: list[Rule] = []
        known = self._malayalam_words
        if len(known) > WORD_CACHE_SIZE:
            known.clear()
        position, count = 0, len(words)
        while position < count:
            word = words[position]
            analysis = known.get(word)
            if analysis is None:
                analysis = known[word] = (self._malayalam_rules_starting(word), self._compounds_closed(word))
            heads, tails = analysis
            found += tails
            rule = next((rule for rule in heads if _malayalam_words_match(rule, words, position)), None)
            if rule is None:
                position += 1
                continue
            found.append(rule)
            position += len(rule.words)
        return found

    def _compounds_closed(self, word: str) -> tuple[Rule, ...]:
        """Single-word may-close-a-compound rules found after the start of ``word``."""
        return tuple(
            rule for rule in self.rules.malayalam_tails if len(rule.words) == 1 and _closes_compound(rule, word)
        )

    def _malayalam_rules_starting(self, word: str) -> tuple[Rule, ...]:
        """Rules whose first word ``word`` may be, longest rule then longest base first."""
        table = self.rules.malayalam_heads
        candidates: list[Rule] = []
        for length in range(min(len(word), self.rules.malayalam_longest_base), 0, -1):
            for rule in table.get(word[:length], ()):
                if rule.malayalam[0].matches(word):
                    candidates.append(rule)
        candidates.sort(key=lambda rule: -len(rule.words))  # stable: longer bases stay first among equals
        return tuple(candidates)

    def _rules_starting_with(self, token: str) -> _Starts:
        phrases = self.rules.phrases.get(token, ())
        stem = self._stem_rule(token)
        if not phrases:
            return stem
        if len(phrases[0].words) == 1:
            return phrases[0]  # an exact word, and no longer phrase to prefer
        return phrases, stem

    def _stem_rule(self, token: str) -> Rule | None:
        """The rule of the longest stem ("invoice*") that ``token`` starts with, if any."""
        for rule in self.rules.stems.get(token[: self.rules.stem_key_length], ()):
            if token.startswith(rule.words[0]):
                return rule
        return None

    def _hint_matches(self, hints: Mapping[str, str]) -> list[tuple[str, _Weights]]:
        """(label, department weights) of each hint a rule knows."""
        matches: list[tuple[str, _Weights]] = []
        for kind, raw in hints.items():
            table = self.rules.hints.get(kind)
            if table is None or not raw:
                continue
            for key in hint_keys(kind, str(raw)):
                if key in table:
                    matches.append((f"hint:{kind}={str(raw).strip()}", (table[key],)))
                    break
        if "sender_domain" not in hints and "@" in hints.get("sender", ""):
            # Connectors that only know the From address still get the domain rules.
            domain = hint_keys("sender", hints["sender"])[0].rpartition("@")[2]
            table = self.rules.hints.get("sender_domain", {})
            for key in hint_keys("sender_domain", domain):
                if key in table:
                    matches.append((f"hint:sender_domain={domain}", (table[key],)))
                    break
        return matches


def _malayalam_words_match(rule: Rule, words: list[str], position: int) -> bool:
    """Whether ``rule``'s words are the Malayalam words from ``position`` on (its first already is)."""
    if position + len(rule.words) > len(words):
        return False
    return all(term.matches(words[position + offset]) for offset, term in enumerate(rule.malayalam) if offset)


def _closes_compound(rule: Rule, word: str) -> bool:
    """Whether a may-close-a-compound rule's word appears after the start of ``word``, with its ending."""
    term = rule.malayalam[0]
    for base in (term.base, *term.alternates):
        start = word.find(base, 1)
        while start > 0:
            if term.matches(word, start):
                return True
            start = word.find(base, start + 1)
    return False


def _words_match(rule: Rule, tokens: list[str], position: int) -> bool:
    """Whether ``rule``'s words are the tokens from ``position`` on (its first word already is)."""
    words = rule.words
    if position + len(words) > len(tokens):
        return False
    last = len(words) - 1
    for offset in range(1, len(words)):
        token = tokens[position + offset]
        if token != words[offset] and not (rule.prefix and offset == last and token.startswith(words[offset])):
            return False
    return True


@lru_cache(maxsize=4)
def get_classifier(path: str | None = None) -> Classifier:
    """The process's classifier for a rules file, built on first use and then shared.

    ``path`` None (or empty) means DEPARTMENTS_FILE from the environment, else
    config/departments.toml; pass ``Settings.departments_file`` when settings come from a ``.env``
    file that is not in the environment. ``get_classifier.cache_clear()`` makes the next call read
    the file again.
    """
    return Classifier(path or None)


def classify(text: str, hints: Mapping[str, str] | None = None) -> Classification:
    """``get_classifier().classify(text, hints)``."""
    return get_classifier().classify(text, hints)
