"""Content rules: which documents the pipeline ingests, applied to every source before upload.

Rules live in a TOML file (``CONTENT_RULES_FILE``, default ``config/content_rules.toml``)::

    [[exclude]]
    name = "executables"
    extensions = ["exe", "bat", "js"]

    [[include]]
    name = "finance-mail-only"
    sources = ["email"]
    hints = { sender_domain = ["kmrl.co.in"] }

A rule matches when every condition it names holds: ``sources``, ``filename_globs``, ``extensions``,
``mime_types`` (globs such as ``image/*``), ``min_size`` / ``max_size`` (bytes), ``hints`` (source
facts: sender, sender_domain, mailbox, site, library, worktype, status, phone; globs allowed).
The first matching ``exclude`` rule skips the document. When a source has ``include`` rules, a
document of that source must match one of them. Decisions name the rule, so the audit log and
``sync --dry-run`` can say why.

``hold`` rules decide, once the document's content was read and enriched, whether it is held back
from the Hub instead of delivered (``hold_reason``)::

    [[hold]]
    name = "whatsapp-aadhaar"
    sources = ["whatsapp"]
    sensitive = ["aadhaar", "bank_account"]

A hold rule takes the same conditions and must name ``sensitive``: kinds of personal data
(base/enrichment/sensitive.py ``KINDS``), any one of which found in the document makes it match.
``sensitive`` belongs to hold rules only (include and exclude rules are decided before the content
is read). The first matching hold rule holds the document; without one it is delivered, flagged.
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from base.document import sanitize_filename
from config.settings import PROJECT_ROOT
from utils.errors import ConfigError

DEFAULT_RULES_FILE = str(PROJECT_ROOT / "config" / "content_rules.toml")

_KNOWN_KEYS = {"name", "sources", "filename_globs", "extensions", "mime_types", "min_size", "max_size", "hints"}
#: Kinds of personal data a hold rule may name (base/enrichment/sensitive.py ``KINDS``).
SENSITIVE_KINDS = ("aadhaar", "pan", "mobile", "bank_account")


def _lower_list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    return tuple(str(v).strip().lower() for v in value)


@dataclass(frozen=True)
class Rule:
    """One include or exclude rule (see the module docstring)."""

    name: str
    sources: tuple[str, ...] = ()
    filename_globs: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()
    mime_types: tuple[str, ...] = ()
    min_size: int | None = None
    max_size: int | None = None
    hints: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: Hold rules only: kinds of personal data, any of which found makes the rule match.
    sensitive: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: Mapping[str, Any], where: str, *, hold: bool = False) -> Rule:
        unknown = set(raw) - _KNOWN_KEYS - ({"sensitive"} if hold else set())
        if unknown:
            hint = " (sensitive belongs to [[hold]] rules)" if "sensitive" in unknown else ""
            raise ConfigError(f"content rule {where} has unknown keys: {', '.join(sorted(unknown))}{hint}")
        sensitive = _lower_list(raw.get("sensitive"))
        if hold:
            if not sensitive:
                raise ConfigError(f"content rule {where} must name the kinds of personal data it holds: "
                                  f"sensitive = [{', '.join(repr(k) for k in SENSITIVE_KINDS)}] (any of them)")
            unknown_kinds = [k for k in sensitive if k not in SENSITIVE_KINDS]
            if unknown_kinds:
                raise ConfigError(f"content rule {where} names unknown sensitive kinds {', '.join(unknown_kinds)}: "
                                  f"use {', '.join(SENSITIVE_KINDS)}")
        return cls(
            name=str(raw.get("name") or where),
            sources=_lower_list(raw.get("sources")),
            filename_globs=_lower_list(raw.get("filename_globs")),
            extensions=tuple(e.lstrip(".") for e in _lower_list(raw.get("extensions"))),
            mime_types=_lower_list(raw.get("mime_types")),
            min_size=int(raw["min_size"]) if raw.get("min_size") is not None else None,
            max_size=int(raw["max_size"]) if raw.get("max_size") is not None else None,
            hints={str(k).lower(): _lower_list(v) for k, v in dict(raw.get("hints") or {}).items()},
            sensitive=sensitive,
        )

    def applies_to(self, source: str) -> bool:
        return not self.sources or source.lower() in self.sources

    def matches(self, source: str, filename: str, mime_type: str, size: int | None,
                hints: Mapping[str, str]) -> bool:
        """True when every condition holds. An unknown size satisfies size conditions (checked again later)."""
        if not self.applies_to(source):
            return False
        name = filename.lower()
        if self.filename_globs and not any(fnmatch.fnmatchcase(name, g) for g in self.filename_globs):
            return False
        if self.extensions and os.path.splitext(name)[1].lstrip(".") not in self.extensions:
            return False
        if self.mime_types and not any(fnmatch.fnmatchcase((mime_type or "").lower(), g) for g in self.mime_types):
            return False
        if size is not None:
            if self.min_size is not None and size < self.min_size:
                return False
            if self.max_size is not None and size > self.max_size:
                return False
        elif self.min_size is not None or self.max_size is not None:
            return False
        for key, patterns in self.hints.items():
            value = str(hints.get(key, "")).lower()
            if not any(fnmatch.fnmatchcase(value, p) for p in patterns):
                return False
        return True


@dataclass(frozen=True)
class ContentRules:
    """Include, exclude and hold rules; ``decide`` returns the reason to skip, or None to ingest;
    ``hold_reason`` the reason to hold an ingested document back, or None to deliver it."""

    include: tuple[Rule, ...] = ()
    exclude: tuple[Rule, ...] = ()
    hold: tuple[Rule, ...] = ()

    @classmethod
    def load(cls, path: str | None = None) -> ContentRules:
        """Rules from ``path`` (default ``config/content_rules.toml``); no file means no rules."""
        path = path or DEFAULT_RULES_FILE
        if not os.path.isfile(path):
            if path != DEFAULT_RULES_FILE:
                raise ConfigError(f"CONTENT_RULES_FILE {path} does not exist")
            return cls()
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"content rules file {path} is not valid TOML: {exc}") from exc
        return cls.from_mapping(data)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Sequence[Mapping[str, Any]]]) -> ContentRules:
        include = tuple(Rule.parse(r, f"include[{i}]") for i, r in enumerate(data.get("include", [])))
        exclude = tuple(Rule.parse(r, f"exclude[{i}]") for i, r in enumerate(data.get("exclude", [])))
        hold = tuple(Rule.parse(r, f"hold[{i}]", hold=True) for i, r in enumerate(data.get("hold", [])))
        return cls(include=include, exclude=exclude, hold=hold)

    def decide(self, source: str, filename: str, mime_type: str, size: int | None,
               hints: Mapping[str, str]) -> str | None:
        """The skip reason (``"rule:<name>"``) or None when the document is to be ingested.

        Rules match the name ``sanitize_filename`` makes of ``filename`` (the name the Hub gets), so
        an invisible character cannot carry a name past a rule: ``evil.exe\u00ad`` is an ``exe``."""
        filename = sanitize_filename(filename)
        for rule in self.exclude:
            if rule.matches(source, filename, mime_type, size, hints):
                return f"rule:{rule.name}"
        includes = [r for r in self.include if r.applies_to(source)]
        if includes and not any(r.matches(source, filename, mime_type, size, hints) for r in includes):
            if size is None and any(r.min_size is not None or r.max_size is not None for r in includes):
                return None  # decided again once the size is known
            return "rule:not-included"
        return None

    def hold_reason(self, source: str, filename: str, mime_type: str, size: int, hints: Mapping[str, str],
                    sensitive: Mapping[str, int]) -> str | None:
        """``"rule:<name>"`` of the first hold rule that matches a document whose content holds
        ``sensitive`` (kind -> count), or None to deliver it."""
        found = {kind for kind, count in sensitive.items() if count > 0}
        if not found:
            return None
        filename = sanitize_filename(filename)
        for rule in self.hold:
            if found.intersection(rule.sensitive) and rule.matches(source, filename, mime_type, size, hints):
                return f"rule:{rule.name}"
        return None
