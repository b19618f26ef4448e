"""The bulk text path (engine.bulk) gives exactly what the per-line path gives:
the same indicators with the same masks, the same counts of lines, tokens, types and
invalid reasons, on bodies mixing valid, invalid and edge forms."""

from __future__ import annotations

import socket

from hypothesis import given, settings
from hypothesis import strategies as st

from edl_api.engine import bulk
from edl_api.engine.config import SourceConfig
from edl_api.engine.drops import DropRecorder
from edl_api.engine.parsers import ParseStats, decode, parse_text
from edl_api.engine.store import IndicatorStore, IngestStats, ingest

OCTETS = st.one_of(
    st.integers(0, 255).map(str),
    st.sampled_from(["00", "01", "010", "007", "256", "999", "1000", "", "a", "1e", "٣"]),
)
LENGTHS = st.one_of(
    st.integers(0, 40).map(str),
    st.sampled_from(["08", "00", "032", "031", "009", "", "x", "31", "32", "1/2", "-1", "+8"]),
)
SUFFIXES = st.sampled_from(["", "", "", "\r", " ", "\t# c", "#x", " 1.2.3.4", "\r\r", "\xa0",
                            "\u2028", ";"])
PREFIXES = st.sampled_from(["", "", "", " ", "\t", "#", ";", "\ufeff", "+"])
OTHERS = st.sampled_from(["example.com", "http://a.b/c", "::1", "2001:db8::/32", "", "#c",
                          "1.2.3.4/32", "10.0.0.1", "\udcff", "é.fr", "1.2.3.4.5", "1.2.3",
                          "255.255.255.255/31", "0.0.0.0/0", "*.example.org"])


@st.composite
def lines(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 4)) == 0:
        return draw(OTHERS)
    count = draw(st.sampled_from([4, 4, 4, 4, 3, 5]))
    address = ".".join(draw(OCTETS) for _ in range(count))
    if draw(st.booleans()):
        address += "/" + draw(LENGTHS)
    return draw(PREFIXES) + address + draw(SUFFIXES)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    text = "\n".join(draw(st.lists(lines(), max_size=40)))
    if draw(st.booleans()):
        text += "\n"
    data = text.encode("utf-8", "surrogateescape")
    if draw(st.booleans()):
        data = b"\r\n".join(data.split(b"\n"))  # CRLF line ends
    if draw(st.integers(0, 5)) == 0:
        data = b"\xef\xbb\xbf" + data
    if draw(st.integers(0, 5)) == 0:
        data += b"\xff\xfe\n1.2.3.4"  # bad UTF-8, then a last line with no newline
    return data


def per_line(data: bytes, types: frozenset[str] | None = None) -> tuple[object, ...]:
    store, parsed, ingested = IndicatorStore(), ParseStats(), IngestStats()
    recorder = DropRecorder()
    ingest(parse_text(decode(data), parsed), store, 2, types, ingested, recorder)
    return store.maps(), parsed, ingested, recorder.invalid, recorder.filtered


def in_bulk(data: bytes, types: frozenset[str] | None = None) -> tuple[object, ...]:
    store, parsed, ingested = IndicatorStore(), ParseStats(), IngestStats()
    recorder = DropRecorder()
    bulk.ingest_text(data, store, 2, types, parsed, ingested, recorder)
    return store.maps(), parsed, ingested, recorder.invalid, recorder.filtered


@settings(max_examples=300, deadline=None)
@given(bodies())
def test_bulk_equals_per_line(data: bytes) -> None:
    assert in_bulk(data) == per_line(data)


@settings(max_examples=50, deadline=None)
@given(bodies())
def test_bulk_equals_per_line_with_types(data: bytes) -> None:
    types = frozenset({"ipv4", "cidr", "url"})
    assert in_bulk(data, types) == per_line(data, types)


@settings(max_examples=300, deadline=None)
@given(bodies(), st.integers(1, 40))
def test_bulk_equals_per_line_in_small_blocks(data: bytes, block: int) -> None:
    """Block edges anywhere: after any line, inside a long one, at the end."""
    saved = bulk.BLOCK_BYTES
    bulk.BLOCK_BYTES = block
    try:
        assert in_bulk(data) == per_line(data)
    finally:
        bulk.BLOCK_BYTES = saved


def test_octets_follow_inet_pton() -> None:
    # Whatever inet_pton accepts is taken in bulk with its value; the rest is left alone.
    forms = ["0.0.0.0", "255.255.255.255", "01.2.3.4", "1.2.3.04", "00.1.2.3", "1.2.3.256",
             "1.2.3", "1.2.3.4.5", "1..2.3", "001.2.3.4", "9.9.9.1000", "1.2.3.4/08",
             "1.2.3.4/31", "1.2.3.4/32", "1.2.3.4/", "1.2.3.4/100", "10.0.0.0/0"]
    split = bulk.split_body("\n".join(forms).encode())
    hosts = []
    for form in forms:
        try:
            hosts.append(int.from_bytes(socket.inet_pton(socket.AF_INET, form), "big"))
        except OSError:
            pass
    assert split.hosts.tolist() == hosts
    assert list(zip(split.cidr_network.tolist(), split.cidr_prefixlen.tolist(), strict=True)) \
        == [(0x01020304, 8), (0x01020304, 31), (0x0A000000, 0)]
    assert split.lines == len(forms)
    rest = split.rest.decode().splitlines()
    assert {"01.2.3.4", "1.2.3.4/32", "1.2.3.4/100"} <= set(rest)


def test_many_lines_cross_chunks() -> None:
    data = b"".join(b"%d.%d.%d.%d\n" % (i >> 24, i >> 16 & 255, i >> 8 & 255, i & 255)
                    for i in range(1, 3 * bulk.BLOCK_BYTES // 16))
    assert in_bulk(data + b"x.example\n") == per_line(data + b"x.example\n")


def test_takes_only_plain_text_without_expiry_or_narrow_types() -> None:
    assert bulk.takes(SourceConfig(name="a", url="https://x.example/a"))
    assert not bulk.takes(SourceConfig(name="a", url="https://x.example/a", format="csv",
                                       column=0))
    assert not bulk.takes(SourceConfig(name="a", url="https://x.example/a", max_age_days=3))
    assert not bulk.takes(SourceConfig(name="a", url="https://x.example/a", types=["ipv4"]))
