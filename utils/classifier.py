"""Department of a document, from weighted keywords and source hints (rules in config/departments.toml).

``classify(text, hints)`` adds up, per department, the weights of the distinct terms found in the
text and of the source hints that point to it (Maximo work type, mailbox, sender, SharePoint site or
library, WhatsApp number); the highest score wins. The answer carries the terms that won it, e.g.
``["hint:worktype=PM", "keyword:pantograph"]``, so a person can see why. With nothing matched the
document goes to the configured default department with confidence 0.

Latin terms match whole words (found by a tokeniser and dict look-ups, so the cost does not grow
with the number of rules); Malayalam terms match inside words (one regex), because Malayalam glues
endings and compounds onto its stems. The rules file format is described at its top.
"""

from __future__ import annotations

import os
import re
import tomllib
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from utils.errors import ConfigError

#: Environment variable naming the rules file (read once per process, by ``get_classifier``).
DEPARTMENTS_FILE_ENV = "DEPARTMENTS_FILE"
#: The rules file used when DEPARTMENTS_FILE is unset.
DEFAULT_DEPARTMENTS_FILE = Path(__file__).resolve().parent.parent / "config" / "departments.toml"
#: Hint keys a connector may pass; a rules file naming any other kind is refused (a typo would
#: otherwise silently disable a hint).
HINT_KINDS = ("worktype", "mailbox", "sender", "sender_domain", "site", "library", "phone")
#: Defaults for the [classifier] table.
DEFAULT_HALF_CONFIDENCE_SCORE = 4.0  # score points
DEFAULT_MAX_CHARS = 20_000  # characters

_WORD = re.compile(r"[a-z0-9]+")
_MALAYALAM = re.compile(r"[\u0d00-\u0d7f]")
_VIRAMA = "\u0d4d"
_ZWJ, _ZWNJ = "\u200d", "\u200c"
# Older Malayalam input methods write a chillu as consonant + virama + ZWJ; Unicode 5.1 added one
# code point for each, and NFC does not map one to the other.
_LEGACY_CHILLU = {
    "\u0d23\u0d4d\u200d": "\u0d7a",  # ണ്‍ -> ൺ
    "\u0d28\u0d4d\u200d": "\u0d7b",  # ന്‍ -> ൻ
    "\u0d30\u0d4d\u200d": "\u0d7c",  # ര്‍ -> ർ
    "\u0d32\u0d4d\u200d": "\u0d7d",  # ല്‍ -> ൽ
    "\u0d33\u0d4d\u200d": "\u0d7e",  # ള്‍ -> ൾ
    "\u0d15\u0d4d\u200d": "\u0d7f",  # ക്‍ -> ൿ
}
_LEGACY_CHILLU_RE = re.compile("|".join(_LEGACY_CHILLU))
# Characters that change a word's code points but not its letters: joiners and the soft hyphen.
_INVISIBLE = str.maketrans("", "", _ZWJ + _ZWNJ + "\u00ad")


@dataclass(frozen=True)
class Classification:
    """A department, a confidence in [0, 1], and the terms and hints that chose it (strongest first)."""

    department: str
    confidence: float
    matched_terms: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Rule:
    """One keyword or phrase and what it is worth to each department that lists it."""

    label: str
    words: tuple[str, ...]
    prefix: bool  # the last word may run on ("invoice*")
    weights: tuple[tuple[str, float], ...]


def normalise(text: str) -> str:
    """The form both rules and texts are matched in: NFC, case-folded, atomic chillus, no joiners."""
    text = unicodedata.normalize("NFC", text)
    if _ZWJ in text:
        text = _LEGACY_CHILLU_RE.sub(lambda match: _LEGACY_CHILLU[match.group()], text)
    return text.translate(_INVISIBLE).casefold()


class Classifier:
    """Department rules loaded from a TOML file; ``classify`` is thread-safe and allocation-light.

    Parameters:
        path: the rules file (default: DEPARTMENTS_FILE, else config/departments.toml). Raises
            ConfigError naming the file and the entry when it is missing or malformed.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else _configured_path()
        config = _load(self.path)
        settings = config.get("classifier", {})
        self.departments: tuple[str, ...] = tuple(_table(config, "departments", self.path))
        if not self.departments:
            raise ConfigError(f"{self.path}: no [departments.<name>] tables")
        self.default_department = str(settings.get("default_department", self.departments[0]))
        if self.default_department not in self.departments:
            raise ConfigError(f"{self.path}: default_department {self.default_department!r} is not a department")
        self.half_confidence_score = _positive(
            settings, "half_confidence_score", DEFAULT_HALF_CONFIDENCE_SCORE, self.path
        )
        self.max_chars = int(_positive(settings, "max_chars", DEFAULT_MAX_CHARS, self.path))
        self._order = {name: index for index, name in enumerate(self.departments)}
        self._latin_first: dict[str, list[_Rule]] = {}
        self._latin_stems: dict[str, _Rule] = {}
        self._malayalam: dict[str, _Rule] = {}
        self._build_keywords(config["departments"])
        self._malayalam_re = (
            re.compile("|".join(_malayalam_pattern(term) for term in sorted(self._malayalam, key=len, reverse=True)))
            if self._malayalam
            else None
        )
        self._stem_lengths = sorted({len(stem) for stem in self._latin_stems}, reverse=True)
        self._hints = self._build_hints(config.get("hints", {}))

    def classify(self, text: str, hints: Mapping[str, str] | None = None) -> Classification:
        """The department of ``text`` given the source ``hints`` (keys as in HINT_KINDS; others ignored)."""
        scores: dict[str, float] = {}
        evidence: dict[str, list[tuple[float, str]]] = {}

        def credit(weights: Iterable[tuple[str, float]], label: str) -> None:
            for department, weight in weights:
                scores[department] = scores.get(department, 0.0) + weight
                evidence.setdefault(department, []).append((weight, label))

        for label, weights in self._hint_matches(hints or {}):
            credit(weights, label)
        if text:
            for rule in self._keyword_matches(normalise(text[: self.max_chars])):
                credit(rule.weights, rule.label)
        if not scores:
            return Classification(self.default_department, 0.0, [])
        department = max(scores, key=lambda name: (scores[name], -self._order[name]))
        top = scores[department]
        share = top / sum(scores.values())
        confidence = round(share * top / (top + self.half_confidence_score), 3)
        terms = [label for _, label in sorted(evidence[department], key=lambda item: -item[0])]
        return Classification(department, confidence, terms)

    # -- matching ----------------------------------------------------------------------------------

    def _keyword_matches(self, text: str) -> list[_Rule]:
        """Distinct rules found in normalised ``text``, in order of first appearance."""
        found: dict[str, _Rule] = {}
        tokens = _WORD.findall(text)
        position = 0
        while position < len(tokens):
            rule = self._latin_at(tokens, position)
            if rule is None:
                position += 1
                continue
            found.setdefault(rule.label, rule)
            position += len(rule.words)
        if self._malayalam_re is not None and _MALAYALAM.search(text):
            for match in self._malayalam_re.finditer(text):
                rule = self._malayalam[_collapse_spaces(match.group())]
                found.setdefault(rule.label, rule)
        return list(found.values())

    def _latin_at(self, tokens: list[str], position: int) -> _Rule | None:
        """The longest rule starting at ``tokens[position]``, if any."""
        token = tokens[position]
        for rule in self._latin_first.get(token, ()):
            end = position + len(rule.words)
            if end <= len(tokens) and _words_match(rule, tokens, position):
                return rule
        for length in self._stem_lengths:
            if length <= len(token):
                stem_rule = self._latin_stems.get(token[:length])
                if stem_rule is not None:
                    return stem_rule
        return None

    def _hint_matches(self, hints: Mapping[str, str]) -> list[tuple[str, tuple[tuple[str, float], ...]]]:
        """(label, department weights) of each hint that a rule knows; a domain also by its parents."""
        matches: list[tuple[str, tuple[tuple[str, float], ...]]] = []
        for kind, raw in hints.items():
            table = self._hints.get(kind)
            if table is None or not raw:
                continue
            for key in _hint_keys(kind, str(raw)):
                if key in table:
                    matches.append((f"hint:{kind}={str(raw).strip()}", (table[key],)))
                    break
        if "sender_domain" not in hints and "@" in hints.get("sender", ""):
            # Connectors that only know the From address still get the domain rules.
            domain = _hint_keys("sender", hints["sender"])[0].rpartition("@")[2]
            table = self._hints.get("sender_domain", {})
            for key in _hint_keys("sender_domain", domain):
                if key in table:
                    matches.append((f"hint:sender_domain={domain}", (table[key],)))
                    break
        return matches

    # -- loading -----------------------------------------------------------------------------------

    def _build_keywords(self, departments: Mapping[str, Any]) -> None:
        # Terms are merged by their normalised form, so "top-up" and "top up" are one rule.
        merged: dict[tuple[tuple[str, ...], bool], tuple[str, dict[str, float]]] = {}
        for department, body in departments.items():
            keywords = body.get("keywords") if isinstance(body, dict) else None
            if not isinstance(keywords, dict) or not keywords:
                raise ConfigError(f"{self.path}: [departments.{department}.keywords] is missing or empty")
            for term, weight in keywords.items():
                if not isinstance(weight, int | float) or isinstance(weight, bool) or weight <= 0:
                    raise ConfigError(f"{self.path}: weight of {term!r} in {department} must be a positive number")
                key = self._rule_key(term)
                label, weights = merged.setdefault(key, ("keyword:" + term.rstrip("*").strip(), {}))
                if department in weights:
                    raise ConfigError(f"{self.path}: {term!r} is listed twice in {department} (after normalising)")
                weights[department] = float(weight)
        for (words, prefix), (label, weights) in merged.items():
            rule = _Rule(label, words, prefix, tuple(weights.items()))
            if _MALAYALAM.search(words[0]):
                self._malayalam[words[0]] = rule
            elif prefix and len(words) == 1:
                self._latin_stems[words[0]] = rule
            else:
                self._latin_first.setdefault(words[0], []).append(rule)
        for rules in self._latin_first.values():
            rules.sort(key=lambda rule: len(rule.words), reverse=True)

    def _rule_key(self, term: str) -> tuple[tuple[str, ...], bool]:
        """(words, last word may run on) of a term; a Malayalam term is one stem that always may."""
        key = normalise(term).strip()
        if _MALAYALAM.search(key):
            # A stem's closing virama gives way to a vowel sign when an ending is glued on.
            return (_collapse_spaces(key.rstrip("*").removesuffix(_VIRAMA)),), True
        words = tuple(_WORD.findall(key))
        if not words:
            raise ConfigError(f"{self.path}: keyword {term!r} has no letters or digits")
        return words, key.endswith("*")

    def _build_hints(self, hints: Mapping[str, Any]) -> dict[str, dict[str, tuple[str, float]]]:
        built: dict[str, dict[str, tuple[str, float]]] = {}
        for kind, table in hints.items():
            if kind not in HINT_KINDS:
                raise ConfigError(f"{self.path}: unknown hint kind [hints.{kind}] (known: {', '.join(HINT_KINDS)})")
            if not isinstance(table, dict):
                raise ConfigError(f"{self.path}: [hints.{kind}] must be a table")
            entries: dict[str, tuple[str, float]] = {}
            for value, target in table.items():
                department = target.get("department") if isinstance(target, dict) else None
                weight = target.get("weight") if isinstance(target, dict) else None
                if department not in self._order:
                    raise ConfigError(f"{self.path}: hints.{kind}.{value}: department {department!r} is not known")
                if not isinstance(weight, int | float) or isinstance(weight, bool) or weight <= 0:
                    raise ConfigError(f"{self.path}: hints.{kind}.{value}: weight must be a positive number")
                entries[_hint_keys(kind, value)[0]] = (department, float(weight))
            built[kind] = entries
        return built


def _words_match(rule: _Rule, tokens: list[str], position: int) -> bool:
    last = len(rule.words) - 1
    for offset, word in enumerate(rule.words):
        token = tokens[position + offset]
        if token != word and not (rule.prefix and offset == last and token.startswith(word)):
            return False
    return True


def _malayalam_pattern(stem: str) -> str:
    return r"\s+".join(re.escape(part) for part in stem.split(" "))


def _collapse_spaces(text: str) -> str:
    return " ".join(text.split())


def _hint_keys(kind: str, value: str) -> list[str]:
    """Lookup keys for a hint value, most specific first (a domain, then its parent domains)."""
    value = normalise(value).strip()
    if kind in ("mailbox", "sender"):
        if "<" in value and ">" in value:
            value = value[value.index("<") + 1 : value.index(">")]
        return [value.strip()]
    if kind == "sender_domain":
        labels = value.lstrip("@").rstrip(".").split(".")
        return [".".join(labels[index:]) for index in range(max(1, len(labels) - 1))]
    if kind in ("site", "library"):
        return [_collapse_spaces(value.rstrip("/").rpartition("/")[2])]
    if kind == "phone":
        return ["".join(character for character in value if character.isdigit())]
    return [value]


def _configured_path() -> Path:
    configured = os.environ.get(DEPARTMENTS_FILE_ENV, "").strip()
    return Path(configured) if configured else DEFAULT_DEPARTMENTS_FILE


def _load(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"department rules file not found: {path} (set {DEPARTMENTS_FILE_ENV})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"department rules file {path} is not valid TOML: {error}") from None


def _table(config: Mapping[str, Any], name: str, path: Path) -> dict[str, Any]:
    table = config.get(name)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{name}] table is missing")
    return table


def _positive(settings: Mapping[str, Any], name: str, default: float, path: Path) -> float:
    value = settings.get(name, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{path}: [classifier] {name} must be a positive number")
    return float(value)


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
