"""The engine's output files: `<type>.txt` (plain) and `entries.jsonl` (provenance).

`entries.jsonl` keeps its format, one object a line, byte for byte what
`json.dumps({"type", "value", "sources", "tags", "confidence"}, separators=(",", ":"))`
gives (the service reads it, stores it gzipped as the provenance artifact and diffs it
line by line). It is written without a `json.dumps` per entry: entries share their
sources/tags lists per source mask, so the part after the value is encoded once per
distinct (sources, tags, confidence), and the value itself with the C string encoder.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from json.encoder import encode_basestring_ascii  # what json.dumps uses for a str
from pathlib import Path

from edl_api.engine.build import ArrayEntries
from edl_api.engine.entries import BASE_TYPES, FeedEntry

ENTRIES_FILE = "entries.jsonl"
_COMPACT = (",", ":")
CHUNK = 65536  # entries per write


def entry_json(entry: FeedEntry) -> str:
    """One line of entries.jsonl (without the newline); the reference form."""
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


def _tail(entry: FeedEntry) -> str:
    return (
        f',"sources":{json.dumps(entry.sources, separators=_COMPACT)}'
        f',"tags":{json.dumps(entry.tags, separators=_COMPACT)}'
        f',"confidence":{json.dumps(entry.confidence)}}}\n'
    )


def entry_chunks(feeds: Mapping[str, Sequence[FeedEntry]]) -> Iterator[str]:
    """Every published entry once (the `ip` feed repeats ipv4/ipv6/cidr entries), as
    lines of entries.jsonl, `CHUNK` entries a string, feeds in order."""
    base_count: dict[str, int] = {}
    for feed_type in feeds:
        for base in BASE_TYPES.get(feed_type, (feed_type,)):
            base_count[base] = base_count.get(base, 0) + 1
    seen: set[tuple[str, str]] = set()
    heads: dict[str, str] = {}
    # Keyed by the list objects' ids: they are alive (held by the entries) all along.
    tails: dict[tuple[int, int, int], str] = {}

    def line(entry: FeedEntry) -> str:
        kind = entry.indicator_type
        head = heads.get(kind)
        if head is None:
            head = heads[kind] = f'{{"type":{encode_basestring_ascii(kind)},"value":'
        tail_key = (id(entry.sources), id(entry.tags), entry.confidence)
        tail = tails.get(tail_key)
        if tail is None:
            tail = tails[tail_key] = _tail(entry)
        return head + encode_basestring_ascii(entry.value) + tail

    for feed_type, entries in feeds.items():
        # A value repeats across feeds only where two feeds share a base type; inside one
        # feed every (type, value) is unique by construction (keys of the store's maps).
        shared = any(base_count[b] > 1 for b in BASE_TYPES.get(feed_type, (feed_type,)))
        if not shared and isinstance(entries, ArrayEntries) and entries.intact:
            yield from _array_chunks(entries)
            continue
        for start in range(0, len(entries), CHUNK):
            chunk = entries[start : start + CHUNK]
            if shared:
                fresh = []
                for entry in chunk:
                    key = (entry.indicator_type, entry.value)
                    if key not in seen:
                        seen.add(key)
                        fresh.append(entry)
                chunk = fresh
            yield "".join([line(entry) for entry in chunk])


def _array_chunks(entries: ArrayEntries) -> Iterator[str]:
    """The lines of array-path entries from their texts and groups: a dotted quad needs
    no JSON escaping, so each line is its group's two constant halves around the text."""
    heads: list[str] = []
    tails: list[str] = []
    for kind, sources, tags, confidence in entries.described:
        heads.append(f'{{"type":{encode_basestring_ascii(kind)},"value":"')
        tails.append('"' + _tail(FeedEntry("", kind, sources, tags, confidence)))
    texts, group = entries.texts, entries.group
    for start in range(0, len(texts), CHUNK):
        end = start + CHUNK
        yield "".join([
            heads[code] + text + tails[code]
            for text, code in zip(texts[start:end], group[start:end], strict=True)
        ])


def write_entries(feeds: Mapping[str, Sequence[FeedEntry]], path: Path) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for chunk in entry_chunks(feeds):
            handle.write(chunk)


def write_plain(entries: Iterable[FeedEntry], path: Path) -> None:
    """`<type>.txt`: one value a line, each ending in a newline."""
    if isinstance(entries, ArrayEntries) and entries.intact:
        values = entries.texts
    else:
        values = [e.value for e in entries]
    path.write_text("\n".join(values) + "\n" if values else "", encoding="utf-8")
