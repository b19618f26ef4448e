"""Parsers: bytes of one source -> raw indicator tokens.

Contract: arbitrary bytes never raise. Bad UTF-8 is replaced, absurd lines and
unparseable records are counted in `ParseStats.invalid` and skipped.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import jmespath
import jmespath.exceptions
import re2

from edl_api.engine.config import SourceConfig, re2_options
from edl_api.engine.indicators import TRIM, classify_parts

MAX_LINE_CHARS = 8192
HTML_MEDIA_TYPES = frozenset({"text/html", "application/xhtml+xml"})
HEADER_NAMES_SHOWN = 8


@dataclass
class ParseStats:
    lines: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    # Set when the body cannot be this source at all (the source fails with this reason).
    failure: str | None = None


def is_html(data: bytes, content_type: str | None) -> bool:
    """A web page (login portal, error page, captcha) where a list was expected.

    Sniffed from the body's start; an HTML media type counts only when the body also starts
    with markup, so a plain list that a script mislabels `text/html` still loads.
    """
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if not head.startswith(b"<"):
        return False
    # `<html` anywhere in the head also catches pages that open with a comment or `<?xml`.
    return content_type in HTML_MEDIA_TYPES or b"<!doctype html" in head or b"<html" in head


def decode(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    return text[1:] if text.startswith("\ufeff") else text


def _lines(text: str, stats: ParseStats) -> list[str]:
    lines = text.split("\n")
    if lines and not lines[-1]:
        lines.pop()
    stats.lines += len(lines)
    return lines


def parse_text(text: str, stats: ParseStats) -> list[str]:
    """One indicator per line; `#`/`;` comment lines; anything after whitespace or `#` ignored.

    Returns a list rather than yielding: this is the hot loop for million-line feeds.
    """
    tokens: list[str] = []
    append = tokens.append
    too_long = 0
    for line in _lines(text, stats):
        if len(line) > MAX_LINE_CHARS:
            too_long += 1
            continue
        # TRIM, not strip(): a U+0085 or U+2028 is part of the entry (and makes it invalid),
        # and only a space or tab starts the ignored rest of a line, as documented.
        token = line.strip(TRIM)
        if not token or token[0] == "#" or token[0] == ";":
            continue
        if " " in token or "\t" in token:
            token = token.replace("\t", " ", 1).split(" ", 1)[0]
        if "#" in token:
            token = token.split("#", 1)[0]
            if not token:
                continue
        append(token)
    if too_long:
        stats.invalid["line_too_long"] += too_long
    return tokens


def _csv_row(line: str, delimiter: str) -> list[str]:
    try:
        return [
            f.strip(TRIM)
            for f in next(csv.reader([line], delimiter=delimiter, skipinitialspace=True))
        ]
    except (csv.Error, StopIteration):
        return []


def _names(header: list[str]) -> str:
    shown = [name[:40] for name in header[:HEADER_NAMES_SHOWN]]
    return ", ".join(shown) + (", …" if len(header) > HEADER_NAMES_SHOWN else "")


def _column_index(
    column: str | int, header_mode: bool | Literal["auto"], first: list[str],
    commented: list[str],
) -> tuple[int | None, bool]:
    """(index of `column`, whether the first data row is its header)."""
    if isinstance(column, int):
        return column, header_mode is True
    wanted = column.strip().lower()
    if wanted in first:
        return first.index(wanted), True
    if header_mode == "auto" and wanted in commented:
        return commented.index(wanted), header_mode is True
    return None, header_mode is True


def parse_csv(text: str, source: SourceConfig, stats: ParseStats) -> Iterator[str]:
    """CSV with a column chosen by header name or index.

    `header: auto` also accepts the last comment line before the data ("# a,b,c", as
    abuse.ch writes it); quoted fields and spaces after delimiters are handled.
    """
    for value, _ in parse_csv_rows(text, source, stats, None):
        yield value


def parse_csv_rows(
    text: str, source: SourceConfig, stats: ParseStats, date_column: str | int | None
) -> Iterator[tuple[str, str | None]]:
    """(value, the row's `date_column` cell or None) per CSV record; the date column is
    found in the header like `column` (missing from the header: the source fails)."""
    delimiter = source.csv_delimiter
    column = source.csv_column
    header_mode = source.csv_header
    comment_header: list[str] = []
    data: list[str] = []
    for line in _lines(text, stats):
        line = line.rstrip("\r")
        if len(line) > MAX_LINE_CHARS:
            stats.invalid["line_too_long"] += 1
            continue
        stripped = line.strip(TRIM)
        if not stripped:
            continue
        if stripped[0] == "#":
            if not data:
                content = stripped.lstrip("#").strip()
                if content and delimiter in content:
                    comment_header = _csv_row(content, delimiter)
            continue
        data.append(line)

    rows = csv.reader(data, delimiter=delimiter, skipinitialspace=True, strict=False)
    first_cells = _csv_row(data[0], delimiter) if data else []
    first = [h.lower() for h in first_cells]
    commented = [h.lower() for h in comment_header]
    index, skip_first = _column_index(column, header_mode, first, commented)
    date_index: int | None = None
    if index is not None and date_column is not None:
        date_index, date_header = _column_index(date_column, header_mode, first, commented)
        skip_first = skip_first or date_header
    missing = column if index is None else date_column if date_index is None else None
    if missing is not None:
        stats.invalid["column_not_found"] += 1
        header = comment_header if header_mode == "auto" and comment_header else first_cells
        if header:  # no header at all is an empty body, left to the empty-feed guard
            stats.failure = f"column {missing} not in header: {_names(header)}"
        return
    assert index is not None
    first_row = True
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error:
            stats.invalid["bad_csv"] += 1
            continue
        if first_row:
            first_row = False
            if skip_first:
                continue
            # `header: auto` with an index: a first row whose cell is no indicator is a header.
            if (
                header_mode == "auto"
                and isinstance(column, int)
                and index < len(row)
                and isinstance(classify_parts(row[index].strip(TRIM)), str)
            ):
                continue
        if index >= len(row):
            stats.invalid["missing_column"] += 1
            continue
        value = row[index].strip(TRIM)
        if value:
            when = row[date_index].strip(TRIM) if date_index is not None and \
                date_index < len(row) else None
            yield value, when or None


def _flatten(value: Any, stats: ParseStats) -> Iterator[str]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            item = item.strip(TRIM)
            if item:
                yield item
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int | float):
            yield str(item)
        elif isinstance(item, list):
            stack.extend(reversed(item))
        else:
            stats.invalid["not_a_string"] += 1


def _json_documents(text: str, stats: ParseStats) -> list[Any]:
    try:
        return [json.loads(text)]
    except (ValueError, RecursionError):
        pass
    documents = []  # not one document: try JSON Lines
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            continue
        try:
            documents.append(json.loads(line))
        except (ValueError, RecursionError):
            stats.invalid["bad_json"] += 1
    return documents


def _count_lines(text: str) -> int:
    return text.count("\n") + (1 if text and not text.endswith("\n") else 0)


def parse_json(text: str, source: SourceConfig, stats: ParseStats) -> Iterator[str]:
    """A JSON document or JSON Lines; `query:` (JMESPath) picks the indicator strings."""
    stats.lines += _count_lines(text)
    documents = _json_documents(text, stats)
    compiled = jmespath.compile(source.query) if source.query else None
    for document in documents:
        if compiled is not None:
            try:
                document = compiled.search(document)
            except (jmespath.exceptions.JMESPathError, TypeError, ValueError, RecursionError):
                stats.invalid["query_error"] += 1
                continue
        yield from _flatten(document, stats)


def _search(compiled: Any, document: Any, stats: ParseStats) -> tuple[bool, Any]:
    try:
        return True, compiled.search(document)
    except (jmespath.exceptions.JMESPathError, TypeError, ValueError, RecursionError):
        stats.invalid["query_error"] += 1
        return False, None


def parse_json_records(
    text: str, source: SourceConfig, stats: ParseStats
) -> Iterator[tuple[str, Any]]:
    """(value, the record's `date_query` result or None) for each value of each record
    `records` selects; `query` (default: the record itself) picks a record's values."""
    assert source.records is not None
    stats.lines += _count_lines(text)
    records = jmespath.compile(source.records)
    query = jmespath.compile(source.query) if source.query else None
    dated = jmespath.compile(source.date_query) if source.date_query else None
    for document in _json_documents(text, stats):
        ok, selected = _search(records, document, stats)
        if not ok or selected is None:
            continue
        for record in selected if isinstance(selected, list) else [selected]:
            if query is not None:
                ok, values = _search(query, record, stats)
                if not ok:
                    continue
            else:
                values = record
            when = _search(dated, record, stats)[1] if dated is not None else None
            if isinstance(when, list):  # a query like `dates[0]` is meant; take the first
                when = when[0] if when else None
            for value in _flatten(values, stats):
                yield value, when


def parse_stix(text: str, stats: ParseStats) -> Iterator[str]:
    """STIX 2.1: the values of indicator patterns and of cyber-observable objects of the
    four address types, by the same code as TAXII sources (engine.stixpatterns)."""
    # Imported here: stixpatterns uses this module's ParseStats.
    from edl_api.engine.stixpatterns import parse_stix_observations

    for observation in parse_stix_observations(text, stats, 0.0):
        yield observation.value


def parse_regex(text: str, source: SourceConfig, stats: ParseStats) -> Iterator[str]:
    """Each line matching `pattern` yields group `indicator`, else group 1 (RE2: linear time)."""
    assert source.pattern is not None
    pattern = re2.compile(source.pattern, options=re2_options())
    group: int | str = "indicator" if "indicator" in pattern.groupindex else 1
    for line in _lines(text, stats):
        if len(line) > MAX_LINE_CHARS:
            stats.invalid["line_too_long"] += 1
            continue
        match = pattern.search(line.rstrip("\r"))
        if match is None:
            continue
        value = match.group(group)
        if value:
            value = value.strip(TRIM)
            if value:
                yield value


def parse(source: SourceConfig, data: bytes, stats: ParseStats) -> Iterable[str]:
    """Tokens of one fetched source according to its `format:`."""
    text = decode(data)
    if source.format == "csv":
        return parse_csv(text, source, stats)
    if source.format == "json":
        return parse_json(text, source, stats)
    if source.format == "regex":
        return parse_regex(text, source, stats)
    if source.format == "stix":
        return parse_stix(text, stats)
    return parse_text(text, stats)


def inline_values(values: list[str], stats: ParseStats) -> Iterator[str]:
    stats.lines += len(values)
    for value in values:
        value = value.strip(TRIM)
        if value:
            yield value
