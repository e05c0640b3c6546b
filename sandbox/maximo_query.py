"""The part of Maximo's OSLC query language the Maximo simulator understands, parsed for real.

``oslc.where``: conditions joined by ``and`` (Maximo rejects a bare ``or``); operators
``= != > >= < <=`` and ``in [..]``; strings and ISO dates in double quotes, numbers and
``true``/``false`` bare; ``="%X%"`` is a LIKE, ``="*"`` means "not null" and ``!="*"`` "is null".
``oslc.orderBy``: a comma list of attributes, each with a ``+`` or ``-`` prefix (a ``+`` that was not
URL-encoded arrives as a space and is refused, as Maximo refuses it). ``oslc.select``: attribute
names, ``*``, and child objects such as ``doclinks{*}``.

Anything outside that subset raises ``QueryError``, which the simulator answers with a 400 and
the reason code Maximo gives for a query it could not parse (BMXAA8744E).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

_R = TypeVar("_R", bound=Mapping[str, Any])

#: Maximo's reason code for a query it could not parse.
PARSE_ERROR_CODE = "BMXAA8744E"

#: The kinds of attribute the simulator compares: text, ISO date-time, number.
TEXT, DATETIME, NUMBER = "text", "datetime", "number"

_TOKEN = re.compile(
    r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*")'
    r"|(?P<op>!=|>=|<=|=|>|<)"
    r"|(?P<lbracket>\[)|(?P<rbracket>\])|(?P<comma>,)"
    r"|(?P<number>-?\d+(?:\.\d+)?(?![\w.]))"
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_.]*))"
)


class QueryError(ValueError):
    """A query parameter outside the supported subset, with Maximo's reason code."""

    def __init__(self, message: str, reason_code: str = PARSE_ERROR_CODE) -> None:
        super().__init__(message)
        self.reason_code = reason_code


@dataclass(frozen=True)
class Condition:
    """One ``attribute operator value`` term of an ``oslc.where``."""

    attribute: str
    operator: str
    value: Any


@dataclass
class Selection:
    """What ``oslc.select`` asked for: attribute names (or all) and child objects with their own selection."""

    attributes: set[str] = field(default_factory=set)
    everything: bool = False
    children: dict[str, Selection] = field(default_factory=dict)

    def wants(self, attribute: str) -> bool:
        """Whether ``attribute`` is selected."""
        return self.everything or attribute in self.attributes


@dataclass
class _Token:
    kind: str
    text: str
    column: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise QueryError(f"The OSLC query was not parsed: unexpected {text[pos:pos + 10]!r} at column {pos + 1}.")
        kind = match.lastgroup or ""
        start = match.start(kind)
        tokens.append(_Token(kind, match.group(kind), start + 1))
        pos = match.end()
    return tokens


def parse_where(text: str, attributes: Mapping[str, str]) -> list[Condition]:
    """Parses an ``oslc.where``; ``attributes`` maps each known (lowercase) attribute to its kind.

    Raises ``QueryError`` for syntax outside the subset, unknown attributes or a badly typed value.
    """
    tokens = _tokenize(text)
    conditions: list[Condition] = []
    i = 0

    def expect(kind: str) -> _Token:
        nonlocal i
        if i >= len(tokens):
            raise QueryError(f"The OSLC query was not parsed: the query ended where a {kind} was expected.")
        token = tokens[i]
        if token.kind != kind:
            raise QueryError(f"The OSLC query was not parsed: encountered {token.text!r} at column "
                             f"{token.column}; was expecting a {kind}.")
        i += 1
        return token

    while True:
        name = expect("ident").text.lower()
        if name not in attributes:
            raise QueryError(f"The attribute {name} in the OSLC query is not in the object structure.")
        kind = attributes[name]
        if i < len(tokens) and tokens[i].kind == "ident" and tokens[i].text.lower() == "in":
            i += 1
            expect("lbracket")
            values = [_literal(expect_value(tokens, i), kind)]
            i += 1
            while i < len(tokens) and tokens[i].kind == "comma":
                i += 1
                values.append(_literal(expect_value(tokens, i), kind))
                i += 1
            expect("rbracket")
            conditions.append(Condition(name, "in", tuple(values)))
        else:
            operator = expect("op").text
            token = expect_value(tokens, i)
            i += 1
            if token.kind == "string" and _unquote(token.text) == "*" and operator in ("=", "!="):
                conditions.append(Condition(name, "notnull" if operator == "=" else "isnull", None))
            elif token.kind == "string" and "%" in token.text and operator in ("=", "!="):
                if kind != TEXT:
                    raise QueryError(f"A LIKE pattern cannot be applied to the {kind} attribute {name}.")
                conditions.append(Condition(name, "like" if operator == "=" else "notlike",
                                            _like_pattern(_unquote(token.text))))
            else:
                conditions.append(Condition(name, operator, _literal(token, kind)))
        if i >= len(tokens):
            return conditions
        joiner = tokens[i]
        if joiner.kind != "ident" or joiner.text.lower() != "and":
            raise QueryError(f"The OSLC query was not parsed: encountered {joiner.text!r} at column "
                             f"{joiner.column}; was expecting <BOOLEAN_OP>.")
        i += 1


def expect_value(tokens: Sequence[_Token], i: int) -> _Token:
    """The value token at ``i`` (string, number or true/false); raises ``QueryError`` otherwise."""
    if i >= len(tokens):
        raise QueryError("The OSLC query was not parsed: the query ended where a value was expected.")
    token = tokens[i]
    if token.kind in ("string", "number") or (token.kind == "ident" and token.text.lower() in ("true", "false")):
        return token
    raise QueryError(f"The OSLC query was not parsed: encountered {token.text!r} at column {token.column}; "
                     "was expecting a quoted string, a number or a boolean.")


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def _like_pattern(value: str) -> re.Pattern[str]:
    parts = [re.escape(part) for part in value.split("%")]
    return re.compile("^" + ".*".join(parts) + "$", re.IGNORECASE | re.DOTALL)


def _literal(token: _Token, kind: str) -> Any:
    if kind == DATETIME:
        if token.kind != "string":
            raise QueryError(f"A date must be an ISO 8601 string in double quotes (column {token.column}).")
        try:
            value = datetime.fromisoformat(_unquote(token.text))
        except ValueError as exc:
            raise QueryError(f"The date {token.text} at column {token.column} is not ISO 8601.") from exc
        if value.tzinfo is None:
            raise QueryError(f"The date {token.text} at column {token.column} has no time zone offset.")
        return value
    if kind == NUMBER:
        if token.kind != "number":
            raise QueryError(f"A number was expected at column {token.column}.")
        return float(token.text)
    if token.kind != "string":
        raise QueryError(f"A text value must be in double quotes (column {token.column}).")
    return _unquote(token.text)


def matches(conditions: Iterable[Condition], record: Mapping[str, Any]) -> bool:
    """Whether ``record`` (attribute -> value, ``None`` for null) meets every condition."""
    for cond in conditions:
        value = record.get(cond.attribute)
        op = cond.operator
        if op == "notnull":
            ok = value not in (None, "")
        elif op == "isnull":
            ok = value in (None, "")
        elif value is None:
            ok = False
        elif op == "like":
            ok = bool(cond.value.match(str(value)))
        elif op == "notlike":
            ok = not cond.value.match(str(value))
        elif op == "in":
            ok = value in cond.value
        elif op == "=":
            ok = value == cond.value
        elif op == "!=":
            ok = value != cond.value
        elif op == ">":
            ok = value > cond.value
        elif op == ">=":
            ok = value >= cond.value
        elif op == "<":
            ok = value < cond.value
        else:
            ok = value <= cond.value
        if not ok:
            return False
    return True


def parse_order_by(text: str, attributes: Mapping[str, str]) -> list[tuple[str, bool]]:
    """Parses ``oslc.orderBy`` into (attribute, descending) pairs.

    Every term needs an explicit ``+`` or ``-``: an unencoded ``+`` reaches the server as a space
    and is refused, so a client that forgets to encode it finds out at once.
    """
    order: list[tuple[str, bool]] = []
    for term in text.split(","):
        if not term or term[0] not in "+-":
            raise QueryError(f"The sort term {term!r} in oslc.orderBy needs a + or - prefix "
                             "(is the + URL-encoded?).")
        name = term[1:].strip().lower()
        if name not in attributes:
            raise QueryError(f"The attribute {name} in oslc.orderBy is not a persistent attribute "
                             "of the main object.")
        order.append((name, term[0] == "-"))
    return order


def sort_records(records: Sequence[_R], order: Sequence[tuple[str, bool]]) -> list[_R]:
    """``records`` sorted by ``order`` (stable; nulls sort first ascending)."""
    result = list(records)
    for name, descending in reversed(order):
        result.sort(key=_sort_key(name), reverse=descending)
    return result


def _sort_key(name: str) -> Callable[[Mapping[str, Any]], tuple[bool, Any]]:
    def key(record: Mapping[str, Any]) -> tuple[bool, Any]:
        value = record.get(name)
        return (value is not None, value if value is not None else 0)

    return key


def parse_select(text: str) -> Selection:
    """Parses ``oslc.select`` (``a,b,child{x,y},other{*}``, or ``*``) into a ``Selection``."""
    selection, rest = _parse_select_list(text.replace(" ", ""), 0)
    if rest != len(text.replace(" ", "")):
        raise QueryError(f"oslc.select has an unmatched '}}' at position {rest + 1}.")
    return selection


def _parse_select_list(text: str, pos: int) -> tuple[Selection, int]:
    selection = Selection()
    while pos < len(text) and text[pos] != "}":
        match = re.compile(r"[A-Za-z_*][A-Za-z0-9_.*-]*").match(text, pos)
        if match is None:
            raise QueryError(f"oslc.select is not parsed at position {pos + 1}.")
        name = match.group(0).lower()
        pos = match.end()
        if pos < len(text) and text[pos] == "{":
            child, pos = _parse_select_list(text, pos + 1)
            if pos >= len(text) or text[pos] != "}":
                raise QueryError(f"oslc.select has an unclosed '{{' after {name}.")
            selection.children[name] = child
            pos += 1
        elif name == "*":
            selection.everything = True
        else:
            selection.attributes.add(name)
        if pos < len(text) and text[pos] == ",":
            pos += 1
            continue
        break
    return selection, pos
