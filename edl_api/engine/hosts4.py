"""The store's IPv4 hosts (address -> source mask) without a million-key dict.

The bulk path hands in whole arrays of addresses; the per-line path and augment write
one key at a time. Both are kept as they came, in order: dict parts for single writes,
(sorted addresses, masks) array parts for batches. The rules and the aggregation read
the union as two sorted arrays (`arrays`); anything else asks for `as_dict`, which
replays the parts in order into one dict, so its keys, masks and iteration order are
exactly those of writing every host into one dict as it came.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.int64]
Batch = tuple[Array, Array]  # sorted distinct addresses, each one's source mask
MASK_LIMIT = 1 << 63  # masks at or above need more than int64: the dict path


def distinct(values: Array) -> Array:
    """Sorted distinct values (np.unique hashes in numpy 2.4: 70x slower than a sort)."""
    ordered = np.sort(values)
    if len(ordered) < 2:
        return ordered
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def _or_into(mapping: dict[int, int], keys: list[int], masks: list[int]) -> None:
    if not mapping:
        mapping.update(zip(keys, masks, strict=True))
        return
    get = mapping.get
    mapping.update({key: get(key, 0) | mask for key, mask in zip(keys, masks, strict=True)})


def union(parts: list[Batch]) -> Batch:
    """The sorted distinct addresses of all `parts`, masks OR-ed per address."""
    if len(parts) == 1:
        return parts[0]
    keys = np.concatenate([p[0] for p in parts])
    masks = np.concatenate([p[1] for p in parts])
    order = np.argsort(keys, kind="stable")
    keys, masks = keys[order], masks[order]
    if not len(keys):
        return keys, masks
    starts = np.empty(len(keys), dtype=bool)
    starts[0] = True
    np.not_equal(keys[1:], keys[:-1], out=starts[1:])
    index = np.flatnonzero(starts)
    return keys[index], np.bitwise_or.reduceat(masks, index)


class Hosts4:
    def __init__(self) -> None:
        self.parts: list[dict[int, int] | Batch] = [{}]

    def sink(self) -> dict[int, int]:
        """The dict to OR single hosts into (a write-only view: read through as_dict)."""
        last = self.parts[-1]
        if isinstance(last, dict):
            return last
        fresh: dict[int, int] = {}
        self.parts.append(fresh)
        return fresh

    def add(self, addresses: Array, bit: int) -> None:
        """OR `bit` into the mask of each address (any order, repeats allowed)."""
        if not len(addresses):
            return
        keys = distinct(addresses)
        if bit >= MASK_LIMIT:
            _or_into(self.sink(), keys.tolist(), [bit] * len(keys))
            return
        self.parts.append((keys, np.full(len(keys), bit, dtype=np.int64)))

    def add_packed(self, packed: bytes | bytearray, bit: int) -> None:
        """`add` for 4-byte network-order addresses back to back."""
        self.add(np.frombuffer(packed, dtype=">u4").astype(np.int64), bit)

    def replace(self, keys: Array, masks: Array) -> None:
        """Set the hosts to these (sorted, distinct) ones, e.g. what passed the rules."""
        self.parts = [(keys, masks)]

    def clear(self) -> None:
        self.parts = [{}]

    def as_dict(self) -> dict[int, int]:
        """Every host in one dict (the first part's own dict object when it is one)."""
        first = self.parts[0]
        if len(self.parts) == 1 and isinstance(first, dict):
            return first
        merged: dict[int, int]
        if isinstance(first, dict):
            merged, rest = first, self.parts[1:]
        else:
            merged, rest = {}, self.parts
        for part in rest:
            if isinstance(part, dict):
                _or_into(merged, list(part), list(part.values()))
            else:
                _or_into(merged, part[0].tolist(), part[1].tolist())
        self.parts = [merged]
        return merged

    def arrays(self) -> Batch | None:
        """The hosts as sorted distinct addresses and their masks; None when a mask
        does not fit int64 (then only `as_dict` holds them)."""
        batches: list[Batch] = []
        for part in self.parts:
            if isinstance(part, dict):
                if not part:
                    continue
                if max(part.values()) >= MASK_LIMIT:
                    return None
                keys = np.fromiter(part, dtype=np.int64, count=len(part))
                masks = np.fromiter(part.values(), dtype=np.int64, count=len(part))
                order = np.argsort(keys, kind="stable")  # dict keys are distinct already
                batches.append((keys[order], masks[order]))
            else:
                batches.append(part)
        if not batches:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty
        return union(batches)

    def __len__(self) -> int:
        parts = [p for p in self.parts if len(p[0] if isinstance(p, tuple) else p)]
        if len(parts) <= 1:
            return sum(len(p[0] if isinstance(p, tuple) else p) for p in parts)
        keys = [
            np.fromiter(p, dtype=np.int64, count=len(p)) if isinstance(p, dict) else p[0]
            for p in parts
        ]
        return len(distinct(np.concatenate(keys)))

    def known(
        self, addresses: Array, besides: dict[int, int] | None = None
    ) -> npt.NDArray[np.bool_]:
        """Which of `addresses` any part but `besides` holds (a pass per part)."""
        found = np.zeros(len(addresses), dtype=bool)
        for part in self.parts:
            if isinstance(part, dict):
                if part and part is not besides:
                    found |= np.fromiter(
                        (a in part for a in addresses.tolist()), dtype=bool, count=len(addresses)
                    )
                continue
            keys = part[0]
            if not len(keys):
                continue
            at = np.minimum(np.searchsorted(keys, addresses), len(keys) - 1)
            found |= keys[at] == addresses
        return found
