"""The deduplicating indicator store and the hot ingest loop.

Provenance is a bitmask of source indexes per indicator: a duplicate costs one dict
lookup and an OR, and sources/tags/confidence are derived once per distinct mask.
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edl_api.engine.hosts4 import Hosts4
from edl_api.engine.indicators import (
    CIDR4,
    CIDR6,
    FQDN,
    IPV4,
    IPV6,
    KIND_TYPE,
    PLAIN_NAME_MAX,
    PLAIN_NAME_RE,
    URL,
    classify_parts,
    plain_url,
)

if TYPE_CHECKING:  # drops imports this module
    from edl_api.engine.drops import DropRecorder

# Sorted (first, last, source mask) pieces of networks after the rules.
Networks = list[tuple[int, int, int]]


@dataclass
class IndicatorStore:
    # IPv4 hosts as dict and array parts (`hosts4`); `ipv4` is them as one dict.
    hosts4: Hosts4 = field(default_factory=Hosts4)
    ipv6: dict[int, int] = field(default_factory=dict)
    cidr4: dict[tuple[int, int], int] = field(default_factory=dict)
    cidr6: dict[tuple[int, int], int] = field(default_factory=dict)
    fqdn: dict[str, int] = field(default_factory=dict)
    url: dict[str, int] = field(default_factory=dict)
    # Filled by the rules stage.
    networks4: Networks = field(default_factory=list)
    networks6: Networks = field(default_factory=list)
    sorted_hosts: dict[int, list[int]] = field(default_factory=dict)
    # URL -> host ((version, int) for IP literals, else the name); shared by augment and rules.
    url_hosts: dict[str, tuple[int, int] | str] = field(default_factory=dict)

    @property
    def ipv4(self) -> dict[int, int]:
        return self.hosts4.as_dict()

    def maps(self) -> dict[str, dict[Any, int]]:
        """Every kind's indicators as a dict (the IPv4 hosts made one: see `sinks`)."""
        return self.sinks() | {IPV4: self.ipv4}

    def sinks(self) -> dict[str, dict[Any, int]]:
        """The dicts to OR new indicators into; the IPv4 one holds only what is written
        to it (`Hosts4.sink`), so writing costs nothing when the hosts are arrays."""
        return {
            IPV4: self.hosts4.sink(),
            IPV6: self.ipv6,
            CIDR4: self.cidr4,
            CIDR6: self.cidr6,
            FQDN: self.fqdn,
            URL: self.url,
        }

    def counts(self) -> dict[str, int]:
        return {
            "ipv4": len(self.hosts4),
            "ipv6": len(self.ipv6),
            "cidr": len(self.cidr4) + len(self.cidr6),
            "fqdn": len(self.fqdn),
            "url": len(self.url),
        }


@dataclass
class IngestStats:
    tokens: int = 0
    indicators: Counter[str] = field(default_factory=Counter)  # published type -> n
    invalid: Counter[str] = field(default_factory=Counter)  # reason -> n
    filtered: int = 0  # classified fine but not in the source's `types:`


def ingest(
    tokens: Iterable[str],
    store: IndicatorStore,
    bit: int,
    types: frozenset[str] | None,
    stats: IngestStats,
    recorder: DropRecorder | None = None,
) -> None:
    """Classify tokens into the store, OR-ing `bit` into each indicator's source mask;
    `recorder` is told of each invalid or `types:`-filtered token (for explain)."""
    maps = store.sinks()
    pton = socket.inet_pton
    af_inet = socket.AF_INET
    af_inet6 = socket.AF_INET6
    from_bytes = int.from_bytes
    take_ipv4 = types is None or "ipv4" in types
    invalid = stats.invalid
    by_type = stats.indicators
    cidr4_map = store.cidr4
    take_cidr = types is None or "cidr" in types
    fqdn_map = store.fqdn
    take_fqdn = types is None or "fqdn" in types
    plain_name = PLAIN_NAME_RE.fullmatch
    ipv6_map = store.ipv6
    take_ipv6 = types is None or "ipv6" in types
    url_map = store.url
    url_hosts = store.url_hosts
    take_url = types is None or "url" in types
    quads = bytearray()  # packed dotted quads, OR-ed into the map in bulk below
    n_tokens = 0
    n_cidr4 = 0
    n_fqdn = 0
    n_ipv6 = 0
    n_url = 0
    filtered = 0
    for token in tokens:
        n_tokens += 1
        # Fast paths: strict dotted quads (~60% of real-world volume) and IPv4 CIDRs. The
        # cheap pre-check keeps names, URLs and IPv6 off the (slow) exception path.
        first = token[:1]
        if "0" <= first <= "9" and ":" not in token:
            slash = token.find("/")
            if slash < 0:
                try:
                    packed = pton(af_inet, token)
                except (OSError, ValueError):
                    pass
                else:
                    if take_ipv4:
                        quads += packed
                    else:
                        filtered += 1
                        if recorder is not None:
                            recorder.add_filtered(IPV4, from_bytes(packed, "big"), bit)
                    continue
            elif take_cidr:
                # What classify_parts makes of it (host bits cleared); /32 and odd
                # lengths take the full path.
                length = token[slash + 1 :]
                if len(length) <= 2 and length.isascii() and length.isdigit():
                    prefixlen = int(length)
                    if prefixlen < 32:
                        try:
                            value = from_bytes(pton(af_inet, token[:slash]), "big")
                        except (OSError, ValueError):
                            pass
                        else:
                            cidr_key = (value & ~((1 << (32 - prefixlen)) - 1), prefixlen)
                            cidr4_map[cidr_key] = cidr4_map.get(cidr_key, 0) | bit
                            n_cidr4 += 1
                            continue
        elif (
            take_fqdn and "a" <= first <= "z" and len(token) <= PLAIN_NAME_MAX
            and plain_name(token) is not None
        ):
            # A plain lowercase name (~all names in real feeds) is its own key.
            fqdn_map[token] = fqdn_map.get(token, 0) | bit
            n_fqdn += 1
            continue
        elif ":" in token:
            if "/" not in token:
                # An address inet_pton takes is what classify_parts makes of it.
                if take_ipv6:
                    try:
                        address = from_bytes(pton(af_inet6, token), "big")
                    except (OSError, ValueError):
                        pass
                    else:
                        ipv6_map[address] = ipv6_map.get(address, 0) | bit
                        n_ipv6 += 1
                        continue
            elif take_url and (found := plain_url(token)) is not None:
                # The host is known now: augment and the rules need not parse it again.
                url, url_hosts[url] = found
                url_map[url] = url_map.get(url, 0) | bit
                n_url += 1
                continue
        parts = classify_parts(token, True)  # not a dotted quad: pre-check or pton said so
        if isinstance(parts, str):
            invalid[parts] += 1
            if recorder is not None:
                recorder.add_invalid(token, parts, bit)
            continue
        for kind, part_key in parts:
            kind_type = KIND_TYPE[kind]
            if types is not None and kind_type not in types:
                filtered += 1
                if recorder is not None:
                    recorder.add_filtered(kind, part_key, bit)
                continue
            mapping = maps[kind]
            mapping[part_key] = mapping.get(part_key, 0) | bit
            by_type[kind_type] += 1
    if quads:
        store.hosts4.add_packed(quads, bit)
        by_type["ipv4"] += len(quads) // 4
    if n_cidr4:
        by_type["cidr"] += n_cidr4
    if n_fqdn:
        by_type["fqdn"] += n_fqdn
    if n_ipv6:
        by_type["ipv6"] += n_ipv6
    if n_url:
        by_type["url"] += n_url
    stats.tokens += n_tokens
    stats.filtered += filtered
