"""Capacity budgets: how many entries of each feed a device is served when its feeds of one
kind share that kind's limit. Pure functions; `feeds.serving` cuts the bodies."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from itertools import groupby
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def allocate(limit: int | None, feeds: Sequence[tuple[K, int, int]]) -> dict[K, int]:
    """`feeds` are (key, priority, published count). Higher priority is served whole first
    while it fits; the priority level that does not fit shares what is left evenly (a feed
    needing less than its share leaves the rest to the others) and lower levels get nothing.
    Returns key → entries allowed, equal to the count for a feed served whole."""
    if limit is None:
        return {key: count for key, _, count in feeds}
    remaining = max(limit, 0)
    allowed: dict[K, int] = {}
    ordered = sorted(feeds, key=lambda feed: -feed[1])
    for _, level in groupby(ordered, key=lambda feed: feed[1]):
        members = [(key, count) for key, _, count in level]
        total = sum(count for _, count in members)
        if total <= remaining:
            allowed.update(members)
            remaining -= total
            continue
        # Smallest first: each takes at most an even share of what is still left.
        members.sort(key=lambda member: (member[1], repr(member[0])))
        for index, (key, count) in enumerate(members):
            share = remaining // (len(members) - index)
            given = min(count, share)
            allowed[key] = given
            remaining -= given
        remaining = 0
    return allowed
