"""The engine's output files: `<type>.txt` (plain) and `entries.grouped` (provenance).

`entries.grouped` holds every published entry once, grouped by what it shares with many
others (type, sources, tags, confidence), so a million entries are a few hundred JSON
headers and a million bare values (the JSON Lines form it replaces was 100 MB for 1M
entries, and reading it back cost the service seconds of regex):

    #edl-entries 2
    {"type":"ipv4","sources":["a"],"tags":[],"confidence":50}
    192.0.2.1
    192.0.2.7
    {"type":"cidr","sources":["a","b"],"tags":["scan"],"confidence":90}
    198.51.100.0/24

A line starting with `{` is a JSON object: without "value" it is the header of the lines
that follow it; with "value" it is one whole entry (the old `entries.jsonl` line, used for
a value that could be mistaken for a header or does not fit on one line). Any other line
is a value of the latest header. The same header may come back later in the file. Values
are written without escaping: the engine's values (addresses, networks, host names, URLs
beginning with their host) never start with `{` or `#` and hold no line break, and one
that did would be written whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from edl_api.engine.build import ArrayEntries, entry_values
from edl_api.engine.entries import BASE_TYPES, FeedEntry

ENTRIES_FILE = "entries.grouped"
LEGACY_ENTRIES_FILE = "entries.jsonl"  # what runs before the grouped form left
MAGIC = "#edl-entries 2\n"
_COMPACT = (",", ":")
CHUNK = 65536  # entries per write

GroupKey = tuple[str, int, int, int]  # type, id(sources), id(tags), confidence


def entry_json(entry: FeedEntry) -> str:
    """One entry as a whole JSON object (the legacy line; the download's form)."""
    return json.dumps(
        {
            "type": entry.indicator_type,
            "value": entry.value,
            "sources": entry.sources,
            "tags": entry.tags,
            "confidence": entry.confidence,
        },
        separators=_COMPACT,
    )


def header_json(kind: str, sources: list[str], tags: list[str], confidence: int) -> str:
    """A group's header line (without the newline)."""
    return json.dumps(
        {"type": kind, "sources": sources, "tags": tags, "confidence": confidence},
        separators=_COMPACT,
    )


def plain_value(value: str) -> bool:
    """Whether `value` can be written as a bare line under its header."""
    return bool(value) and value[0] not in "{#" and "\n" not in value and "\r" not in value


class _Written:
    """Values already written per base type that more than one feed holds (the `ip` feed
    repeats the ipv4/ipv6/cidr entries): a later feed writes only the others."""

    def __init__(self, feeds: Mapping[str, Sequence[FeedEntry]]) -> None:
        count: dict[str, int] = {}
        for feed_type in feeds:
            for base in BASE_TYPES.get(feed_type, (feed_type,)):
                count[base] = count.get(base, 0) + 1
        self.shared = {base for base, n in count.items() if n > 1}
        self.seen: dict[str, set[str]] = {}

    def fresh(self, kind: str, values: list[str]) -> list[str]:
        """`values` (distinct: one feed's, of one group) less those written before."""
        if kind not in self.shared:
            return values
        seen = self.seen.setdefault(kind, set())
        if seen:
            values = [value for value in values if value not in seen]
        seen.update(values)
        return values


def entry_chunks(feeds: Mapping[str, Sequence[FeedEntry]]) -> Iterator[str]:
    """The text of entries.grouped, group by group, `CHUNK` values a string. Inside one
    feed every (type, value) is unique by construction (keys of the store's maps)."""
    written = _Written(feeds)
    yield MAGIC
    for entries in feeds.values():
        if isinstance(entries, ArrayEntries) and entries.intact:
            groups = _array_groups(entries)
        else:
            groups, whole = _object_groups(entries)
            if whole:  # values that cannot be written bare: one whole entry a line
                fresh = [e for e in whole if written.fresh(e.indicator_type, [e.value])]
                yield "".join(entry_json(entry) + "\n" for entry in fresh)
        for (kind, header), values in groups.items():
            values = written.fresh(kind, values)
            if not values:
                continue
            yield header
            for start in range(0, len(values), CHUNK):
                yield "\n" + "\n".join(values[start:start + CHUNK])
            yield "\n"


Groups = dict[tuple[str, str], list[str]]  # (type, header line) → values


def _object_groups(entries: Sequence[FeedEntry]) -> tuple[Groups, list[FeedEntry]]:
    # Headers keyed by the list objects' ids (alive, held by the entries, all along), then
    # groups by header text: equal lists in distinct objects share a group.
    headers: dict[GroupKey, tuple[str, str]] = {}
    groups: Groups = {}
    whole: list[FeedEntry] = []
    for entry in entries:
        if not plain_value(entry.value):
            whole.append(entry)
            continue
        key = (entry.indicator_type, id(entry.sources), id(entry.tags), entry.confidence)
        found = headers.get(key)
        if found is None:
            found = headers[key] = (entry.indicator_type, header_json(
                entry.indicator_type, entry.sources, entry.tags, entry.confidence
            ))
        values = groups.get(found)
        if values is None:
            values = groups[found] = []
        values.append(entry.value)
    return groups, whole


def _array_groups(entries: ArrayEntries) -> Groups:
    """Array-path entries from their texts and group codes. Every normalised indicator is
    a plain value (a control character makes a token invalid, and no address, network,
    name or URL starts with `{` or `#`), so each group is its header and its texts, in
    feed order."""
    members: list[list[str]] = [[] for _ in entries.described]
    appends = [values.append for values in members]
    for text, code in zip(entries.texts, entries.group, strict=True):
        appends[code](text)
    groups: Groups = {}
    for (kind, sources, tags, confidence), values in zip(entries.described, members,
                                                          strict=True):
        if values:
            groups.setdefault((kind, header_json(kind, sources, tags, confidence)), []).extend(
                values
            )
    return groups


def write_entries(feeds: Mapping[str, Sequence[FeedEntry]], path: Path) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for chunk in entry_chunks(feeds):
            handle.write(chunk)


def read_entries_file(path: Path) -> list[dict[str, object]]:
    """Every entry of an entries file (either form) as its JSON object, in file order."""
    entries: list[dict[str, object]] = []
    header: dict[str, object] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line == MAGIC.strip():
            continue
        if line.startswith("{"):
            found = json.loads(line)
            if "value" in found:
                entries.append(found)
            else:
                header = found
            continue
        entries.append({"type": header["type"], "value": line, "sources": header["sources"],
                        "tags": header["tags"], "confidence": header["confidence"]})
    return entries


def write_plain(entries: Iterable[FeedEntry], path: Path) -> None:
    """`<type>.txt`: one value a line, each ending in a newline."""
    values = entry_values(entries)
    path.write_text("\n".join(values) + "\n" if values else "", encoding="utf-8")
