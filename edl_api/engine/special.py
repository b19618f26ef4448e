"""Special-purpose address space and integer interval sets.

`RESERVED_V4` / `RESERVED_V6` follow the IANA special-purpose registries plus bogons
(IPv4 multicast and class E; IPv6 outside 2000::/3). They drive both the
`exclude_reserved` rule and the SSRF guard, so the two can never disagree.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable

from edl_api.engine.indicators import ipv4_to_int, ipv6_to_int

RESERVED_V4_CIDRS: tuple[str, ...] = (
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8",  # private
    "100.64.0.0/10",  # CGN shared address space
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local
    "172.16.0.0/12",  # private
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24",  # TEST-NET-1
    "192.88.99.0/24",  # deprecated 6to4 relay anycast
    "192.168.0.0/16",  # private
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # TEST-NET-2
    "203.0.113.0/24",  # TEST-NET-3
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved (class E) and limited broadcast
)

RESERVED_V6_CIDRS: tuple[str, ...] = (
    # Everything outside 2000::/3 is unallocated or special: ::/128, ::1, IPv4-mapped and
    # -compatible, local-use NAT64 64:ff9b:1::/48, discard 100::/64, ULA fc00::/7,
    # link-local fe80::/10, site-local fec0::/10, multicast ff00::/8 — except NAT64_V6.
    "::/3",
    "4000::/2",
    "8000::/1",
    "2001::/23",  # IETF protocol assignments (Teredo 2001::/32, benchmarking, ORCHID)
    "2001:db8::/32",  # documentation
    "2002::/16",  # 6to4
    "3fff::/20",  # documentation (RFC 9637)
)

# The NAT64 well-known prefix is "Globally Reachable: True" in the IANA IPv6 Special-Purpose
# Address Registry (64:ff9b::/96, "IPv4-IPv6 Translat.", RFC 6052; its neighbour
# 64:ff9b:1::/48, RFC 8215, is False), https://www.iana.org/assignments/
# iana-ipv6-special-registry/. So it is carved out of ::/3 — but RFC 6052 §3.1 forbids
# the prefix for non-global IPv4, so its image of every RESERVED_V4 range stays reserved.
NAT64_V6 = "64:ff9b::/96"


def _bounds(cidr: str) -> tuple[int, int, int]:
    address, _, length = cidr.partition("/")
    version = 6 if ":" in address else 4
    bits = 128 if version == 6 else 32
    value = ipv6_to_int(address) if version == 6 else ipv4_to_int(address)
    assert value is not None
    size = 1 << (bits - int(length))
    return version, value, value + size - 1


class IntervalSet:
    """Sorted, disjoint, non-adjacent closed integer intervals with fast queries."""

    __slots__ = ("ends", "starts")

    def __init__(self, intervals: Iterable[tuple[int, int]] = ()) -> None:
        merged: list[list[int]] = []
        for start, end in sorted(intervals):
            if merged and start <= merged[-1][1] + 1:
                if end > merged[-1][1]:
                    merged[-1][1] = end
            else:
                merged.append([start, end])
        self.starts = [m[0] for m in merged]
        self.ends = [m[1] for m in merged]

    def __len__(self) -> int:
        return len(self.starts)

    def __bool__(self) -> bool:
        return bool(self.starts)

    def __contains__(self, value: int) -> bool:
        index = bisect_right(self.starts, value) - 1
        return index >= 0 and value <= self.ends[index]

    def overlapping(self, start: int, end: int) -> range:
        """Indexes of the intervals that intersect [start, end]."""
        return range(bisect_left(self.ends, start), bisect_right(self.starts, end))

    def subtract(self, start: int, end: int) -> list[tuple[int, int]] | None:
        """What remains of [start, end] outside the set; None when nothing overlaps."""
        hits = self.overlapping(start, end)
        if not hits:
            return None
        remaining: list[tuple[int, int]] = []
        cursor = start
        for index in hits:
            if self.starts[index] > cursor:
                remaining.append((cursor, self.starts[index] - 1))
            cursor = self.ends[index] + 1
        if cursor <= end:
            remaining.append((cursor, end))
        return remaining

    def covered_indexes(self, sorted_values: list[int]) -> list[tuple[int, int]]:
        """Index slices [lo, hi) of `sorted_values` that fall inside the set.

        O(intervals * log n): a 10k-entry allowlist against 1M hosts is 20k bisects.
        """
        slices = []
        for start, end in zip(self.starts, self.ends, strict=True):
            lo = bisect_left(sorted_values, start)
            hi = bisect_right(sorted_values, end, lo)
            if hi > lo:
                slices.append((lo, hi))
        return slices


def _reserved(cidrs: tuple[str, ...]) -> IntervalSet:
    return IntervalSet((start, end) for _, start, end in map(_bounds, cidrs))


def _reserved_v6() -> IntervalSet:
    _, nat64_first, nat64_last = _bounds(NAT64_V6)
    nat64 = IntervalSet([(nat64_first, nat64_last)])
    pieces: list[tuple[int, int]] = []
    for _, start, end in map(_bounds, RESERVED_V6_CIDRS):
        outside = nat64.subtract(start, end)
        pieces.extend([(start, end)] if outside is None else outside)
    for _, start, end in map(_bounds, RESERVED_V4_CIDRS):
        pieces.append((nat64_first + start, nat64_first + end))
    return IntervalSet(pieces)


RESERVED_V4 = _reserved(RESERVED_V4_CIDRS)
RESERVED_V6 = _reserved_v6()


def embedded_ipv4(value: int) -> list[int] | None:
    """IPv4 addresses wrapped in an IPv6 address, or None if it wraps none.

    IPv4-mapped/-compatible, NAT64 (64:ff9b::/96), 6to4 (2002::/16) and Teredo
    (2001::/32: server and de-obfuscated client).
    """
    low32 = value & 0xFFFFFFFF
    top96 = value >> 32
    if top96 == 0xFFFF or (top96 == 0 and value > 1):
        return [low32]
    if top96 == 0x0064FF9B << 64:
        return [low32]
    if value >> 112 == 0x2002:
        return [(value >> 80) & 0xFFFFFFFF]
    if value >> 96 == 0x20010000:
        return [(value >> 64) & 0xFFFFFFFF, low32 ^ 0xFFFFFFFF]
    return None
