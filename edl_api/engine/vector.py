"""The IPv4 aggregation path as numpy arrays: merge, cover and prefix-split in C loops.

Addresses are int64 (an IPv4 address and `last + 1` fit), source masks int64 too, so
this path takes masks below 2**63 (at most 63 sources); `fits` says whether a family
can use it, and the caller keeps the pure-Python path (arbitrary-width int masks, IPv6)
otherwise. The results are exactly those of `aggregate.merge_intervals`/`to_prefixes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from edl_api.engine.indicators import range_to_prefixes

Array = npt.NDArray[np.int64]
AnyArray = npt.NDArray[Any]  # characters (uint8) and flags (bool)
MASK_LIMIT = 1 << 63  # masks at or above need more than int64
# Intervals still unsplit after a pass drop to Python below this many (a broad interval
# under a high min_prefix can need thousands of blocks, each a pass).
PYTHON_TAIL = 32


def fits(bits: int, host_masks: dict[int, int], networks: list[tuple[int, int, int]]) -> bool:
    """Whether this family can take the array path (IPv4, every mask below 2**63)."""
    if bits != 32:
        return False
    top = max(host_masks.values(), default=0)
    if networks:
        top = max(top, max(map(itemgetter(2), networks)))
    return top < MASK_LIMIT


@dataclass
class Prefixes:
    """Sorted prefixes as parallel arrays."""

    network: Array
    prefixlen: Array
    mask: Array

    def __len__(self) -> int:
        return len(self.network)

    def tuples(self) -> list[tuple[int, int, int]]:
        return list(zip(self.network.tolist(), self.prefixlen.tolist(), self.mask.tolist(),
                        strict=True))


def merge(first: Array, last: Array, mask: Array) -> tuple[Array, Array, Array]:
    """Merge pieces sorted by `first` that overlap or touch; masks OR-ed per group."""
    if len(first) == 0:
        return first, last, mask
    reach = np.maximum.accumulate(last)
    starts = np.empty(len(first), dtype=bool)
    starts[0] = True
    np.greater(first[1:], reach[:-1] + 1, out=starts[1:])
    index = np.flatnonzero(starts)
    return (
        first[index],
        np.maximum.reduceat(last, index),
        np.bitwise_or.reduceat(mask, index),
    )


def _floor_log2(values: Array) -> Array:
    # frexp is exact for integers below 2**53: values == m * 2**e with 0.5 <= m < 1.
    return (np.frexp(values.astype(np.float64))[1] - 1).astype(np.int64)


def split(first: Array, last: Array, mask: Array, bits: int, min_prefix: int) -> Prefixes:
    """Fewest prefixes per interval (largest aligned block at each start, never broader
    than `min_prefix`), sorted: one vectorised pass per block of the longest interval."""
    max_size_bits = bits - min_prefix
    nets: list[Array] = []
    lens: list[Array] = []
    masks: list[Array] = []
    start, end, owner = first.copy(), last, mask
    tail: list[tuple[int, int, int]] = []
    while len(start):
        if len(start) < PYTHON_TAIL:
            for s, e, m in zip(start.tolist(), end.tolist(), owner.tolist(), strict=True):
                tail.extend((n, p, m) for n, p in range_to_prefixes(s, e, bits, min_prefix))
            break
        align = np.where(start == 0, bits, _floor_log2(start & -start))
        span = _floor_log2(end - start + 1)
        size_bits = np.minimum(np.minimum(align, span), max_size_bits)
        nets.append(start)
        lens.append(bits - size_bits)
        masks.append(owner)
        start = start + (np.int64(1) << size_bits)
        more = start <= end
        if not more.all():
            start, end, owner = start[more], end[more], owner[more]
    if tail:
        extra = np.array(tail, dtype=np.int64).reshape(-1, 3)
        nets.append(extra[:, 0])
        lens.append(extra[:, 1])
        masks.append(extra[:, 2])
    if not nets:
        empty = np.empty(0, dtype=np.int64)
        return Prefixes(empty, empty, empty)
    network = np.concatenate(nets)
    order = np.argsort(network, kind="stable")  # disjoint intervals: networks are unique
    return Prefixes(network[order], np.concatenate(lens)[order], np.concatenate(masks)[order])


def _masks_of(host: Array, hosts: list[int], host_masks: dict[int, int]) -> Array:
    """The masks of `hosts` (sorted): read off the dict in bulk when it holds exactly
    those keys (after the rules it does), else one lookup each."""
    if len(host_masks) == len(hosts):
        keys = np.array(list(host_masks), dtype=np.int64)
        order = np.argsort(keys, kind="stable")
        if np.array_equal(keys[order], host):
            return np.array(list(host_masks.values()), dtype=np.int64)[order]
    return np.array(list(map(host_masks.__getitem__, hosts)), dtype=np.int64)


@dataclass
class VectorFamily:
    hosts: Array  # kept hosts (not inside a network), sorted
    host_masks: Array
    networks: Prefixes
    union: Prefixes
    covered_hosts: int


def aggregate_arrays(
    hosts: list[int], host_masks: dict[int, int], networks: list[tuple[int, int, int]],
    bits: int, min_prefix: int,
) -> VectorFamily:
    """`aggregate.aggregate_family(..., aggregate=True)` for one family whose masks fit."""
    host = np.array(hosts, dtype=np.int64)
    return aggregate_sorted(host, _masks_of(host, hosts, host_masks), networks, bits, min_prefix)


def aggregate_sorted(
    host: Array, host_mask: Array, networks: list[tuple[int, int, int]], bits: int,
    min_prefix: int,
) -> VectorFamily:
    """`aggregate_arrays` for hosts already as sorted distinct arrays (`Hosts4.arrays`)."""
    count = len(host)
    if networks:
        pieces = np.fromiter(chain.from_iterable(networks), dtype=np.int64,
                             count=3 * len(networks)).reshape(-1, 3)
        first, last, mask = merge(pieces[:, 0], pieces[:, 1], pieces[:, 2])
    else:
        first = last = mask = np.empty(0, dtype=np.int64)
    net_feed = split(first, last, mask, bits, min_prefix)
    if len(first) and count:
        at = np.searchsorted(first, host, side="right") - 1
        inside = (at >= 0) & (host <= last[np.maximum(at, 0)])
        covered = int(np.count_nonzero(inside))
        if covered:
            keep = ~inside
            host, host_mask = host[keep], host_mask[keep]
    else:
        covered = 0
    all_first = np.concatenate((host, first))
    all_last = np.concatenate((host, last))
    all_mask = np.concatenate((host_mask, mask))
    order = np.argsort(all_first, kind="stable")
    union_first, union_last, union_mask = merge(
        all_first[order], all_last[order], all_mask[order]
    )
    union = split(union_first, union_last, union_mask, bits, min_prefix)
    return VectorFamily(host, host_mask, net_feed, union, covered)


def _digits(octet: Array) -> tuple[AnyArray, AnyArray, AnyArray, AnyArray, AnyArray]:
    """Hundreds, tens and units as ASCII, and whether the first two are printed."""
    return (
        (octet // 100 + 48).astype(np.uint8),
        (octet // 10 % 10 + 48).astype(np.uint8),
        (octet % 10 + 48).astype(np.uint8),
        octet >= 100,
        octet >= 10,
    )


def ipv4_texts(network: Array, prefixlen: Array) -> list[str]:
    """Dotted quads (`/len` unless a host), as `socket.inet_ntop` and `f"{ip}/{len}"`
    write them: one character matrix, its printed cells taken in row order, one split."""
    count = len(network)
    if count == 0:
        return []
    columns: list[AnyArray] = []
    shown: list[AnyArray | bool] = []
    dot = np.full(count, 46, dtype=np.uint8)
    for shift in (24, 16, 8, 0):
        hundreds, tens, units, has_hundreds, has_tens = _digits((network >> shift) & 255)
        columns += [hundreds, tens, units]
        shown += [has_hundreds, has_tens, True]
        if shift:
            columns.append(dot)
            shown.append(True)
    is_net = prefixlen != 32
    _, tens, units, _, has_tens = _digits(prefixlen)
    columns += [np.full(count, 47, dtype=np.uint8), tens, units, np.full(count, 10, np.uint8)]
    shown += [is_net, is_net & has_tens, is_net, True]
    matrix = np.stack(columns, axis=1)
    visible = np.stack([np.broadcast_to(s, count) for s in shown], axis=1)
    return matrix[visible].tobytes().decode("ascii").split("\n")[:-1]


def mask_groups(mask: Array) -> tuple[list[int], list[int]]:
    """Distinct masks (as Python ints) and each element's index among them."""
    if len(mask) == 0:
        return [], []
    order = np.argsort(mask, kind="stable")
    ordered = mask[order]
    starts = np.empty(len(mask), dtype=bool)
    starts[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    which = np.empty(len(mask), dtype=np.int64)
    which[order] = np.cumsum(starts) - 1
    return ordered[starts].tolist(), which.tolist()
