"""Department rules (config/departments.toml) read into the look-up tables base/enrichment/classifier.py uses.

``load_rules(path)`` validates the file and returns ``DepartmentRules``; ``normalise`` is the one
text form both rules and documents are matched in; ``hint_keys`` turns a source hint into the keys
it is looked up by. A malformed file raises ConfigError naming the file and the entry.
"""

from __future__ import annotations

import os
import re
import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from base.enrichment.malayalam_terms import MALAYALAM_WORD, MalayalamTerm, canonical_malayalam, parse_term_word
from utils.env import EnvReader
from utils.errors import ConfigError

#: Environment variable naming the rules file.
DEPARTMENTS_FILE_ENV = "DEPARTMENTS_FILE"
#: The rules file used when DEPARTMENTS_FILE is unset.
DEFAULT_DEPARTMENTS_FILE = Path(__file__).resolve().parents[2] / "config" / "departments.toml"
#: Hint keys a connector may pass; a rules file naming any other kind is refused (a typo would
#: otherwise silently disable a hint).
HINT_KINDS = ("worktype", "mailbox", "sender", "sender_domain", "site", "library", "phone")
#: Defaults for the [classifier] table.
DEFAULT_HALF_CONFIDENCE_SCORE = 4.0  # score points
DEFAULT_MAX_CHARS = 20_000  # characters
DEFAULT_CONTENT_ENOUGH_SCORE = 4.0  # score points of a text's terms up to which hints count in full

#: A Latin word (of normalised text): what English terms must match whole.
WORD = re.compile(r"[a-z0-9]+")
MALAYALAM = re.compile(r"[\u0d00-\u0d7f]")
_ZWJ, _ZWNJ = "\u200d", "\u200c"
# Characters that change a word's code points but not its letters: joiners and the soft hyphen.
_INVISIBLE = (_ZWJ, _ZWNJ, "\u00ad")


@dataclass(frozen=True)
class Rule:
    """One keyword or phrase and what it is worth to each department that lists it."""

    label: str  # "keyword:<term as written>"
    words: tuple[str, ...]  # normalised words (Latin, or canonical Malayalam)
    prefix: bool  # the last word may run on ("invoice*", "ശമ്പള*")
    weights: tuple[tuple[str, float], ...]  # (department, score points)
    malayalam: tuple[MalayalamTerm, ...] = ()  # how each Malayalam word matches (empty for Latin)
    tail: bool = False  # a Malayalam term that may also close a compound ("*സുരക്ഷ")


@dataclass(frozen=True)
class DepartmentRules:
    """A validated rules file, as look-up tables."""

    path: Path
    departments: tuple[str, ...]  # in file order, which breaks ties
    default_department: str
    half_confidence_score: float  # score points at which an unopposed department has confidence 0.5
    max_chars: int  # characters of a text that are read
    content_enough_score: float  # score points of content beyond which hints count in proportion
    phrases: Mapping[str, tuple[Rule, ...]]  # Latin word and phrase rules by first word, longest first
    stems: Mapping[str, tuple[Rule, ...]]  # Latin one-word stems by their first stem_key_length letters
    stem_key_length: int
    malayalam_heads: Mapping[str, tuple[Rule, ...]]  # Malayalam rules by each spelling of their first word's base
    malayalam_longest_base: int  # characters
    malayalam_tails: tuple[Rule, ...]  # Malayalam rules that may also close a compound
    hints: Mapping[str, Mapping[str, tuple[str, float]]]  # kind -> hint key -> (department, points)


def normalise(text: str) -> str:
    """The form both rules and texts are matched in: NFC, case-folded, no joiners, and Malayalam
    chillus as consonant + virama (atomic ർ, legacy ര്‍ and joiner-less ര് all read the same)."""
    text = unicodedata.normalize("NFC", text)
    for character in _INVISIBLE:
        if character in text:
            text = text.replace(character, "")
    if MALAYALAM.search(text):
        text = canonical_malayalam(text)
    return text.casefold()


def collapse_spaces(text: str) -> str:
    return " ".join(text.split())


def hint_keys(kind: str, value: str) -> list[str]:
    """Look-up keys for a hint value, most specific first: the bare address of "Name <a@b>", a
    domain then its parent domains, the last part of a site or library path, a phone's digits."""
    value = normalise(value).strip()
    if kind in ("mailbox", "sender"):
        if "<" in value and ">" in value:
            value = value[value.index("<") + 1 : value.index(">")]
        return [value.strip()]
    if kind == "sender_domain":
        labels = value.lstrip("@").rstrip(".").split(".")
        return [".".join(labels[index:]) for index in range(max(1, len(labels) - 1))]
    if kind in ("site", "library"):
        return [collapse_spaces(value.rstrip("/").rpartition("/")[2])]
    if kind == "phone":
        return ["".join(character for character in value if character.isdigit())]
    return [value]


def configured_path() -> Path:
    """DEPARTMENTS_FILE from the environment, else config/departments.toml."""
    configured = EnvReader(os.environ).text(DEPARTMENTS_FILE_ENV).strip()
    return Path(configured) if configured else DEFAULT_DEPARTMENTS_FILE


def load_rules(path: Path) -> DepartmentRules:
    """Reads and validates a rules file (format: the comment at the top of config/departments.toml)."""
    config = _load(path)
    settings = config.get("classifier", {})
    departments_table = config.get("departments")
    if not isinstance(departments_table, dict) or not departments_table:
        raise ConfigError(f"{path}: no [departments.<name>] tables")
    departments = tuple(departments_table)
    default_department = str(settings.get("default_department", departments[0]))
    if default_department not in departments:
        raise ConfigError(f"{path}: default_department {default_department!r} is not a department")
    phrases, stems, malayalam = _keyword_tables(path, departments_table)
    stem_key_length = min((len(stem) for stem in stems), default=1)
    stems_by_key: dict[str, tuple[Rule, ...]] = {}
    for stem, rule in sorted(stems.items(), key=lambda item: -len(item[0])):
        stems_by_key[stem[:stem_key_length]] = (*stems_by_key.get(stem[:stem_key_length], ()), rule)
    heads: dict[str, list[Rule]] = {}
    for rule in malayalam:
        for spelling in (rule.malayalam[0].base, *rule.malayalam[0].alternates):
            heads.setdefault(spelling, []).append(rule)
    return DepartmentRules(
        path=path,
        departments=departments,
        default_department=default_department,
        half_confidence_score=_positive(path, settings, "half_confidence_score", DEFAULT_HALF_CONFIDENCE_SCORE),
        max_chars=int(_positive(path, settings, "max_chars", DEFAULT_MAX_CHARS)),
        content_enough_score=_positive(path, settings, "content_enough_score", DEFAULT_CONTENT_ENOUGH_SCORE),
        phrases=phrases,
        stems=stems_by_key,
        stem_key_length=stem_key_length,
        malayalam_heads={key: tuple(sorted(found, key=lambda rule: -len(rule.words))) for key, found in heads.items()},
        malayalam_longest_base=max((len(base) for base in heads), default=0),
        malayalam_tails=tuple(rule for rule in malayalam if rule.tail),
        hints=_hint_tables(path, config.get("hints", {}), departments),
    )


def _keyword_tables(
    path: Path, departments: Mapping[str, Any]
) -> tuple[dict[str, tuple[Rule, ...]], dict[str, Rule], list[Rule]]:
    """(Latin rules by first word, longest first; Latin stem rules by stem; Malayalam rules)."""
    # Terms are merged by their normalised form, so "top-up" and "top up" are one rule.
    merged: dict[tuple[tuple[str, ...], bool, bool], tuple[str, dict[str, float]]] = {}
    for department, body in departments.items():
        keywords = body.get("keywords") if isinstance(body, dict) else None
        if not isinstance(keywords, dict) or not keywords:
            raise ConfigError(f"{path}: [departments.{department}.keywords] is missing or empty")
        for term, weight in keywords.items():
            if not _is_positive(weight):
                raise ConfigError(f"{path}: weight of {term!r} in {department} must be a positive number")
            label, weights = merged.setdefault(_rule_key(path, term), ("keyword:" + term.strip("*").strip(), {}))
            if department in weights:
                raise ConfigError(f"{path}: {term!r} is listed twice in {department} (after normalising)")
            weights[department] = float(weight)
    phrases: dict[str, tuple[Rule, ...]] = {}
    stems: dict[str, Rule] = {}
    malayalam: list[Rule] = []
    for (words, prefix, tail), (label, weights) in merged.items():
        if MALAYALAM.search(" ".join(words)):
            last = len(words) - 1
            terms = tuple(parse_term_word(word, runs_on=prefix and index == last) for index, word in enumerate(words))
            malayalam.append(Rule(label, words, prefix, tuple(weights.items()), terms, tail))
            continue
        rule = Rule(label, words, prefix, tuple(weights.items()))
        if prefix and len(words) == 1:
            stems[words[0]] = rule
        else:
            phrases[words[0]] = (*phrases.get(words[0], ()), rule)
    longest_first = {first: tuple(sorted(rules, key=lambda rule: -len(rule.words))) for first, rules in phrases.items()}
    return longest_first, stems, malayalam


def _rule_key(path: Path, term: str) -> tuple[tuple[str, ...], bool, bool]:
    """(words, last word may run on, may close a compound) of a term.

    A Malayalam term's words are its runs of Malayalam letters; a leading ``*`` (may close a
    compound) is only meaningful for Malayalam."""
    key = normalise(term).strip()
    if MALAYALAM.search(key):
        words = tuple(MALAYALAM_WORD.findall(key))
        if len(words) != len(key.strip("*").split()):
            raise ConfigError(f"{path}: Malayalam keyword {term!r} mixes scripts within a word")
        return words, key.endswith("*"), key.startswith("*")
    words = tuple(WORD.findall(key))
    if not words:
        raise ConfigError(f"{path}: keyword {term!r} has no letters or digits")
    return words, key.endswith("*"), False


def _hint_tables(
    path: Path, hints: Mapping[str, Any], departments: tuple[str, ...]
) -> dict[str, dict[str, tuple[str, float]]]:
    tables: dict[str, dict[str, tuple[str, float]]] = {}
    for kind, table in hints.items():
        if kind not in HINT_KINDS:
            raise ConfigError(f"{path}: unknown hint kind [hints.{kind}] (known: {', '.join(HINT_KINDS)})")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [hints.{kind}] must be a table")
        entries: dict[str, tuple[str, float]] = {}
        for value, target in table.items():
            if not isinstance(target, dict):
                raise ConfigError(f"{path}: hints.{kind}.{value} must be {{ department = ..., weight = ... }}")
            department, weight = target.get("department"), target.get("weight")
            if department not in departments:
                raise ConfigError(f"{path}: hints.{kind}.{value}: department {department!r} is not known")
            if not _is_positive(weight):
                raise ConfigError(f"{path}: hints.{kind}.{value}: weight must be a positive number")
            entries[hint_keys(kind, value)[0]] = (department, float(weight))
        tables[kind] = entries
    return tables


def _load(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"department rules file not found: {path} (set {DEPARTMENTS_FILE_ENV})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"department rules file {path} is not valid TOML: {error}") from None


def _is_positive(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _positive(path: Path, settings: Mapping[str, Any], name: str, default: float) -> float:
    value = settings.get(name, default)
    if not _is_positive(value):
        raise ConfigError(f"{path}: [classifier] {name} must be a positive number")
    return float(value)
