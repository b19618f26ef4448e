"""The engine's entries file read for the indicator store: values grouped by provenance.

The file (`engine.entries_file`) is JSON headers, each followed by its bare values, so a
million entries cost a split per slice, not a parse per line. Lines that are whole JSON
entries (the legacy `entries.jsonl` form, or a value the engine could not write bare) are
parsed one by one. Read a slice of whole lines at a time: one split or set call over the
whole file would hold the GIL (and so the event loop) for a long C call.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from json.encoder import encode_basestring_ascii
from typing import Any

import orjson

from edl_api.engine.entries_file import MAGIC
from edl_api.feeds.content import line_spans

NO_VALUES = "[]"
PARSE_BYTES = 512 * 1024  # file bytes per decode/split call
_MAGIC = MAGIC.encode()

Provenance = tuple[str, str, int]  # sources JSON, tags JSON, confidence
ProvenanceMap = dict[str, dict[str, Provenance]]  # type → value → provenance
Grouped = dict[str, dict[Provenance, list[str]]]  # type → provenance → values


class EntriesFormatError(ValueError):
    """The entries file is not in a form the engine writes."""


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


def provenance_of(entry: dict[str, Any], lists: JsonLists) -> Provenance:
    return (lists.text(entry.get("sources") or ()), lists.text(entry.get("tags") or ()),
            int(entry.get("confidence", 50)))


def is_grouped(raw: bytes) -> bool:
    return raw.startswith(_MAGIC)


def pieces(raw: bytes) -> Iterator[tuple[str, str]]:
    """("header", line) / ("entry", line) / ("values", block of value lines) in file order;
    a block is whole lines, each ending in a newline except perhaps the file's last."""
    start = len(_MAGIC) if is_grouped(raw) else 0
    for begin, end in line_spans(raw[start:] if start else raw, PARSE_BYTES):
        text = (raw[start + begin:start + end] if start else raw[begin:end]).decode("utf-8")
        at, size = 0, len(text)
        while at < size:
            if text.startswith("{", at):
                stop = text.find("\n", at)
                stop = size if stop < 0 else stop + 1
                line = text[at:stop].rstrip("\n")
                yield ("entry" if '"value":' in line and _is_entry(line) else "header"), line
                at = stop
                continue
            header = text.find("\n{", at)
            stop = size if header < 0 else header + 1
            yield "values", text[at:stop]
            at = stop


def _is_entry(line: str) -> bool:
    """A JSON line with a "value" key is one whole entry (a header has none)."""
    try:
        return "value" in orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise EntriesFormatError(f"entries file: a line is not JSON: {line[:80]!r}") from exc


def block_values(block: str) -> list[str]:
    values = block.split("\n")
    if values and not values[-1]:
        values.pop()
    if "" in values:  # blank lines: never written by the engine, tolerated
        values = [value for value in values if value]
    return values


class _Headers(dict[str, tuple[str, Provenance]]):
    """(type, provenance) of a header line, parsed once per distinct text."""

    def __init__(self) -> None:
        super().__init__()
        self.lists = JsonLists()

    def __missing__(self, line: str) -> tuple[str, Provenance]:
        try:
            entry = orjson.loads(line)
            found = self[line] = (str(entry["type"]), provenance_of(entry, self.lists))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise EntriesFormatError(f"entries file: a bad header: {line[:80]!r}") from exc
        return found


def read_grouped(raw: bytes) -> Grouped:
    """type → provenance → values from the engine's entries file (either form)."""
    headers = _Headers()
    grouped: Grouped = {}
    current: list[str] | None = None
    for kind, text in pieces(raw):
        if kind == "values":
            values = block_values(text)
            if current is None and values:
                raise EntriesFormatError("entries file: values before any header")
            if current is not None:
                current.extend(values)
        elif kind == "header":
            of, prov = headers[text]
            current = grouped.setdefault(of, {}).setdefault(prov, [])
        else:
            entry = orjson.loads(text)
            of, prov = str(entry.get("type")), provenance_of(entry, headers.lists)
            grouped.setdefault(of, {}).setdefault(prov, []).append(str(entry.get("value")))
    return grouped


def entry_counts(raw: bytes, types: list[str]) -> dict[str, int] | None:
    """Entries per type, or None when the file is not in a form the engine writes."""
    counts = dict.fromkeys(types, 0)
    headers = _Headers()
    current: str | None = None
    try:
        for kind, text in pieces(raw):
            if kind == "values":
                found = len(block_values(text))
                if current is None and found:
                    return None
                if current in counts:
                    counts[current] += found
            elif kind == "header":
                current = headers[text][0]
            else:
                of = str(orjson.loads(text).get("type"))
                if of in counts:
                    counts[of] += 1
    except (EntriesFormatError, UnicodeDecodeError):
        return None
    return counts


def provenance_map(grouped: Grouped) -> ProvenanceMap:
    """type → value → provenance (`dict.fromkeys` per group: no per-value bytecode)."""
    found: ProvenanceMap = {}
    for kind, groups in grouped.items():
        values_of = found[kind] = {}
        for prov, values in groups.items():
            values_of.update(dict.fromkeys(values, prov))
    return found


def read_provenance(raw: bytes) -> ProvenanceMap:
    """type → value → provenance from the engine's entries file."""
    return provenance_map(read_grouped(raw))


def as_json_lines(raw: bytes) -> bytes:
    """The entries file as JSON Lines, one whole entry a line (what a download gives):
    the legacy form is returned as it is."""
    if not is_grouped(raw):
        return raw
    out: list[str] = []
    head = tail = ""
    for kind, text in pieces(raw):
        if kind == "header":
            cut = text.index(',"sources":')
            head, tail = text[:cut] + ',"value":', text[cut:] + "\n"
        elif kind == "entry":
            out.append(text + "\n")
        else:
            out.append("".join(
                head + encode_basestring_ascii(value) + tail for value in block_values(text)
            ))
    return "".join(out).encode()
