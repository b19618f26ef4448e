"""The engine's entries.jsonl read for the indicator store: values grouped by provenance.

A million entry lines share a few hundred provenance texts (sources, tags, confidence), so
each line is cut by one regex into type, value and the text after the value, and that
text is parsed once per distinct form. Read a slice of whole lines at a time: one regex
or orjson call over the whole file would hold the GIL (and so the event loop) for seconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

from edl_api.feeds.content import line_spans

NO_VALUES = "[]"
PARSE_BYTES = 512 * 1024  # entries.jsonl bytes per split/orjson call (see read_provenance)

Provenance = tuple[str, str, int]  # sources JSON, tags JSON, confidence
ProvenanceMap = dict[str, dict[str, Provenance]]  # type → value → provenance
# A line of the engine's entries.jsonl whose type and value need no unescaping; the rest
# (sources, tags, confidence) is shared by many lines and parsed once per distinct text.
_ENTRY_LINE = re.compile(r'^\{"type":"([^"\\\n]*)","value":"([^"\\\n]*)"([,}][^\n]*)$', re.M)


class JsonLists:
    """Canonical JSON text of string lists, memoised (provenance repeats a lot)."""

    def __init__(self) -> None:
        self._texts: dict[tuple[str, ...], str] = {(): NO_VALUES}

    def text(self, values: Iterable[str]) -> str:
        key = tuple(values)
        found = self._texts.get(key)
        if found is None:
            found = self._texts[key] = orjson.dumps(list(key)).decode()
        return found


class _Tails(dict[str, Provenance]):
    """Provenance of an entry line's text after its value, parsed once per distinct text."""

    def __init__(self) -> None:
        super().__init__()
        self.lists = JsonLists()

    def __missing__(self, rest: str) -> Provenance:
        entry = orjson.loads("{" + rest[1:] if rest.startswith(",") else "{" + rest)
        found = self[rest] = _provenance_of(entry, self.lists)
        return found


def _provenance_of(entry: dict[str, Any], lists: JsonLists) -> Provenance:
    return (lists.text(entry.get("sources") or ()), lists.text(entry.get("tags") or ()),
            int(entry.get("confidence", 50)))


def read_grouped(raw: bytes) -> dict[str, dict[Provenance, list[str]]]:
    """type → provenance → values from the engine's entries.jsonl bytes (the last line of
    a repeated (type, value) wins, as in `read_provenance`)."""
    tails = _Tails()
    by_rest: dict[str, dict[str, list[str]]] = {}
    slow: ProvenanceMap = {}
    # A slice at a time: one split, regex or orjson call holds the GIL throughout, and a
    # million entries in one call would stall the event loop (this runs in a worker
    # thread) for 0.1 s to seconds.
    for start, end in line_spans(raw, PARSE_BYTES):
        text_slice = raw[start:end].decode("utf-8")
        found = _ENTRY_LINE.findall(text_slice)
        lines = text_slice.count("\n") + (0 if text_slice.endswith("\n") else 1)
        if not found or len(found) != lines:  # escapes, blank lines, another form
            _read_slowly(text_slice, slow, tails.lists)
            continue
        for kind, value, rest in found:
            groups = by_rest.get(kind)
            if groups is None:
                groups = by_rest[kind] = {}
            try:
                groups[rest].append(value)
            except KeyError:
                groups[rest] = [value]
    grouped: dict[str, dict[Provenance, list[str]]] = {}
    for kind, groups in by_rest.items():
        merged = grouped[kind] = {}
        for rest, values in groups.items():
            merged.setdefault(tails[rest], []).extend(values)
    if slow:  # rare: fold in the slowly read lines (and any repeats) as one map
        flat = provenance_map(grouped)
        for kind, values_of in slow.items():
            flat.setdefault(kind, {}).update(values_of)
        grouped = {}
        for kind, values_of in flat.items():
            merged = grouped[kind] = {}
            for value, prov in values_of.items():
                merged.setdefault(prov, []).append(value)
    return grouped


def provenance_map(grouped: dict[str, dict[Provenance, list[str]]]) -> ProvenanceMap:
    """type → value → provenance (`dict.fromkeys` per group: no per-value bytecode)."""
    found: ProvenanceMap = {}
    for kind, groups in grouped.items():
        values_of = found[kind] = {}
        for prov, values in groups.items():
            values_of.update(dict.fromkeys(values, prov))
    return found


def read_provenance(raw: bytes) -> ProvenanceMap:
    """type → value → provenance from the engine's entries.jsonl bytes."""
    return provenance_map(read_grouped(raw))


def _read_slowly(text_slice: str, provenance: ProvenanceMap, lists: JsonLists) -> None:
    lines = [line for line in text_slice.split("\n") if line.strip()]
    if not lines:
        return
    for entry in orjson.loads("[" + ",".join(lines) + "]"):
        provenance.setdefault(str(entry.get("type")), {})[str(entry.get("value"))] = (
            _provenance_of(entry, lists)
        )
