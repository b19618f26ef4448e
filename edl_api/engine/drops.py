"""Drop reasons per entry: what the rules, the ingest and the caps left out, and why.

The rules and the ingest hand each dropped entry to a `DropRecorder` (its key, the rule and
its source mask: a few list appends, only for entries that are dropped). Once the rules
have run, `start_record` gives each a readable detail (which allow entry, which registry
range, which pattern…) and, for text and inline sources, the first raw line that carried
it, so the bodies can be freed before the feeds are built; `finish_record` adds the feeds'
`max_entries` cuts and makes the `ExplainRecord`. Bounded by entries, never by lines.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import re2

from edl_api.engine.config import PipelineConfig, re2_options
from edl_api.engine.entries import FeedEntry
from edl_api.engine.explain import ExplainRecord, RecordBuilder
from edl_api.engine.indicators import (
    BITS,
    CIDR4,
    CIDR6,
    FQDN,
    IPV4,
    IPV6,
    KIND_TYPE,
    TRIM,
    URL,
    classify,
    classify_parts,
    int_to_ip,
    key_to_text,
    network_bounds,
)
from edl_api.engine.special import RESERVED_V4_CIDRS, RESERVED_V6_CIDRS, _bounds
from edl_api.engine.store import IndicatorStore

MAX_RAW_CHARS = 200  # an invalid token is kept this long at most


@dataclass
class DropRecorder:
    """What was dropped, as cheap tuples; details are worked out once, in `start_record`."""

    rules: list[tuple[str, Any, str, int]] = field(default_factory=list)  # kind, key, rule, mask
    # Networks the reserved/allow checks removed wholly (partial=False) or in part.
    ranges: list[tuple[int, int, int, str, int, bool]] = field(default_factory=list)
    invalid: dict[str, tuple[str, int]] = field(default_factory=dict)  # raw -> (reason, mask)
    filtered: dict[tuple[str, Any], int] = field(default_factory=dict)  # (kind, key) -> mask
    cut: list[tuple[str, FeedEntry]] = field(default_factory=list)  # (feed, entry)
    expired: dict[str, tuple[str, int]] = field(default_factory=dict)  # raw -> (why, mask)

    def add(self, kind: str, key: Any, rule: str, mask: int) -> None:
        self.rules.append((kind, key, rule, mask))

    def add_range(
        self, version: int, first: int, last: int, rule: str, mask: int, partial: bool
    ) -> None:
        self.ranges.append((version, first, last, rule, mask, partial))

    def add_invalid(self, token: str, reason: str, bit: int) -> None:
        raw = token[:MAX_RAW_CHARS]
        found = self.invalid.get(raw)
        self.invalid[raw] = (reason, bit | (found[1] if found else 0))

    def add_filtered(self, kind: str, key: Any, bit: int) -> None:
        self.filtered[(kind, key)] = self.filtered.get((kind, key), 0) | bit

    def add_expired(self, value: str, detail: str, bit: int) -> None:
        """An entry the expiry rule left out (`engine.expiry`); normalised in start_record."""
        raw = value[:MAX_RAW_CHARS]
        found = self.expired.get(raw)
        self.expired[raw] = (detail, bit | (found[1] if found else 0))


class _Ranges:
    """Which of many labelled ranges covers a value (allow entries, registry ranges)."""

    def __init__(self, ranges: Iterable[tuple[int, int, str]]) -> None:
        self.items = sorted(ranges)
        self.starts = [first for first, _, _ in self.items]
        self.reach: list[int] = []  # running max of `last`: bounds the backwards scan
        top = -1
        for _, last, _ in self.items:
            top = max(top, last)
            self.reach.append(top)

    def find(self, first: int, last: int) -> str | None:
        """The label of a range covering [first, last], else of one overlapping it."""
        index = bisect_right(self.starts, last) - 1
        overlap = None
        while index >= 0 and self.reach[index] >= first:
            start, end, label = self.items[index]
            if start <= first and end >= last:
                return label
            if end >= first and overlap is None:
                overlap = label
            index -= 1
        return overlap


class _AllowOrigins:
    """For an allowed entry: the `rules.allow` entry or allow source that removed it."""

    def __init__(self, config: PipelineConfig, allow_store: IndicatorStore) -> None:
        ranges: dict[int, list[tuple[int, int, str]]] = {4: [], 6: []}
        self.names: dict[str, str] = {}
        self.zones: dict[str, str] = {}
        self.urls: dict[str, str] = {}
        items: list[tuple[str, Any, str]] = []
        for entry in config.rules.allow:
            parts = classify_parts(entry.strip(TRIM))
            if not isinstance(parts, str):
                label = f"rules.allow entry {entry.strip()}"
                items.extend((kind, key, label) for kind, key in parts)
        for kind, mapping in allow_store.maps().items():
            for key, mask in mapping.items():
                index = (mask & -mask).bit_length() - 1
                name = config.sources[index].name if index < len(config.sources) else "?"
                items.append((kind, key, f"allow source {name} ({key_to_text(kind, key)})"))
        for kind, key, label in items:
            if kind in (IPV4, IPV6):
                ranges[4 if kind == IPV4 else 6].append((key, key, label))
            elif kind in (CIDR4, CIDR6):
                version = 4 if kind == CIDR4 else 6
                ranges[version].append((*network_bounds(key[0], key[1], BITS[version]), label))
            elif kind == FQDN:
                target = self.zones if key.startswith("*.") else self.names
                target.setdefault(key.removeprefix("*."), label)
            elif kind == URL:
                self.urls.setdefault(key, label)
        self.ranges = {version: _Ranges(items) for version, items in ranges.items()}

    def ip(self, version: int, first: int, last: int) -> str | None:
        return self.ranges[version].find(first, last)

    def name(self, name: str) -> str | None:
        base = name.removeprefix("*.")
        if not name.startswith("*.") and base in self.names:
            return self.names[base]
        while base:
            if base in self.zones:
                return self.zones[base]
            base = base.partition(".")[2]
        return None

    def url(self, url: str, host: tuple[int, int] | str | None) -> str | None:
        if url in self.urls:
            return self.urls[url]
        if isinstance(host, tuple):
            return self.ip(host[0], host[1], host[1])
        return self.name(host) if host else None


_RESERVED = {
    version: _Ranges((*_bounds(cidr)[1:], cidr) for cidr in cidrs)
    for version, cidrs in ((4, RESERVED_V4_CIDRS), (6, RESERVED_V6_CIDRS))
}


def _range_text(version: int, first: int, last: int) -> str:
    size = last - first + 1
    if size & (size - 1) == 0 and first % size == 0:
        prefixlen = BITS[version] - size.bit_length() + 1
        return f"{int_to_ip(first, version)}/{prefixlen}"
    return f"{int_to_ip(first, version)}-{int_to_ip(last, version)}"


class _Details:
    """The detail text of one rule's drop of one entry."""

    def __init__(
        self, config: PipelineConfig, allow_store: IndicatorStore,
        url_hosts: dict[str, tuple[int, int] | str], confidence_of: Any,
    ) -> None:
        self.config = config
        self.allow_store = allow_store
        self._allow: _AllowOrigins | None = None
        self.url_hosts = url_hosts
        self.confidence_of = confidence_of
        self.patterns = [
            (p, re2.compile(p, options=re2_options())) for p in config.rules.exclude_regex
        ]

    @property
    def allow(self) -> _AllowOrigins:
        if self._allow is None:  # only runs with allow drops pay for it
            self._allow = _AllowOrigins(self.config, self.allow_store)
        return self._allow

    def pattern(self, text: str) -> str:
        for source, compiled in self.patterns:
            if compiled.search(text):
                return f"matches exclude_regex {source}"
        return "matches an exclude_regex pattern"

    def host_of(self, url: str) -> tuple[int, int] | str | None:
        from edl_api.engine.rules import url_host_of  # rules imports this module

        return self.url_hosts.get(url) or url_host_of(url)

    def of(self, kind: str, key: Any, rule: str, mask: int, text: str) -> str:
        rules = self.config.rules
        if rule == "min_confidence":
            return (f"confidence {self.confidence_of(mask)} is below min_confidence "
                    f"{rules.min_confidence}")
        if rule == "include_types":
            return f"{KIND_TYPE[kind]} is not in rules.include_types"
        if rule == "exclude_regex":
            return self.pattern(text)
        if rule == "public_suffix":
            sections = rules.public_suffix_sections
            return f"{text} is (or covers) a public suffix (Public Suffix List, {sections})"
        if rule == "min_prefix":
            floor = rules.min_prefix.ipv4 if kind == CIDR4 else rules.min_prefix.ipv6
            return f"/{key[1]} is broader than min_prefix /{floor}"
        if kind in (IPV4, IPV6):
            version = 4 if kind == IPV4 else 6
            if rule == "exclude_reserved":
                return f"inside reserved range {_RESERVED[version].find(key, key)}"
            return self.allow.ip(version, key, key) or "allowlisted"
        if kind == FQDN:
            return self.allow.name(key) or "allowlisted"
        host = self.host_of(key)
        if rule == "exclude_reserved" and isinstance(host, tuple):
            return f"host inside reserved range {_RESERVED[host[0]].find(host[1], host[1])}"
        return self.allow.url(key, host) or "allowlisted"

    def of_range(self, version: int, first: int, last: int, rule: str, partial: bool) -> str:
        if rule == "exclude_reserved":
            label = f"reserved range {_RESERVED[version].find(first, last)}"
        else:
            label = self.allow.ip(version, first, last) or "the allowlist"
        return f"{'part of the network overlaps' if partial else 'inside'} {label}"


def start_record(
    recorder: DropRecorder, config: PipelineConfig, allow_store: IndicatorStore,
    url_hosts: dict[str, tuple[int, int] | str], confidence_of: Any,
    lines: dict[int, int], bodies: dict[int, bytes],
) -> RecordBuilder:
    """The explain record of everything dropped before the feeds are built (all but the
    `max_entries` cuts), each with its first raw line found: after this the bodies are
    needed only to locate cuts. `lines` is each source's line count (from its report),
    `bodies` the text sources' bodies."""
    details = _Details(config, allow_store, url_hosts, confidence_of)
    record = RecordBuilder([s.name for s in config.sources], lines)
    step = {"allow": "allowlist", "exclude_reserved": "reserved"}
    for kind, key, rule, mask in recorder.rules:
        text = key_to_text(kind, key)
        detail = details.of(kind, key, rule, mask, text)
        record.add(KIND_TYPE[kind], text, step.get(rule, rule), detail, mask)
    for version, first, last, rule, mask, partial in recorder.ranges:
        detail = details.of_range(version, first, last, rule, partial)
        record.add("cidr", _range_text(version, first, last), step.get(rule, rule), detail, mask)
    for (kind, key), mask in recorder.filtered.items():
        names = [s for i, s in enumerate(config.sources) if mask >> i & 1]
        wanted = ", ".join(f"{s.name}: [{', '.join(s.types or ())}]" for s in names)
        record.add(KIND_TYPE[kind], key_to_text(kind, key), "types",
                   f"{KIND_TYPE[kind]} is not in the source's types ({wanted})", mask)
    for raw, (reason, mask) in recorder.invalid.items():
        record.add("invalid", raw, "invalid", reason, mask)
    for raw, (detail, mask) in recorder.expired.items():
        # Under the normalised entry, as explain looks entries up; an expired token that is
        # not an indicator at all stays raw among the invalid ones.
        indicators = classify(raw).indicators
        for item in indicators:
            record.add(item.indicator_type, item.value, "expired", detail, mask)
        if not indicators:
            record.add("invalid", raw, "expired", detail, mask)
    # Handed over: the recorder keeps only what the feeds stage adds (cuts).
    recorder.rules, recorder.ranges = [], []
    recorder.filtered, recorder.invalid, recorder.expired = {}, {}, {}
    record.locate(config, bodies)
    return record


def finish_record(
    record: RecordBuilder, recorder: DropRecorder, config: PipelineConfig,
    bodies: dict[int, bytes],
) -> ExplainRecord:
    """`record` with the feeds' `max_entries` cuts added (located in `bodies`, which are
    kept for that only when a feed has a cap)."""
    index = {s.name: i for i, s in enumerate(config.sources)}
    limits = {str(k): v for k, v in config.pipeline.max_entries.items()}
    for feed, entry in recorder.cut:
        mask = sum(1 << index[name] for name in entry.sources if name in index)
        record.add(entry.indicator_type, entry.value, "max_entries",
                   f"the {feed} feed keeps its {limits.get(feed)} highest-confidence entries "
                   f"(max_entries); this one has confidence {entry.confidence}", mask, feed)
    if recorder.cut:
        record.locate(config, bodies)
    return record.finish()
