"""STIX 2.1: indicator patterns → the values we can publish, STIX objects → `Observation`s.

Patterns go through the OASIS reference parser (`stix2-patterns`, ANTLR). We publish a
pattern's values only when every match of it is one of them: `[type:value = '…']` (and
`IN (…)`, and `ISSUBSET '<cidr>'` for addresses) on ipv4-addr / ipv6-addr / domain-name
/ url, joined by `OR` inside one `[…]` and across observation expressions. An `AND`,
`FOLLOWEDBY`, a qualifier (`WITHIN`, `REPEATS`, `START … STOP`), a negation or a
comparison we cannot publish (`!=`, `LIKE`, `MATCHES`, another object or property) makes
its branch unpublishable: a whole pattern of those is `unsupported_pattern`; an `OR` with
such a branch next to a publishable one publishes that one and counts `partial_pattern`
(blocking the OR's address is still right: the pattern matches whenever it does).

The ANTLR parser costs ~430 µs a pattern in CPython; 100k-indicator bundles would take
most of a minute. The common single comparison `[type:value = '…']` therefore takes a
strict regex fast path that accepts a subset of what the parser accepts and returns the
same values (tests/engine/test_stix_patterns.py checks this on generated patterns).
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from antlr4.tree.Tree import TerminalNode
from stix2patterns.exceptions import ParseException
from stix2patterns.v21.grammars.STIXPatternParser import STIXPatternParser as Grammar
from stix2patterns.v21.pattern import Pattern

from edl_api.engine.indicators import TRIM
from edl_api.engine.observations import Observation, as_tag, parse_when

if TYPE_CHECKING:  # parsers imports this module for `format: stix`
    from edl_api.engine.parsers import ParseStats

ADDRESS_OBJECTS = frozenset({"ipv4-addr", "ipv6-addr"})
VALUE_OBJECTS = frozenset({"ipv4-addr", "ipv6-addr", "domain-name", "url"})
# Longer patterns are not indicators of one thing; the parser's cost grows with length.
MAX_PATTERN_CHARS = 16_384
# The single comparison `[type:value = '…']`: a strict subset of the grammar.
FAST_PATTERN = re.compile(
    r"[ ]*\[[ ]*(?:ipv4-addr|ipv6-addr|domain-name|url):value[ ]*=[ ]*"
    r"'((?:[^'\\]|\\['\\])*)'[ ]*\][ ]*"
)
_ESCAPE = re.compile(r"\\(['\\])")


@dataclass(frozen=True, slots=True)
class PatternValues:
    values: tuple[str, ...]
    # None, or the `invalid` reason to count: bad_pattern, unsupported_pattern,
    # partial_pattern (values are still published), pattern_too_long
    problem: str | None = None


def unescape(literal: str) -> str:
    """A StringLiteral's content (without its quotes): `\\'` → `'`, `\\\\` → `\\`."""
    return _ESCAPE.sub(r"\1", literal) if "\\" in literal else literal


def _clean(raw: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for value in raw:
        value = value.strip(TRIM)
        if value:
            seen.setdefault(value, None)
    return tuple(seen)


def pattern_values(pattern: str) -> PatternValues:
    """The publishable values of one STIX 2.1 pattern (see the module docstring)."""
    if len(pattern) > MAX_PATTERN_CHARS:
        return PatternValues((), "pattern_too_long")
    fast = FAST_PATTERN.fullmatch(pattern)
    if fast is not None:
        values = _clean((unescape(fast.group(1)),))
        return PatternValues(values, None if values else "unsupported_pattern")
    return parsed_values(pattern)


@functools.lru_cache(maxsize=4096)
def parsed_values(pattern: str) -> PatternValues:
    """`pattern_values` through the reference parser only (the fast path's oracle)."""
    try:
        tree = Pattern(pattern)
        found = _Walk()
        tree.visit(found)
    except (ParseException, RecursionError):
        return PatternValues((), "bad_pattern")
    values = _clean(found.values)
    if not values:
        return PatternValues((), "unsupported_pattern")
    return PatternValues(values, "partial_pattern" if found.unsupported else None)


def _literal(node: Any) -> str | None:
    """The text of a primitiveLiteral when it is a string, else None."""
    orderable = node.orderableLiteral()
    if orderable is None or orderable.StringLiteral() is None:
        return None
    return unescape(orderable.StringLiteral().getText()[1:-1])


def _object_type(path: Any) -> str | None:
    """`ipv4-addr` etc. when the object path is exactly `<type>:value`, else None."""
    if path.objectPathComponent() is not None:
        return None
    if path.firstPathComponent().getText() not in ("value", "'value'"):
        return None
    kind = path.objectType().getText()
    return kind if kind in VALUE_OBJECTS else None


# Nodes whose publishable values are their children's: OR, brackets, parentheses.
_DESCEND = (
    Grammar.ObservationExpressionsContext, Grammar.ObservationExpressionOrContext,
    Grammar.ComparisonExpressionContext, Grammar.ObservationExpressionCompoundContext,
    Grammar.PropTestParenContext, Grammar.ObservationExpressionSimpleContext,
)
_AND = (Grammar.ObservationExpressionAndContext, Grammar.ComparisonExpressionAndContext)


class _Walk:
    """Collects a parse tree's publishable values. Not an ANTLR visitor subclass: an
    explicit stack, so a pattern of thousands of ORs costs no Python recursion."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self.unsupported = False

    def visit(self, tree: Any) -> None:
        stack = [tree]
        while stack:
            node = stack.pop()
            if isinstance(node, TerminalNode):
                continue
            if isinstance(node, Grammar.PatternContext):
                stack.append(node.observationExpressions())
            elif isinstance(node, _DESCEND):
                # FOLLOWEDBY is an ordering of observations: none of its parts alone matches.
                if isinstance(node, Grammar.ObservationExpressionsContext) and node.FOLLOWEDBY():
                    self.unsupported = True
                    continue
                stack.extend(reversed(node.children or []))
            elif isinstance(node, _AND):
                if node.AND() is not None:
                    self.unsupported = True  # never half of an AND
                else:
                    stack.extend(reversed(node.children or []))
            elif isinstance(node, Grammar.PropTestEqualContext):
                self._equal(node)
            elif isinstance(node, Grammar.PropTestSetContext):
                self._set(node)
            elif isinstance(node, Grammar.PropTestIsSubsetContext):
                self._subset(node)
            else:
                # WITHIN / REPEATS / START-STOP qualifiers, LIKE, MATCHES, <, >, EXISTS,
                # ISSUPERSET: nothing a list of values can stand for.
                self.unsupported = True

    def _equal(self, node: Any) -> None:
        kind = _object_type(node.objectPath())
        value = _literal(node.primitiveLiteral())
        if node.NOT() or node.NEQ() or kind is None or value is None:
            self.unsupported = True
        else:
            self.values.append(value)

    def _set(self, node: Any) -> None:
        kind = _object_type(node.objectPath())
        members = [_literal(item) for item in node.setLiteral().primitiveLiteral()]
        if node.NOT() or kind is None or not members or None in members:
            self.unsupported = True
        else:
            self.values.extend(m for m in members if m is not None)

    def _subset(self, node: Any) -> None:
        # `ipv4-addr:value ISSUBSET '198.51.100.0/24'`: any address of that network.
        kind = _object_type(node.objectPath())
        if node.NOT() or kind not in ADDRESS_OBJECTS:
            self.unsupported = True
        else:
            self.values.append(unescape(node.StringLiteral().getText()[1:-1]))


@dataclass(frozen=True, slots=True)
class StixEntry:
    """What one STIX object says: its values and their shared validity, date and tags."""

    values: tuple[str, ...]
    valid_until: float | None
    seen: float | None
    tags: tuple[str, ...]


def _tags(obj: dict[str, Any]) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for key in ("labels", "indicator_types"):
        items = obj.get(key)
        if not isinstance(items, list):
            continue
        for item in items:
            tag = as_tag(item) if isinstance(item, str) else None
            if tag:
                found.setdefault(tag, None)
    return tuple(found)


def stix_entry(obj: Any, invalid: Counter[str]) -> StixEntry | None:
    """The publishable content of one STIX object, or None (counted in `invalid` when it is
    an indicator we cannot publish; other SDOs, SROs and revoked objects are skipped)."""
    if not isinstance(obj, dict) or obj.get("revoked") is True:
        return None
    kind = obj.get("type")
    if kind == "indicator":
        pattern = obj.get("pattern")
        if obj.get("pattern_type", "stix") != "stix":
            invalid["unsupported_pattern_type"] += 1  # sigma, snort, yara …
            return None
        if not isinstance(pattern, str):
            invalid["bad_pattern"] += 1
            return None
        found = pattern_values(pattern)
        if found.problem is not None:
            invalid[found.problem] += 1
        if not found.values:
            return None
        values = found.values
    elif kind in VALUE_OBJECTS:
        value = obj.get("value")
        values = _clean((value,)) if isinstance(value, str) else ()
        if not values:
            invalid["missing_value"] += 1
            return None
    else:
        return None
    seen = parse_when(obj.get("modified")) or parse_when(obj.get("created"))
    return StixEntry(values, parse_when(obj.get("valid_until")), seen, _tags(obj))


def entry_observations(entry: StixEntry) -> list[Observation]:
    return [Observation(v, entry.seen, entry.valid_until, entry.tags) for v in entry.values]


def stix_observations(
    objects: Iterable[Any], now: float, stats_counter: Counter[str]
) -> list[Observation]:
    """Observations of STIX objects (indicators with STIX patterns; ipv4-addr, ipv6-addr,
    domain-name, url objects). `now` is not judged here: expiry is the pipeline's."""
    del now  # part of the contract; validity is carried, never judged, here
    out: list[Observation] = []
    for obj in objects:
        entry = stix_entry(obj, stats_counter)
        if entry is not None:
            out.extend(entry_observations(entry))
    return out


def parse_stix_observations(text: str, stats: ParseStats, now: float) -> list[Observation]:
    """A static STIX 2.1 bundle (or one object, or a list of them) → Observations;
    `stats.lines` counts its objects."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        stats.invalid["bad_json"] += 1
        return []
    objects = document.get("objects", [document]) if isinstance(document, dict) else document
    if not isinstance(objects, list):
        stats.invalid["bad_stix"] += 1
        return []
    stats.lines += len(objects)
    return stix_observations(objects, now, stats.invalid)
