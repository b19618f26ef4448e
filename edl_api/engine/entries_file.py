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

from edl_api.engine.build import ArrayEntries
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


def _feed_entries(feeds: Mapping[str, Sequence[FeedEntry]]) -> Iterator[Sequence[FeedEntry]]:
    """Each feed's entries, those already given by an earlier feed left out (the `ip` feed
    repeats the ipv4/ipv6/cidr entries)."""
    base_count: dict[str, int] = {}
    for feed_type in feeds:
        for base in BASE_TYPES.get(feed_type, (feed_type,)):
            base_count[base] = base_count.get(base, 0) + 1
    seen: set[tuple[str, str]] = set()
    for feed_type, entries in feeds.items():
        # A value repeats across feeds only where two feeds share a base type; inside one
        # feed every (type, value) is unique by construction (keys of the store's maps).
        if not any(base_count[b] > 1 for b in BASE_TYPES.get(feed_type, (feed_type,))):
            yield entries
            continue
        fresh = []
        for entry in entries:
            key = (entry.indicator_type, entry.value)
            if key not in seen:
                seen.add(key)
                fresh.append(entry)
        yield fresh


def entry_chunks(feeds: Mapping[str, Sequence[FeedEntry]]) -> Iterator[str]:
    """The text of entries.grouped, a few `CHUNK`s of entries at a time."""
    yield MAGIC
    for entries in _feed_entries(feeds):
        if isinstance(entries, ArrayEntries) and entries.intact:
            yield from _array_chunks(entries)
        else:
            yield from _object_chunks(entries)


def _object_chunks(entries: Sequence[FeedEntry]) -> Iterator[str]:
    # Headers keyed by the list objects' ids (alive, held by the entries, all along), then
    # groups by header text: equal lists in distinct objects share a group.
    headers: dict[GroupKey, str] = {}
    groups: dict[str, list[str]] = {}
    whole: list[str] = []
    for entry in entries:
        if not plain_value(entry.value):
            whole.append(entry_json(entry) + "\n")
            continue
        key = (entry.indicator_type, id(entry.sources), id(entry.tags), entry.confidence)
        header = headers.get(key)
        if header is None:
            header = headers[key] = header_json(
                entry.indicator_type, entry.sources, entry.tags, entry.confidence
            )
        values = groups.get(header)
        if values is None:
            values = groups[header] = []
        values.append(entry.value)
    for header, values in groups.items():
        yield header
        for start in range(0, len(values), CHUNK):
            yield "\n" + "\n".join(values[start:start + CHUNK])
        yield "\n"
    if whole:
        yield "".join(whole)


def _array_chunks(entries: ArrayEntries) -> Iterator[str]:
    """Array-path entries from their texts and group codes: dotted quads and networks are
    always plain values, so each group is its header and its texts, in feed order."""
    members: list[list[str]] = [[] for _ in entries.described]
    appends = [values.append for values in members]
    for text, code in zip(entries.texts, entries.group, strict=True):
        appends[code](text)
    for (kind, sources, tags, confidence), values in zip(entries.described, members,
                                                          strict=True):
        if not values:
            continue
        yield header_json(kind, sources, tags, confidence)
        for start in range(0, len(values), CHUNK):
            yield "\n" + "\n".join(values[start:start + CHUNK])
        yield "\n"


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
    if isinstance(entries, ArrayEntries) and entries.intact:
        values = entries.texts
    else:
        values = [e.value for e in entries]
    path.write_text("\n".join(values) + "\n" if values else "", encoding="utf-8")
