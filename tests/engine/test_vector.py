"""The array (numpy) IPv4 path against the pure-Python path and netaddr.IPSet.

Small inputs finish in Python (`vector.PYTHON_TAIL`); these tests set it to 0 so every
interval goes through the vectorised passes.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import netaddr
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edl_api.engine import aggregate, vector
from edl_api.engine.entries import FeedEntry
from edl_api.engine.entries_file import ENTRIES_FILE, entry_json, read_entries_file, write_entries
from edl_api.engine.indicators import classify_parts
from edl_api.engine.store import IndicatorStore, IngestStats, ingest
from edl_api.feeds.entries_reader import as_json_lines

BITS = 32


@contextmanager
def _all_vectorised() -> Iterator[None]:
    saved = vector.PYTHON_TAIL
    vector.PYTHON_TAIL = 0
    try:
        yield
    finally:
        vector.PYTHON_TAIL = saved


def _python_family(
    hosts: list[int], masks: dict[int, int], nets: list[tuple[int, int, int]], min_prefix: int
) -> aggregate.FamilyFeeds:
    original = aggregate.fits
    aggregate.fits = lambda *_: False  # type: ignore[assignment]
    try:
        return aggregate.aggregate_family(hosts, masks, nets, BITS, min_prefix)
    finally:
        aggregate.fits = original


addresses = st.integers(0, 2**32 - 1)
masks = st.integers(1, 2**63 - 1)


@st.composite
def families(draw: st.DrawFn) -> tuple[list[int], dict[int, int], list[tuple[int, int, int]], int]:
    host_masks = draw(st.dictionaries(addresses, masks, max_size=40))
    nets = []
    for _ in range(draw(st.integers(0, 25))):
        prefixlen = draw(st.integers(8, 31))
        first = draw(addresses) & ~((1 << (32 - prefixlen)) - 1)
        nets.append((first, first | ((1 << (32 - prefixlen)) - 1), draw(masks)))
    # Nearby hosts so that some are covered by or adjacent to a network.
    for first, last, mask in nets[:5]:
        host_masks[min(last + 1, 2**32 - 1)] = mask
        host_masks[first] = host_masks.get(first, 0) | 1
    return sorted(host_masks), host_masks, sorted(nets), draw(st.integers(0, 24))


@settings(max_examples=80, deadline=None)
@given(families())
def test_array_path_equals_python_path(
    family: tuple[list[int], dict[int, int], list[tuple[int, int, int]], int],
) -> None:
    hosts, host_masks, nets, min_prefix = family
    expected = _python_family(hosts, host_masks, nets, min_prefix)
    assert vector.fits(BITS, host_masks, nets)
    with _all_vectorised():
        got = vector.aggregate_arrays(hosts, host_masks, nets, BITS, min_prefix)
    assert got.networks.tuples() == expected.networks
    assert got.union.tuples() == expected.union
    assert list(zip(got.hosts.tolist(), got.host_masks.tolist(), strict=True)) == expected.hosts
    assert got.covered_hosts == expected.covered_hosts
    # And the union is exactly the address set (oracle: netaddr).
    union = netaddr.IPSet(
        [netaddr.IPNetwork(f"{netaddr.IPAddress(n)}/{p}") for n, p, _ in got.union.tuples()]
    )
    oracle = netaddr.IPSet([netaddr.IPAddress(h) for h in hosts])
    for first, last, _ in nets:
        oracle.add(netaddr.IPRange(first, last))
    assert union == oracle
    assert all(p >= min_prefix for _, p, _ in got.union.tuples())


def test_masks_of_64_sources_and_more_take_the_python_path() -> None:
    assert vector.fits(BITS, {1: 2**62}, [(0, 3, 2**62)])
    assert not vector.fits(BITS, {1: 2**63}, [])
    assert not vector.fits(BITS, {}, [(0, 3, 2**70)])
    assert not vector.fits(128, {1: 1}, [])


def test_seventy_sources_aggregate_exactly() -> None:
    """Masks wider than 63 bits (70 sources) through ingest and aggregate_family."""
    store = IndicatorStore()
    stats = IngestStats()
    addresses = [f"198.51.{i // 4}.{i * 7 % 256}" for i in range(70)]
    for index in range(70):
        ingest([addresses[index], f"203.0.{index}.0/24", "192.0.2.1"], store, 1 << index,
               None, stats)
    assert store.ipv4[int(netaddr.IPAddress("192.0.2.1"))] == (1 << 70) - 1
    hosts = sorted(store.ipv4)
    nets = sorted((n, n | 255, m) for (n, _), m in store.cidr4.items())
    feeds = aggregate.aggregate_family(hosts, store.ipv4, nets, BITS, 0)
    assert feeds.vector is None  # wider than int64: the Python path
    published = netaddr.IPSet(
        [netaddr.IPNetwork(f"{netaddr.IPAddress(n)}/{p}") for n, p, _ in feeds.union]  # type: ignore[union-attr]
    )
    expected = [*addresses, "192.0.2.1", *(f"203.0.{i}.0/24" for i in range(70))]
    assert published == netaddr.IPSet(expected)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(addresses, st.integers(0, 32)), max_size=60))
def test_texts_are_what_inet_ntop_writes(pairs: list[tuple[int, int]]) -> None:
    network = np.array([n for n, _ in pairs], dtype=np.int64)
    prefixlen = np.array([p for _, p in pairs], dtype=np.int64)
    expected = [
        socket.inet_ntop(socket.AF_INET, n.to_bytes(4, "big")) + ("" if p == 32 else f"/{p}")
        for n, p in pairs
    ]
    assert vector.ipv4_texts(network, prefixlen) == expected


def test_ingest_fast_paths_match_classify() -> None:
    """Dotted quads and IPv4 CIDRs on the fast paths give what the full classifier does."""
    tokens = ["10.0.0.1", "10.0.0.1", "10.1.2.3/8", "10.1.2.3/32", "10.1.2.3/33", "1.2.3.4/01",
              "01.2.3.4", "1.2.3.4/\u00b2", "1.2.3.4/001", "256.1.1.1/8", "1.2.3.4/", "9.9.9.9/0"]
    store = IndicatorStore()
    stats = IngestStats()
    ingest(tokens, store, 1, None, stats)
    expected = IndicatorStore()
    invalid = 0
    for token in tokens:
        parts = classify_parts(token)
        if isinstance(parts, str):
            invalid += 1
            continue
        for kind, key in parts:
            expected.maps()[kind][key] = 1
    assert store.maps() == expected.maps()
    assert stats.invalid.total() == invalid
    assert stats.indicators["ipv4"] == 3
    assert stats.indicators["cidr"] == 4


def test_entries_file_is_the_reference_json(tmp_path: Path) -> None:
    shared = (["a", "b"], ["t\u00e9", 'q"'])
    entries = {
        "ipv4": [FeedEntry("192.0.2.1", "ipv4", *shared, 70), FeedEntry("192.0.2.2", "ipv4",
                 ["a"], [], 5)],
        "url": [FeedEntry('http://x.example/\u00e9"\\', "url", *shared, 70)],
        "ip": [FeedEntry("192.0.2.1", "ipv4", *shared, 70), FeedEntry("192.0.2.0/31", "cidr",
               ["a"], [], 5)],
    }
    path = tmp_path / ENTRIES_FILE
    write_entries(entries, path)
    expected = [entry_json(e) for e in [*entries["ipv4"], *entries["url"], entries["ip"][1]]]
    header = '{"type":"ipv4","sources":["a","b"],"tags":["t\\u00e9","q\\""],"confidence":70}'
    assert path.read_text(encoding="utf-8").splitlines() == [
        "#edl-entries 2", header, "192.0.2.1",
        '{"type":"ipv4","sources":["a"],"tags":[],"confidence":5}', "192.0.2.2",
        '{"type":"url","sources":["a","b"],"tags":["t\\u00e9","q\\""],"confidence":70}',
        'http://x.example/\u00e9"\\',
        '{"type":"cidr","sources":["a"],"tags":[],"confidence":5}', "192.0.2.0/31",
    ]
    # Read back (and downloaded) it is the reference JSON of every entry, each once.
    assert sorted(json.dumps(e, separators=(",", ":")) for e in read_entries_file(path)) == (
        sorted(expected)
    )
    assert sorted(as_json_lines(path.read_bytes()).decode().splitlines()) == sorted(expected)
    assert json.loads(expected[2])["value"] == 'http://x.example/\u00e9"\\'
