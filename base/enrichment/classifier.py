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
    collapse_spaces,
    configured_path,
    hint_keys,
    load_rules,
    normalise,
)

__all__ = ["DEPARTMENTS_FILE_ENV", "HINT_KINDS", "Classification", "Classifier", "classify", "get_classifier"]

# What may match at one token: nothing; one single-word rule that surely does; or (phrase and word
# rules whose first word it is, longest first; the stem rule it starts with).
_Starts = Rule | tuple[tuple[Rule, ...], Rule | None] | None
_Weights = tuple[tuple[str, float], ...]


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

    def classify(self, text: str, hints: Mapping[str, str] | None = None) -> Classification:
        """The department of ``text`` given the source ``hints`` (keys as in HINT_KINDS; others ignored).

        Confidence is the winner's share of all points times how strong its score is on its own
        (``score / (score + half_confidence_score)``): 0 with nothing matched, near 1 only for much
        unopposed evidence.
        """
        scores: dict[str, float] = {}
        evidence: dict[str, list[tuple[float, str]]] = {}
        matches = self._hint_matches(hints or {})
        if text:
            matches += [(rule.label, rule.weights) for rule in self._keyword_matches(normalise(text[: self.max_chars]))]
        for label, weights in matches:
            for department, weight in weights:
                scores[department] = scores.get(department, 0.0) + weight
                evidence.setdefault(department, []).append((weight, label))
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
        # A document repeats its words: what can start at each distinct token is worked out once
        # per call. Most tokens start nothing; many start exactly one single-word rule.
        starts: dict[str, _Starts] = {}
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
        pattern = self.rules.malayalam_pattern
        if pattern is not None and MALAYALAM.search(text):
            for match in pattern.finditer(text):
                rule = self.rules.malayalam[collapse_spaces(match.group())]
                found.setdefault(rule.label, rule)
        return list(found.values())

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
