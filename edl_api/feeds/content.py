"""Pure functions on feed bytes: ordering, compression, diffs and IP aggregation."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterable
from itertools import islice

from edl_api.engine.indicators import BITS, int_to_ip, parse_ip, range_to_prefixes

FEED_TYPES = ("ipv4", "ipv6", "cidr", "fqdn", "url", "ip")
IP_FEED_TYPES = frozenset({"ipv4", "ipv6", "cidr", "ip"})
# The indicator (provenance) types a feed is made of.
BASE_TYPES: dict[str, tuple[str, ...]] = {
    "ipv4": ("ipv4",), "ipv6": ("ipv6",), "cidr": ("cidr",), "fqdn": ("fqdn",),
    "url": ("url",), "ip": ("ipv4", "ipv6", "cidr"),
}
GZIP_LEVEL = 6
DIFF_SAMPLE = 20


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def gzip_bytes(content: bytes) -> bytes:
    # mtime=0: the same content always compresses to the same bytes.
    return gzip.compress(content, compresslevel=GZIP_LEVEL, mtime=0)


def split_lines(content: bytes) -> list[str]:
    return [line for line in content.decode("utf-8").split("\n") if line]


def join_lines(lines: Iterable[str]) -> bytes:
    text = "\n".join(lines)
    return (text + "\n").encode("utf-8") if text else b""


def ip_network(value: str) -> tuple[int, int, int] | None:
    """(version, network int, prefixlen) of an address or CIDR, else None."""
    address, slash, length = value.partition("/")
    parsed = parse_ip(address)
    if parsed is None:
        return None
    version, number = parsed
    bits = BITS[version]
    if not slash:
        return version, number, bits
    if not length.isdigit() or int(length) > bits:
        return None
    prefixlen = int(length)
    return version, number & ~((1 << (bits - prefixlen)) - 1), prefixlen


def sort_key(value: str) -> tuple[int, int, int, str]:
    """CONFIG.md plain order: IPs numerically (v4 before v6), then names."""
    network = ip_network(value)
    if network is None:
        return (9, 0, 0, value)
    version, number, prefixlen = network
    return (version, number, prefixlen, "")


def sorted_lines(lines: Iterable[str]) -> list[str]:
    return sorted(set(lines), key=sort_key)


def aggregate_ip(lines: Iterable[str]) -> list[str]:
    """Fewest prefixes covering every address/network given (covered hosts dropped,
    adjacent networks merged); lines that are not IPs are kept as they are."""
    spans: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    others: set[str] = set()
    for line in lines:
        network = ip_network(line)
        if network is None:
            others.add(line)
            continue
        version, number, prefixlen = network
        spans[version].append((number, number | ((1 << (BITS[version] - prefixlen)) - 1)))
    out: list[str] = []
    for version in (4, 6):
        bits = BITS[version]
        merged: list[list[int]] = []
        for start, end in sorted(spans[version]):
            if merged and start <= merged[-1][1] + 1:
                if end > merged[-1][1]:
                    merged[-1][1] = end
            else:
                merged.append([start, end])
        for start, end in merged:
            for network_int, prefixlen in range_to_prefixes(start, end, bits):
                out.append(_network_text(version, network_int, prefixlen))
    out.extend(sorted(others))
    return out


def _network_text(version: int, number: int, prefixlen: int) -> str:
    address = int_to_ip(number, version)
    return address if prefixlen == BITS[version] else f"{address}/{prefixlen}"


def diff_summary(old: set[str] | None, new: set[str]) -> dict[str, object]:
    """Per-type diff for run.diff: counts plus a short sorted sample of each side."""
    previous = old or set()
    added = new - previous
    removed = previous - new
    return {
        "added": len(added),
        "removed": len(removed),
        # A sample, not the first N: sorting a million-entry diff is not worth its time.
        "added_sample": sorted(islice(added, DIFF_SAMPLE), key=sort_key),
        "removed_sample": sorted(islice(removed, DIFF_SAMPLE), key=sort_key),
        "previous": len(previous),
    }
