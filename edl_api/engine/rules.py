"""Rules (CONFIG.md `rules:`): allowlist set arithmetic and the exclusion filters.

Every drop is counted under the first rule that caused it, per published type, so
the report can say "cidr: 12 dropped by min_prefix, 3 by allow".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import re2
from publicsuffixlist import PSLFILE, PublicSuffixList, encode_idn

from edl_api.engine.bulk_rules import ipv4_networks
from edl_api.engine.config import RulesConfig, re2_options
from edl_api.engine.drops import DropRecorder
from edl_api.engine.indicators import (
    BITS,
    CIDR4,
    CIDR6,
    FQDN,
    IPV4,
    IPV6,
    KIND_TYPE,
    URL,
    Key,
    classify_parts,
    int_to_ip,
    ipv4_to_int,
    ipv6_to_int,
    network_bounds,
)
from edl_api.engine.special import RESERVED_V4, RESERVED_V6, IntervalSet
from edl_api.engine.store import IndicatorStore, Networks

DropCounts = dict[str, Counter[str]]  # published type -> rule -> n
Array = npt.NDArray[np.int64]


PUBLIC_SUFFIX = "public_suffix"  # the drop reason in run reports
SuffixSections = Literal["all", "icann"]


@lru_cache(maxsize=1)
def _rule_names() -> frozenset[str]:
    """Every name a rule of the list mentions (`*.` and `!` stripped), also IDNA-encoded.

    A public suffix of two labels or more is one of these or a child of one, so this set
    rules out nearly every name before the exact check (~10 µs a name, too slow for 1M)."""
    names: set[str] = set()
    with open(PSLFILE, encoding="utf-8") as lines:
        for line in lines:
            rule = line.strip().split(" ", 1)[0].lower()
            if not rule or rule.startswith("//"):
                continue
            if rule.startswith("!"):
                # An exception ("!www.ck") implies its parent is a suffix; name both.
                rule = rule[1:]
                names.add(encode_idn(rule.partition(".")[2]))
            rule = rule.removeprefix("*.")
            names.add(rule)
            names.add(encode_idn(rule))
    return frozenset(names)


class PublicSuffixes:
    """The Public Suffix List with its chosen sections ("all": ICANN and private)."""

    def __init__(self, sections: SuffixSections = "all") -> None:
        # The list ships inside the package: nothing is downloaded at run time.
        self._list = PublicSuffixList(only_icann=sections == "icann")
        self._rule_names = _rule_names()

    def is_suffix(self, name: str) -> bool:
        """True if `name` (without `*.`) is a public suffix: "com", "co.uk", "github.io".

        A single label always is (an unknown TLD counts as one: the list's `*` rule)."""
        dot = name.find(".")
        if dot != -1 and name not in self._rule_names and name[dot + 1 :] not in self._rule_names:
            return False
        return bool(self._list.is_public(name))

    def covers(self, name: str) -> bool:
        """True if a name or `*.` wildcard blocks a whole public suffix ("*.uk", "uk")."""
        return self.is_suffix(name[2:] if name.startswith("*.") else name)


@lru_cache(maxsize=2)
def public_suffixes(sections: SuffixSections = "all") -> PublicSuffixes:
    """The shared list for `sections` (parsing it takes ~50 ms, once per process)."""
    return PublicSuffixes(sections)


@dataclass
class Allowlist:
    """Everything that must never be published."""

    v4: IntervalSet = field(default_factory=IntervalSet)
    v6: IntervalSet = field(default_factory=IntervalSet)
    names: set[str] = field(default_factory=set)  # exact names
    zones: set[str] = field(default_factory=set)  # "*.corp.example" -> "corp.example"
    urls: set[str] = field(default_factory=set)

    @classmethod
    def build(cls, entries: Iterable[str], stores: Iterable[IndicatorStore] = ()) -> Allowlist:
        ranges: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        allow = cls()

        def add(kind: str, key: Key) -> None:
            if kind in (IPV4, IPV6):
                assert isinstance(key, int)
                ranges[4 if kind == IPV4 else 6].append((key, key))
            elif kind in (CIDR4, CIDR6):
                assert isinstance(key, tuple)
                version = 4 if kind == CIDR4 else 6
                ranges[version].append(network_bounds(key[0], key[1], BITS[version]))
            elif kind == FQDN:
                assert isinstance(key, str)
                if key.startswith("*."):
                    allow.zones.add(key[2:])
                else:
                    allow.names.add(key)
            elif kind == URL:
                assert isinstance(key, str)
                allow.urls.add(key)

        for entry in entries:
            parts = classify_parts(entry.strip())
            if not isinstance(parts, str):
                for kind, key in parts:
                    add(kind, key)
        for store in stores:
            for kind, mapping in store.maps().items():
                for key in mapping:
                    add(kind, key)
        allow.v4 = IntervalSet(ranges[4])
        allow.v6 = IntervalSet(ranges[6])
        return allow

    def name_allowed(self, name: str) -> bool:
        """True if the allowlist covers `name` (a name or a `*.` wildcard)."""
        if name.startswith("*."):
            base = name[2:]
            # A wildcard is only removable when every name it matches is allowed.
            if base in self.zones:
                return True
        elif name in self.names:
            return True
        else:
            base = name
        if not self.zones:
            return False
        while True:
            dot = base.find(".")
            if dot < 0:
                return False
            base = base[dot + 1 :]
            if base in self.zones:
                return True

    def ip_allowed(self, version: int, value: int) -> bool:
        return value in (self.v4 if version == 4 else self.v6)


def url_host_of(value: str) -> tuple[int, int] | str:
    """Host of a normalised URL: (version, int) for IP literals, else the name."""
    cut = len(value)
    for ch in "/?":
        pos = value.find(ch)
        if pos != -1 and pos < cut:
            cut = pos
    authority = value[:cut]
    if authority.startswith("["):
        address = ipv6_to_int(authority[1 : authority.find("]")])
        assert address is not None
        return 6, address
    host = authority.partition(":")[0]
    if host[:1].isdigit():
        address4 = ipv4_to_int(host)
        if address4 is not None:
            return 4, address4
    return host


class Rules:
    """Applies `rules:` to a store in place and counts what each rule dropped."""

    def __init__(
        self,
        config: RulesConfig,
        allow: Allowlist,
        confidence_of: Callable[[int], int],
        recorder: DropRecorder | None = None,
    ) -> None:
        self.config = config
        # Per dropped entry (for explain); only the dropping branches touch it.
        self.recorder = recorder
        self.allow = allow
        self.confidence_of = confidence_of
        self.patterns = [re2.compile(p, options=re2_options()) for p in config.exclude_regex]
        self.drops: DropCounts = {t: Counter() for t in ("ipv4", "ipv6", "cidr", "fqdn", "url")}
        self.split: Counter[str] = Counter()  # networks partly removed (rule -> n)
        self._suffixes: PublicSuffixes | None = None

    @property
    def suffixes(self) -> PublicSuffixes | None:
        """The Public Suffix List, parsed on first use (~0.2 s: an IP-only run never)."""
        sections = self.config.public_suffix_sections
        if sections == "off":
            return None
        if self._suffixes is None:
            self._suffixes = public_suffixes(sections)
        return self._suffixes

    # -- helpers

    def _regex_hit(self, text: str) -> bool:
        return any(p.search(text) for p in self.patterns)

    def _low_confidence(self, mask: int) -> bool:
        return self.confidence_of(mask) < self.config.min_confidence

    # -- per kind

    def apply(self, store: IndicatorStore) -> None:
        include = set(self.config.include_types)
        for kind, kind_type in (
            (IPV4, "ipv4"),
            (IPV6, "ipv6"),
            (CIDR4, "cidr"),
            (CIDR6, "cidr"),
            (FQDN, "fqdn"),
            (URL, "url"),
        ):
            if kind == IPV4 and (
                (kind_type in include and self.config.min_confidence <= 0)
                or not len(store.hosts4)
            ):
                continue  # no dict made for nothing: `_hosts` reads the arrays
            mapping = store.ipv4 if kind == IPV4 else store.sinks()[kind]
            if kind_type not in include:
                if mapping:
                    self.drops[kind_type]["include_types"] += len(mapping)
                    if self.recorder is not None:
                        for key, mask in mapping.items():
                            self.recorder.add(kind, key, "include_types", mask)
                    mapping.clear()
                continue
            if self.config.min_confidence > 0:
                self._drop_where(mapping, kind, "min_confidence", self._low_confidence)
        self._hosts(store, 4)
        self._hosts(store, 6)
        store.networks4 = self._networks(store.cidr4, 4)
        store.networks6 = self._networks(store.cidr6, 6)
        store.cidr4.clear()
        store.cidr6.clear()
        self._names(store.fqdn)
        self._urls(store.url, store.url_hosts)

    def _drop_where(
        self, mapping: dict[Any, int], kind: str, rule: str, test: Callable[[int], bool]
    ) -> None:
        doomed = [key for key, mask in mapping.items() if test(mask)]
        for key in doomed:
            mask = mapping.pop(key)
            if self.recorder is not None:
                self.recorder.add(kind, key, rule, mask)
        if doomed:
            self.drops[KIND_TYPE[kind]][rule] += len(doomed)

    def _hosts(self, store: IndicatorStore, version: int) -> None:
        if version == 4 and not self.patterns:
            arrays = store.hosts4.arrays()
            if arrays is not None:
                store.hosts4.replace(*self._hosts4(*arrays))
                return
        mapping = store.ipv4 if version == 4 else store.ipv6
        kind_type = "ipv4" if version == 4 else "ipv6"
        kind = IPV4 if version == 4 else IPV6
        recorder = self.recorder
        keys = sorted(mapping)
        checks: list[tuple[str, IntervalSet]] = []
        if self.config.exclude_reserved:
            checks.append(("exclude_reserved", RESERVED_V4 if version == 4 else RESERVED_V6))
        checks.append(("allow", self.allow.v4 if version == 4 else self.allow.v6))
        for rule, excluded in checks:
            if not excluded or not keys:
                continue
            slices = excluded.covered_indexes(keys)
            if not slices:
                continue
            kept: list[int] = []
            cursor = 0
            for lo, hi in slices:
                kept.extend(keys[cursor:lo])
                for key in keys[lo:hi]:
                    mask = mapping.pop(key)
                    if recorder is not None:
                        recorder.add(kind, key, rule, mask)
                self.drops[kind_type][rule] += hi - lo
                cursor = hi
            kept.extend(keys[cursor:])
            keys = kept
        if self.patterns:
            kept = []
            for key in keys:
                if self._regex_hit(int_to_ip(key, version)):
                    mask = mapping.pop(key)
                    if recorder is not None:
                        recorder.add(kind, key, "exclude_regex", mask)
                    self.drops[kind_type]["exclude_regex"] += 1
                else:
                    kept.append(key)
            keys = kept
        store.sorted_hosts[version] = keys

    def _hosts4(self, keys: Array, masks: Array) -> tuple[Array, Array]:
        """`_hosts` for IPv4 hosts as sorted arrays: the same drops, in the same order."""
        checks: list[tuple[str, IntervalSet]] = []
        if self.config.exclude_reserved:
            checks.append(("exclude_reserved", RESERVED_V4))
        checks.append(("allow", self.allow.v4))
        for rule, excluded in checks:
            if not excluded or not len(keys):
                continue
            starts = np.array(excluded.starts, dtype=np.int64)
            ends = np.array(excluded.ends, dtype=np.int64)
            at = np.searchsorted(starts, keys, side="right") - 1
            inside = (at >= 0) & (keys <= ends[np.maximum(at, 0)])
            hit = np.flatnonzero(inside)
            if not len(hit):
                continue
            self.drops["ipv4"][rule] += len(hit)
            if self.recorder is not None:
                for key, mask in zip(keys[hit].tolist(), masks[hit].tolist(), strict=True):
                    self.recorder.add(IPV4, key, rule, mask)
            keep = ~inside
            keys, masks = keys[keep], masks[keep]
        return keys, masks

    def _networks(self, mapping: dict[tuple[int, int], int], version: int) -> Networks:
        """Networks as sorted (first, last, mask) pieces after min_prefix, reserved and allow."""
        bits = BITS[version]
        min_prefix = self.config.min_prefix.ipv4 if version == 4 else self.config.min_prefix.ipv6
        drops = self.drops["cidr"]
        kind = CIDR4 if version == 4 else CIDR6
        recorder = self.recorder
        checks: list[tuple[str, IntervalSet]] = []
        if self.config.exclude_reserved:
            checks.append(("exclude_reserved", RESERVED_V4 if version == 4 else RESERVED_V6))
        checks.append(("allow", self.allow.v4 if version == 4 else self.allow.v6))
        if version == 4 and not self.patterns:
            return ipv4_networks(mapping, min_prefix, checks, drops, self.split, recorder)
        pieces: Networks = []
        for (network, prefixlen), mask in mapping.items():
            if prefixlen < min_prefix:
                drops["min_prefix"] += 1
                if recorder is not None:
                    recorder.add(kind, (network, prefixlen), "min_prefix", mask)
                continue
            if self.patterns and self._regex_hit(f"{int_to_ip(network, version)}/{prefixlen}"):
                drops["exclude_regex"] += 1
                if recorder is not None:
                    recorder.add(kind, (network, prefixlen), "exclude_regex", mask)
                continue
            first, last = network_bounds(network, prefixlen, bits)
            pieces.append((first, last, mask))
        pieces.sort()
        for rule, excluded in checks:
            if not excluded:
                continue
            kept: Networks = []
            for first, last, mask in pieces:
                remaining = excluded.subtract(first, last)
                if remaining is None:
                    kept.append((first, last, mask))
                elif not remaining:
                    drops[rule] += 1
                    if recorder is not None:
                        recorder.add_range(version, first, last, rule, mask, False)
                else:
                    self.split[rule] += 1
                    if recorder is not None:
                        recorder.add_range(version, first, last, rule, mask, True)
                    kept.extend((a, b, mask) for a, b in remaining)
            pieces = kept
        return pieces

    def _names(self, mapping: dict[str, int]) -> None:
        if not mapping:
            return
        drops = self.drops["fqdn"]
        suffixes = self.suffixes
        allow = self.allow
        check_allow = bool(allow.names or allow.zones)
        doomed: list[str] = []
        for name in mapping:
            rule = None
            # Runs after augment, so a derived name ("com" from "*.com") is caught too.
            if suffixes is not None and suffixes.covers(name):
                rule = PUBLIC_SUFFIX
            elif self.patterns and self._regex_hit(name):
                rule = "exclude_regex"
            elif check_allow and allow.name_allowed(name):
                rule = "allow"
            if rule is not None:
                drops[rule] += 1
                doomed.append(name)
                if self.recorder is not None:
                    self.recorder.add(FQDN, name, rule, mapping[name])
        for name in doomed:
            del mapping[name]

    def _urls(self, mapping: dict[str, int], hosts: dict[str, tuple[int, int] | str]) -> None:
        if not mapping:
            return
        drops = self.drops["url"]
        allow = self.allow
        reserved = self.config.exclude_reserved
        suffixes = self.suffixes
        check_names = bool(allow.names or allow.zones)
        check_ips = bool(allow.v4 or allow.v6)
        doomed: list[str] = []
        for url in mapping:
            rule = None
            host: tuple[int, int] | str | None = None
            # A URL with a path is specific even on a public suffix's host
            # ("s3.amazonaws.com/bucket/key"); a bare host ("co.uk/") or a wildcard one
            # ("*.co.uk/a.php") matches across the whole suffix. A one-label host ("com/a",
            # the parent of "*.com/a") is a TLD, no site: no source can list it either.
            slash = url.find("/")  # normalised: the authority always ends at a "/"
            wide = (
                url.startswith("*.")
                or slash == len(url) - 1
                or ("." not in url[:slash] and url[:1] != "[")
            )
            if reserved or check_names or check_ips or (wide and suffixes is not None):
                host = hosts.get(url)
                if host is None:
                    host = url_host_of(url)
            if (
                wide
                and suffixes is not None
                and isinstance(host, str)
                and suffixes.covers(host)
            ):
                rule = PUBLIC_SUFFIX
            elif (
                isinstance(host, tuple)
                and reserved
                and host[1] in (RESERVED_V4 if host[0] == 4 else RESERVED_V6)
            ):
                rule = "exclude_reserved"
            elif self.patterns and self._regex_hit(url):
                rule = "exclude_regex"
            elif url in allow.urls:
                rule = "allow"
            elif isinstance(host, tuple) and check_ips and allow.ip_allowed(*host):
                rule = "allow"
            elif isinstance(host, str) and check_names and allow.name_allowed(host):
                rule = "allow"
            if rule is not None:
                drops[rule] += 1
                doomed.append(url)
                if self.recorder is not None:
                    self.recorder.add(URL, url, rule, mapping[url])
        for url in doomed:
            del mapping[url]
