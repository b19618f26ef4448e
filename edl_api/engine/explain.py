"""The explain record of a run: every entry the engine dropped, why, and where it came from.

Stored gzip-compressed as one JSON header line and then one block per type of
`value<TAB>reason<TAB>source mask (hex)<TAB>source:line` lines. The header holds the
source names, the distinct reasons (step, detail, feed) and each block's character span,
so a lookup is a few `str.find` calls in one block, never a parse of the whole record.
Pure: `lookup` answers from the record alone (nothing is re-run).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from typing import Any

from edl_api.engine.config import PipelineConfig
from edl_api.engine.indicators import TRIM, cidr_ok, classify, url_host
from edl_api.engine.lines import line_blocks

FORMAT = "edl-explain/1"
FILE_NAME = "explain.gz"
BLOCKS = ("ipv4", "ipv6", "cidr", "fqdn", "url", "invalid")
_UNSAFE = str.maketrans({"\t": " ", "\n": " ", "\r": " "})


@dataclass
class ExplainRecord:
    header: dict[str, Any]
    body: str

    @property
    def entries(self) -> int:
        return int(self.header.get("entries", 0))

    def to_bytes(self) -> bytes:
        text = json.dumps(self.header, separators=(",", ":")) + "\n" + self.body
        return gzip.compress(text.encode("utf-8"), compresslevel=1, mtime=0)

    @classmethod
    def from_bytes(cls, data: bytes) -> ExplainRecord:
        text = gzip.decompress(data).decode("utf-8", "replace")
        head, _, body = text.partition("\n")
        header = json.loads(head)
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError("not an explain record")
        return cls(header, body)


LOCATE_CHUNK = 1 << 22  # body bytes split at a time when locating raw lines


class RecordBuilder:
    """Collects (type, value, reason, mask) and writes the record's blocks."""

    def __init__(self, sources: list[str], lines: dict[int, int]) -> None:
        self.sources = sources
        self.lines = lines
        self.reasons: dict[tuple[str, str, str | None], int] = {}
        self.blocks: dict[str, list[tuple[str, int, int]]] = {b: [] for b in BLOCKS}
        self.where: dict[str, tuple[int, int]] = {}  # value -> (source index, line)

    def add(
        self, kind: str, value: str, step: str, detail: str, mask: int, feed: str | None = None
    ) -> None:
        reason = self.reasons.setdefault((step, detail, feed), len(self.reasons))
        # Only raw (invalid) tokens can hold a tab or newline; entries are normalised.
        self.blocks[kind].append((value.translate(_UNSAFE) if kind == "invalid" else value,
                                  reason, mask))

    def _wanted(self) -> set[str]:
        return {value for block in self.blocks.values() for value, _, _ in block}

    def locate_inline(self, config: PipelineConfig) -> None:
        """First line (1-based position in `values:`) of each recorded value in inline sources."""
        wanted: set[str] | None = None
        for index, source in enumerate(config.sources):
            if source.values is None:
                continue
            wanted = self._wanted() if wanted is None else wanted
            for number, raw in enumerate(source.values, 1):
                text = raw.strip(TRIM)
                for candidate in (text, text.lower()):
                    if candidate in wanted and candidate not in self.where:
                        self.where[candidate] = (index, number)

    def locate(self, config: PipelineConfig, bodies: dict[int, bytes]) -> None:
        """First line of each recorded value not located yet, in inline and text sources."""
        self.locate_inline(config)
        for index, body in bodies.items():
            self.locate_text(index, body)

    def locate_text(self, index: int, body: bytes) -> None:
        """First raw line of each recorded value in a text body: lines that are the value
        alone (CRLF allowed), which is how lists are written; others are left without a
        line rather than paying a full re-parse (one pass over the lines, ~0.3 s at 1M)."""
        bit = 1 << index
        wanted = [
            value for block in self.blocks.values() for value, _, mask in block
            if mask & bit and value not in self.where
        ]
        if not wanted:
            return
        pending = {value.encode("utf-8", "replace"): value for value in wanted}
        crlf = b"\r" in body
        number = 0
        # A few MB of lines at a time: splitting all of a 5M-line body at once would hold
        # a bytes object per line (~300 MB) at the end of the run.
        for start, end in line_blocks(body, LOCATE_CHUNK):
            chunk = body[start:end]
            if crlf:
                chunk = chunk.replace(b"\r\n", b"\n")
            if chunk.endswith(b"\n"):  # the block's own end, not a line of its own
                chunk = chunk[:-1]
            lines = chunk.split(b"\n")
            for offset, line in enumerate(lines, number + 1):
                value = pending.pop(line, None)
                if value is not None:
                    self.where.setdefault(value, (index, offset))
                    if not pending:
                        return
            number += len(lines)

    def finish(self) -> ExplainRecord:
        parts: list[str] = []
        spans: dict[str, list[int]] = {}
        offset = 0
        total = 0
        for kind, rows in self.blocks.items():
            if not rows:
                continue
            lines: list[str] = []
            append = lines.append
            where = self.where
            for value, reason, mask in rows:
                found = where.get(value)
                at = f"{found[0]}:{found[1]}" if found and mask >> found[0] & 1 else ""
                append(f"{value}\t{reason}\t{mask:x}\t{at}\n")
            text = "\n" + "".join(lines)  # every line starts after a "\n": find("\nV\t")
            spans[kind] = [offset, offset + len(text)]
            parts.append(text)
            offset += len(text)
            total += len(rows)
        header = {
            "format": FORMAT, "entries": total, "sources": self.sources,
            "lines": {str(k): v for k, v in self.lines.items()},
            "reasons": [list(key) for key in self.reasons], "blocks": spans,
        }
        return ExplainRecord(header, "".join(parts))


# --- lookup ---------------------------------------------------------------------------


def _name_parents(name: str) -> list[str]:
    labels = name.removeprefix("*.").split(".")
    return ["*." + ".".join(labels[i:]) for i in range(1, len(labels))]


def _exact(record: ExplainRecord, kind: str, value: str) -> list[str]:
    span = record.header.get("blocks", {}).get(kind)
    if not span or not value:
        return []
    start, end = span
    needle = "\n" + value.translate(_UNSAFE) + "\t"
    found = []
    position = record.body.find(needle, start, end)
    while position != -1:
        line_end = record.body.find("\n", position + 1, end)
        found.append(record.body[position + 1 : line_end if line_end != -1 else end])
        position = record.body.find(needle, position + 1, end)
    return found


def _containing(record: ExplainRecord, first: int, last: int, version: int) -> list[str]:
    """Dropped networks (or ranges) that contain [first, last]."""
    span = record.header.get("blocks", {}).get("cidr")
    if not span:
        return []
    out = []
    for line in record.body[span[0] : span[1]].split("\n"):
        value = line.partition("\t")[0]
        if not value:
            continue
        if "-" in value:
            low, _, high = value.partition("-")
            a, b = cidr_ok(low), cidr_ok(high)
            bounds = (a[0], a[1], b[2]) if a and b else None
        else:
            bounds = cidr_ok(value)
        if bounds and bounds[0] == version and bounds[1] <= first and bounds[2] >= last:
            out.append(line)
    return out


def _finding(record: ExplainRecord, kind: str, line: str, query: str) -> dict[str, Any]:
    value, reason, mask, at = (line.split("\t") + ["", "", "", ""])[:4]
    step, detail, feed = record.header["reasons"][int(reason)]
    names = record.header["sources"]
    bits = int(mask or "0", 16)
    sources = [name for i, name in enumerate(names) if bits >> i & 1]
    where = None
    if at:
        index, _, number = at.partition(":")
        where = {"source": names[int(index)], "line": int(number)}
    return {
        "type": kind, "value": value, "covers": value != query, "step": step,
        "detail": detail, "feed": feed, "sources": sources, "first_line": where,
    }


def lookup(record: ExplainRecord, query: str) -> list[dict[str, Any]]:
    """Every recorded drop of `query` itself, and of entries that would have covered it
    (a network around an address, a wildcard above a name). An unparseable query is
    looked up among the invalid tokens."""
    text = query.strip(TRIM)
    hits: list[tuple[str, str]] = [("invalid", line) for line in _exact(record, "invalid", text)]
    if text.lower() != text:
        hits += [("invalid", line) for line in _exact(record, "invalid", text.lower())]
    classified = classify(text)
    for item in classified.indicators:
        kind, value = item.indicator_type, item.value
        hits += [(kind, line) for line in _exact(record, kind, value)]
        if kind in ("ipv4", "ipv6", "cidr"):
            bounds = cidr_ok(value)
            assert bounds is not None
            hits += [
                ("cidr", line) for line in _containing(record, bounds[1], bounds[2], bounds[0])
                if line.partition("\t")[0] != value
            ]
        elif kind == "fqdn":
            for parent in _name_parents(value):
                hits += [("fqdn", line) for line in _exact(record, "fqdn", parent)]
        elif kind == "url":
            host = url_host(value)
            if host is not None and host[0] == "fqdn":
                assert isinstance(host[1], str)
                for name in [host[1], *_name_parents(host[1])]:
                    hits += [("fqdn", line) for line in _exact(record, "fqdn", name)]
    seen: set[tuple[str, str]] = set()
    findings = []
    for kind, line in hits:
        if (kind, line) not in seen:
            seen.add((kind, line))
            findings.append(_finding(record, kind, line, text if kind == "invalid" else (
                classified.indicators[0].value if classified.indicators else text)))
    return findings
