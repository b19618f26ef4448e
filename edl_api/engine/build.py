"""Feed entries from the aggregated sets: each value with the sources, tags and confidence
of its source mask (computed once per distinct mask), in feed order."""

from __future__ import annotations

import gc
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from edl_api.engine.aggregate import FamilyFeeds
from edl_api.engine.config import PipelineConfig, SourceConfig
from edl_api.engine.entries import FeedEntry
from edl_api.engine.vector import Prefixes as PrefixArrays
from edl_api.engine.vector import ipv4_texts, mask_groups


class Provenance:
    """Sources, tags and confidence of a source mask, computed once per distinct mask."""

    def __init__(self, config: PipelineConfig) -> None:
        self.sources = config.sources
        self.tag_rules = config.augment.tags
        self._confidence: dict[int, int] = {}
        self._described: dict[tuple[int, str], tuple[list[str], list[str], int]] = {}

    def _members(self, mask: int) -> Iterator[SourceConfig]:
        index = 0
        while mask:
            if mask & 1:
                yield self.sources[index]
            mask >>= 1
            index += 1

    def confidence(self, mask: int) -> int:
        value = self._confidence.get(mask)
        if value is None:
            value = max((s.confidence for s in self._members(mask)), default=0)
            self._confidence[mask] = value
        return value

    def describe(self, mask: int, indicator_type: str) -> tuple[list[str], list[str], int]:
        key = (mask, indicator_type)
        found = self._described.get(key)
        if found is None:
            members = list(self._members(mask))
            tags: set[str] = set()
            for source in members:
                tags.update(source.tags)
            for rule in self.tag_rules:
                if rule.types is None or indicator_type in rule.types:
                    tags.update(rule.add)
            found = ([s.name for s in members], sorted(tags), self.confidence(mask))
            self._described[key] = found
        return found

    def for_type(self, indicator_type: str) -> Callable[[int], tuple[list[str], list[str], int]]:
        """A per-type lookup keyed by the bare mask (no tuple per call in hot loops)."""
        cache: dict[int, tuple[list[str], list[str], int]] = {}

        def described(mask: int) -> tuple[list[str], list[str], int]:
            found = cache.get(mask)
            if found is None:
                found = cache[mask] = self.describe(mask, indicator_type)
            return found

        return described


Described = tuple[str, list[str], list[str], int]  # type, sources, tags, confidence
Reuse = tuple["ArrayEntries", npt.NDArray[np.int64]]


class ArrayEntries(list[FeedEntry]):
    """The entries of the array path, made only when used: `entries_file` writes the
    plain feed and the entries file from each entry's text and group (one per distinct type
    and mask) without a FeedEntry per entry.

    Any use as a list (iteration, indexing, comparison, `+`, mutation) first fills it with
    the FeedEntry objects, once; from then on they may change in place (tags added), so
    `intact` turns False and the writers read the objects instead.
    """

    def __init__(
        self, texts: list[str], group: list[int], described: list[Described],
        reuse: Reuse | None = None,
    ) -> None:
        super().__init__()
        self.texts, self.group, self.described = texts, group, described
        self.intact = True
        self.moved = False  # a list operation may have changed which entry is where
        self.prefixes: PrefixArrays | None = None  # what the texts were made of
        # The `ip` feed's hosts are the host feed's entries: (that feed, and for each
        # entry here its index there or -1), so filling both makes each host once.
        self.reuse = reuse

    def detach(self) -> None:
        """Make the FeedEntry objects now (idempotent)."""
        if not self.intact:
            return
        # A million new objects would trigger collector passes that each rescan every
        # object alive (seconds); these hold no cycles, so pause it meanwhile.
        paused = gc.isenabled()
        gc.disable()
        try:
            self._fill()
        finally:
            if paused:
                gc.enable()

    def _fill(self) -> None:
        if self.intact:
            self.intact = False
            described = self.described
            reuse = self.reuse
            if reuse is not None and not reuse[0].moved:
                reuse[0].detach()
                shared = list.copy(reuse[0])
                list.extend(self, [
                    shared[at] if at >= 0 else FeedEntry(text, *described[code])
                    for text, code, at in zip(
                        self.texts, self.group, reuse[1].tolist(), strict=True
                    )
                ])
            else:
                list.extend(self, [
                    FeedEntry(text, *described[code])
                    for text, code in zip(self.texts, self.group, strict=True)
                ])
            self.texts, self.group, self.described, self.reuse = [], [], [], None

    def __len__(self) -> int:
        return len(self.texts) if self.intact else list.__len__(self)

    def __repr__(self) -> str:
        return f"ArrayEntries({len(self)} entries)"

    def __radd__(self, other: list[FeedEntry]) -> list[FeedEntry]:
        return list(other) + list(iter(self))

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return list, (list(iter(self)),)  # a copy or pickle is a plain list


MOVING = frozenset({
    "__setitem__", "__delitem__", "__iadd__", "__imul__", "append", "extend", "insert", "pop",
    "remove", "clear", "reverse", "sort",
})


def entry_values(entries: Iterable[FeedEntry]) -> list[str]:
    """The entries' values in order: an untouched `ArrayEntries`' texts (no objects made)."""
    if isinstance(entries, ArrayEntries) and entries.intact:
        return entries.texts
    return [entry.value for entry in entries]


def _filled(method: Callable[..., Any]) -> Callable[..., Any]:
    moving = method.__name__ in MOVING

    def filled(self: ArrayEntries, *args: Any, **kwargs: Any) -> Any:
        self.detach()
        if moving:
            self.moved = True
        return method(self, *args, **kwargs)

    filled.__name__ = method.__name__
    return filled


# Every list operation but len() and repr() works on the filled list.
for _name in (
    "__iter__", "__reversed__", "__getitem__", "__setitem__", "__delitem__", "__contains__",
    "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__add__", "__iadd__",
    "__mul__", "__rmul__", "__imul__", "append", "extend", "insert", "pop", "remove",
    "clear", "copy", "count", "index", "reverse", "sort",
):
    setattr(ArrayEntries, _name, _filled(getattr(list, _name)))


def _reuse(
    prefixes: PrefixArrays, hosts: list[FeedEntry] | None
) -> tuple[ArrayEntries, npt.NDArray[np.int64]] | None:
    """Where each host of `prefixes` is in the host feed `hosts` (same address and mask),
    -1 for the others."""
    if not isinstance(hosts, ArrayEntries) or hosts.prefixes is None or hosts.moved:
        return None
    known = hosts.prefixes
    if not len(known) or len(known) != len(hosts):
        return None
    at = np.minimum(np.searchsorted(known.network, prefixes.network), len(known) - 1)
    same = (
        (prefixes.prefixlen == 32) & (known.network[at] == prefixes.network)
        & (known.mask[at] == prefixes.mask)
    )
    return hosts, np.where(same, at, -1)


def _texts(prefixes: PrefixArrays, reuse: tuple[ArrayEntries, npt.NDArray[np.int64]] | None
           ) -> list[str]:
    """The prefixes' texts; a host the host feed holds as text shares that string object
    (the `ip` feed repeats a million of them at 5M: ~70 MB)."""
    if reuse is None or not reuse[0].intact:
        return ipv4_texts(prefixes.network, prefixes.prefixlen)
    at = reuse[1]
    shared = at >= 0
    others = ~shared
    texts = np.empty(len(at), dtype=object)
    texts[shared] = np.array(reuse[0].texts, dtype=object)[at[shared]]
    texts[others] = np.array(
        ipv4_texts(prefixes.network[others], prefixes.prefixlen[others]), dtype=object
    )
    return texts.tolist()  # type: ignore[no-any-return]


def array_entries(
    prefixes: PrefixArrays, provenance: Provenance, hosts: list[FeedEntry] | None = None,
) -> ArrayEntries:
    """IPv4 entries of the array path: texts formatted in bulk, provenance per distinct
    mask, the FeedEntry objects only if something uses them (`ArrayEntries`); `hosts`:
    the host feed, whose entries the hosts here reuse when both are filled."""
    reuse = _reuse(prefixes, hosts)
    texts = _texts(prefixes, reuse)
    distinct, which = mask_groups(prefixes.mask)
    host_described = provenance.for_type("ipv4")
    cidr_described = provenance.for_type("cidr")
    # Group 2k is mask k as a network, 2k + 1 as a host.
    described: list[Described] = []
    for mask in distinct:
        described.append(("cidr", *cidr_described(mask)))
        described.append(("ipv4", *host_described(mask)))
    group = (np.asarray(which, dtype=np.int64) * 2 + (prefixes.prefixlen == 32)).tolist()
    entries = ArrayEntries(
        texts, group, described, None if reuse is None else (reuse[0], reuse[1])
    )
    entries.prefixes = prefixes
    return entries


def join_entries(first: list[FeedEntry], second: list[FeedEntry]) -> list[FeedEntry]:
    """`first + second`, keeping `ArrayEntries` as arrays: the `ip` and `cidr` feeds join
    their IPv4 and IPv6 parts' texts and groups instead of a FeedEntry being made for each
    of their (many) entries now, at the run's memory peak. The lists are copied, not
    grown in place: growing a 400k-entry list faulted ~50 MB more at 1M (measured)."""
    if not second:
        return first
    if not first:
        return second
    if not isinstance(first, ArrayEntries) or not first.intact:
        return first + second
    texts, group = list(first.texts), list(first.group)
    described = list(first.described)
    if isinstance(second, ArrayEntries) and second.intact:
        offset = len(described)
        texts += second.texts
        group += [offset + code for code in second.group]
        described += second.described
    else:
        codes: dict[tuple[str, int, int, int], int] = {}
        for entry in second:
            if entry.first_seen is not None or entry.last_seen is not None:
                return first + second  # not expressible as (text, group)
            key = (entry.indicator_type, id(entry.sources), id(entry.tags), entry.confidence)
            code = codes.get(key)
            if code is None:
                code = codes[key] = len(described)
                described.append(
                    (entry.indicator_type, entry.sources, entry.tags, entry.confidence)
                )
            texts.append(entry.value)
            group.append(code)
    reuse = first.reuse
    if reuse is not None:
        tail = np.full(len(texts) - len(reuse[1]), -1, dtype=np.int64)
        reuse = (reuse[0], np.concatenate([reuse[1], tail]))
    return ArrayEntries(texts, group, described, reuse)


def _grouped(
    texts: list[str], keys: list[int], describe: Callable[[int], Described]
) -> ArrayEntries:
    """Entries of `texts` with a group per distinct key (described once each)."""
    distinct = list(dict.fromkeys(keys))
    if len(distinct) == 1:  # one source's entries, the common case
        group = [0] * len(texts)
    else:
        code = {key: index for index, key in enumerate(distinct)}
        group = list(map(code.__getitem__, keys))
    return ArrayEntries(texts, group, [describe(key) for key in distinct])


def host_entries(feed: FamilyFeeds, version: int, provenance: Provenance) -> list[FeedEntry]:
    if feed.vector is not None:
        hosts = feed.vector.hosts
        return array_entries(
            PrefixArrays(hosts, hosts * 0 + 32, feed.vector.host_masks), provenance
        )
    ntop = socket.inet_ntop
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    size = 4 if version == 4 else 16
    kind_type = "ipv4" if version == 4 else "ipv6"
    described = provenance.for_type(kind_type)
    texts = [ntop(family, address.to_bytes(size, "big")) for address, _ in feed.hosts]
    return _grouped(texts, [mask for _, mask in feed.hosts],
                    lambda mask: (kind_type, *described(mask)))


def prefix_entries(
    prefixes: list[tuple[int, int, int]] | PrefixArrays,
    version: int,
    provenance: Provenance,
    host_entries: list[FeedEntry] | None = None,
) -> list[FeedEntry]:
    """Entries of networks (and hosts, for the `ip` feed); the array path's hosts reuse
    the entries of `host_entries`, the host feed, when both are made."""
    if isinstance(prefixes, PrefixArrays):
        return array_entries(prefixes, provenance, host_entries)
    ntop = socket.inet_ntop
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    size = 4 if version == 4 else 16
    bits = 32 if version == 4 else 128
    host_type = "ipv4" if version == 4 else "ipv6"
    host_described = provenance.for_type(host_type)
    cidr_described = provenance.for_type("cidr")
    texts: list[str] = []
    keys: list[int] = []  # mask * 2, + 1 for a host
    add_text, add_key = texts.append, keys.append
    for network, prefixlen, mask in prefixes:
        text = ntop(family, network.to_bytes(size, "big"))
        if prefixlen == bits:
            add_text(text)
            add_key(mask << 1 | 1)
        else:
            add_text(f"{text}/{prefixlen}")
            add_key(mask << 1)

    def describe(key: int) -> Described:
        if key & 1:
            return (host_type, *host_described(key >> 1))
        return ("cidr", *cidr_described(key >> 1))

    return _grouped(texts, keys, describe)


def name_entries(
    mapping: dict[str, int], kind_type: str, provenance: Provenance
) -> list[FeedEntry]:
    """Names or URLs in sorted order; as normalised they are always bare values of the
    entries file (never a line break, `{` or `#` first: see `entries_file`)."""
    described = provenance.for_type(kind_type)
    texts = sorted(mapping)
    return _grouped(texts, list(map(mapping.__getitem__, texts)),
                    lambda mask: (kind_type, *described(mask)))


def cap_entries(entries: list[FeedEntry], limit: int) -> tuple[list[FeedEntry], int]:
    """Keep the `limit` highest-confidence entries (ties: earlier in feed order), in order."""
    if len(entries) <= limit:
        return entries, 0
    order = sorted(range(len(entries)), key=lambda i: -entries[i].confidence)[:limit]
    order.sort()
    return [entries[i] for i in order], len(entries) - limit
