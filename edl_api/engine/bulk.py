"""The bulk text path: a plain `text` body's dotted quads and short IPv4 CIDRs parsed as
numpy arrays, every other line left to the per-line path (`parsers.parse_text` and
`store.ingest`), so classification, counts and explain records stay what they were.

A line is taken in bulk only when it is (after one optional trailing CR) nothing but
four 1-3 digit octets <= 255 without leading zeros (what `socket.inet_pton(AF_INET)`
accepts) and optionally `/` and a 1-2 digit length below 32 (what `ingest`'s CIDR fast
path takes). Anything else (comments, spaces, names, URLs, IPv6, `/32`, odd forms) is
not judged here: it goes through the existing path unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edl_api.engine.config import SourceConfig
from edl_api.engine.drops import DropRecorder
from edl_api.engine.lines import line_blocks
from edl_api.engine.parsers import ParseStats, parse_text
from edl_api.engine.store import IndicatorStore, IngestStats, ingest

WIDTH = 18  # "255.255.255.255/31" is the longest line taken in bulk
MIN_WIDTH = 7  # "1.2.3.4"
BLOCK_BYTES = 1 << 22  # body bytes per vectorised pass (~140k lines of addresses)
BOM = b"\xef\xbb\xbf"
U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]


@dataclass
class BulkLines:
    """A body split into what the arrays took and what the per-line path must see."""

    hosts: I64  # addresses of the bulk host lines, in line order
    cidr_network: I64  # networks as written (host bits not yet cleared), in line order
    cidr_prefixlen: I64
    rest: bytes  # the other lines, each newline-terminated, in their order
    lines: int  # every line of the body, as `parsers._lines` counts them


def _scan(matrix: U8, length: I64) -> tuple[Any, Any, I64, I64]:
    """(is a host line, is a CIDR line, address, prefix length) for each row of
    `matrix` (a line's first WIDTH bytes, `length` of them meaningful)."""
    rows = len(length)
    columns = np.ascontiguousarray(matrix.T)  # one contiguous row per character position
    ok = (length >= MIN_WIDTH) & (length <= WIDTH)
    # int16: a valid field is at most 3 digits; an invalid row may wrap, harmlessly
    fields = np.zeros((5, rows), dtype=np.int16)
    field = np.zeros(rows, dtype=np.int8)  # separators seen so far
    value = np.zeros(rows, dtype=np.int16)
    digits = np.zeros(rows, dtype=np.int8)
    leading_zero = np.zeros(rows, dtype=bool)
    slash_at = np.zeros(rows, dtype=bool)  # the current field is the length after `/`
    for column in range(WIDTH):
        char = columns[column]
        active = column < length
        d = char - np.uint8(48)  # wraps below "0": one compare for "is a digit"
        d16 = d.astype(np.int16)
        is_digit = active & (d <= 9)
        is_dot = active & (char == 46)
        is_slash = active & (char == 47)
        # A separator ends a non-empty field; dots only between octets, `/` after the 4th.
        separator = is_dot | is_slash
        ok &= ~active | is_digit | separator
        ok &= ~separator | (digits > 0)
        ok &= ~is_dot | (field < 3) & ~slash_at
        ok &= ~is_slash | (field == 3)
        # An octet of two or more digits may not start with 0 (inet_pton); a length may;
        # a fourth digit is never valid (and keeps `value` small).
        ok &= ~is_digit | (~leading_zero | slash_at) & (digits < 3)
        if separator.any():
            at = np.flatnonzero(separator)
            fields[np.minimum(field[at], 4), at] = value[at]
            field[at] += 1
            value[at] = 0
            digits[at] = 0
            leading_zero[at] = False
            slash_at |= is_slash
        value = np.where(is_digit, value * 10 + d16, value)
        leading_zero |= is_digit & (digits == 0) & (d == 0)
        digits += is_digit
    ok &= digits > 0
    fields[np.minimum(field, 4), np.arange(rows)] = value
    ok &= np.where(slash_at, (digits <= 2) & (value < 32), field == 3)
    octets = fields[:4]
    ok &= (octets <= 255).all(axis=0)
    address = (
        (octets[0].astype(np.int64) << 24) | (octets[1].astype(np.int64) << 16)
        | (octets[2].astype(np.int64) << 8) | octets[3]
    )
    return ok & ~slash_at, ok & slash_at, address, fields[4].astype(np.int64)


def _rows(buffer: U8, rows: I64) -> U8:
    """The WIDTH bytes from each of `rows` (ascending offsets); past the end, zeros."""
    safe = len(buffer) - WIDTH  # a row after this would read past the end
    if len(rows) and rows[-1] <= safe:
        return np.lib.stride_tricks.sliding_window_view(buffer, WIDTH)[rows]
    matrix = np.empty((len(rows), WIDTH), dtype=np.uint8)
    near = rows > safe
    if safe >= 0:
        matrix[~near] = np.lib.stride_tricks.sliding_window_view(buffer, WIDTH)[rows[~near]]
    tail_from = max(0, safe)
    tail = np.concatenate((buffer[tail_from:], np.zeros(WIDTH, dtype=np.uint8)))
    matrix[near] = np.lib.stride_tricks.sliding_window_view(tail, WIDTH)[rows[near] - tail_from]
    return matrix


def split_body(data: bytes) -> BulkLines:
    """The bulk lines of `data` as arrays, and the other lines as bytes.

    A block of lines at a time: every temporary is block-sized, so the allocator reuses
    it instead of touching fresh memory (slow here) for body-sized arrays at 5M lines."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    host_parts: list[I64] = []
    net_parts: list[I64] = []
    len_parts: list[I64] = []
    rest_parts: list[bytes] = []
    lines = 0
    for first, end in line_blocks(data, BLOCK_BYTES):
        block = buffer[first:end]
        ends = np.flatnonzero(block == 10)
        if block[-1] != 10:
            ends = np.append(ends, len(block))  # the body's last line, without a newline
        lines += len(ends)
        starts = np.empty(len(ends), dtype=np.int64)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        length = ends - starts
        # One trailing CR is stripped by the per-line path (it is in TRIM): here too.
        nonempty = np.flatnonzero(length > 0)
        length[nonempty] -= block[ends[nonempty] - 1] == 13
        candidates = np.flatnonzero((length >= MIN_WIDTH) & (length <= WIDTH))
        if not len(candidates):
            rest_parts.append(data[first:end])
            continue
        matrix = _rows(block, starts[candidates])
        is_host, is_cidr, address, prefixlen = _scan(matrix, length[candidates])
        host_parts.append(address[is_host])
        net_parts.append(address[is_cidr])
        len_parts.append(prefixlen[is_cidr])
        kept = np.ones(len(ends), dtype=bool)
        kept[candidates[is_host | is_cidr]] = False
        if kept.all():
            rest_parts.append(data[first:end])
        elif kept.any():
            # Every byte of the lines not taken: one mask over the block, not a slice a line.
            keep = np.repeat(kept, ends - starts + 1)[: len(block)]
            rest_parts.append(block[keep].tobytes())
    rest = b"".join(rest_parts)
    if rest and not rest.endswith(b"\n"):
        rest += b"\n"  # the body's last line, without its newline
    empty = np.empty(0, dtype=np.int64)
    return BulkLines(
        np.concatenate(host_parts) if host_parts else empty,
        np.concatenate(net_parts) if net_parts else empty,
        np.concatenate(len_parts) if len_parts else empty,
        rest,
        lines,
    )


def takes(source: SourceConfig) -> bool:
    """Whether `source` may use the bulk path: plain text, no expiry (its tokens are
    aged one by one), and both bulk types wanted (a filtered token is recorded)."""
    types = source.types
    return (
        source.format == "text"
        and source.max_age_days is None
        and (types is None or ("ipv4" in types and "cidr" in types))
    )


def ingest_text(
    data: bytes, store: IndicatorStore, bit: int, types: frozenset[str] | None,
    parse_stats: ParseStats, ingest_stats: IngestStats, recorder: DropRecorder | None = None,
) -> None:
    """`ingest(parse_text(decode(data)), …)` with the bulk lines taken as arrays."""
    # `parsers.decode` strips a BOM at the body's start (only there): so does this.
    bulk = split_body(data[len(BOM):] if data.startswith(BOM) else data)
    rest_text = bulk.rest.decode("utf-8", "replace")
    rest_stats = ParseStats()
    tokens = parse_text(rest_text, rest_stats)
    parse_stats.lines += bulk.lines
    parse_stats.invalid.update(rest_stats.invalid)
    ingest(tokens, store, bit, types, ingest_stats, recorder)
    if len(bulk.hosts):
        store.hosts4.add(bulk.hosts, bit)
        ingest_stats.indicators["ipv4"] += len(bulk.hosts)
    if len(bulk.cidr_network):
        plen = bulk.cidr_prefixlen
        network = bulk.cidr_network & ~((np.int64(1) << (32 - plen)) - 1)
        keys = dict.fromkeys(zip(network.tolist(), plen.tolist(), strict=True))
        cidr4 = store.cidr4
        if cidr4:
            get = cidr4.get
            cidr4.update({key: get(key, 0) | bit for key in keys})
        else:
            cidr4.update(dict.fromkeys(keys, bit))
        ingest_stats.indicators["cidr"] += len(network)
    ingest_stats.tokens += len(bulk.hosts) + len(bulk.cidr_network)
