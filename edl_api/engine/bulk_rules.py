"""`rules.Rules._networks` for IPv4 with the per-network work as arrays: min_prefix as
one comparison, the sort as one lexsort, and each exclusion (reserved ranges, allowlist)
as one `np.searchsorted` that finds the few networks it touches; only those go through
`IntervalSet.subtract`. Drops are counted and recorded in the same order as there."""

from __future__ import annotations

from collections import Counter
from itertools import chain

import numpy as np

from edl_api.engine.drops import DropRecorder
from edl_api.engine.indicators import CIDR4
from edl_api.engine.special import IntervalSet
from edl_api.engine.store import Networks


def _touching(first: np.ndarray, last: np.ndarray, excluded: IntervalSet) -> list[int]:
    """Indexes of the pieces [first, last] that intersect `excluded` (sorted, disjoint)."""
    starts = np.array(excluded.starts, dtype=np.int64)
    ends = np.array(excluded.ends, dtype=np.int64)
    at = np.searchsorted(starts, last, side="right") - 1  # last interval starting <= last
    hit = (at >= 0) & (ends[np.maximum(at, 0)] >= first)
    return np.flatnonzero(hit).tolist()


def ipv4_networks(
    mapping: dict[tuple[int, int], int],
    min_prefix: int,
    checks: list[tuple[str, IntervalSet]],
    drops: Counter[str],
    split: Counter[str],
    recorder: DropRecorder | None,
) -> Networks:
    """Sorted (first, last, mask) pieces of `mapping`'s networks after min_prefix and
    `checks` (rule, excluded set) in order, as `Rules._networks(mapping, 4)` gives them."""
    if not mapping:
        return []
    # fromiter over the flattened pairs: ~2x np.array of a list of tuples
    keys = np.fromiter(chain.from_iterable(mapping), dtype=np.int64,
                       count=2 * len(mapping)).reshape(-1, 2)
    masks = list(mapping.values())  # Python ints: a mask may pass 2**63
    network, prefixlen = keys[:, 0], keys[:, 1]
    short = prefixlen < min_prefix
    if short.any():
        dropped = np.flatnonzero(short).tolist()
        drops["min_prefix"] += len(dropped)
        if recorder is not None:
            pairs = keys[dropped].tolist()
            for (net, plen), index in zip(pairs, dropped, strict=True):
                recorder.add(CIDR4, (net, plen), "min_prefix", masks[index])
        keep = np.flatnonzero(~short)
        network, prefixlen = network[keep], prefixlen[keep]
        masks = [masks[i] for i in keep.tolist()]
    first = network
    last = network | ((np.int64(1) << (32 - prefixlen)) - 1)
    order = np.lexsort((last, first))  # (first, last) pairs are unique: the tuple order
    first, last = first[order], last[order]
    pieces: Networks = list(zip(
        first.tolist(), last.tolist(), [masks[i] for i in order.tolist()], strict=True
    ))
    for rule, excluded in checks:
        if not excluded or not pieces:
            continue
        touched = _touching(first, last, excluded)
        if not touched:
            continue
        kept: Networks = []
        cursor = 0
        for index in touched:
            kept.extend(pieces[cursor:index])
            cursor = index + 1
            piece_first, piece_last, mask = pieces[index]
            remaining = excluded.subtract(piece_first, piece_last)
            if not remaining:
                drops[rule] += 1
                if recorder is not None:
                    recorder.add_range(4, piece_first, piece_last, rule, mask, False)
            else:
                split[rule] += 1
                if recorder is not None:
                    recorder.add_range(4, piece_first, piece_last, rule, mask, True)
                kept.extend((a, b, mask) for a, b in remaining)
        kept.extend(pieces[cursor:])
        pieces = kept
        first = np.array([piece[0] for piece in pieces], dtype=np.int64)
        last = np.array([piece[1] for piece in pieces], dtype=np.int64)
    return pieces
