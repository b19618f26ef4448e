"""The grouped entries file between the engine and the service: what is written is read
back exactly, whatever the values, the slice size or the form of the baseline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from edl_api.engine.entries import FeedEntry
from edl_api.engine.entries_file import ENTRIES_FILE, entry_json, write_entries
from edl_api.feeds import entries_reader, provenance

A, B, NONE = ["a"], ["a", "b"], []


def _write(tmp_path: Path, feeds: dict[str, list[FeedEntry]], name: str = ENTRIES_FILE) -> bytes:
    write_entries(feeds, tmp_path / name)
    return (tmp_path / name).read_bytes()


def _prov(sources: list[str], tags: list[str], confidence: int) -> tuple[str, str, int]:
    return orjson.dumps(sources).decode(), orjson.dumps(tags).decode(), confidence


@pytest.mark.parametrize("slice_bytes", [512 * 1024, 64, 1])
def test_odd_values_are_read_back_exactly(
    tmp_path: Path, monkeypatch: Any, slice_bytes: int
) -> None:
    """A value that looks like a header or holds a line break is written whole; the rest
    bare under its header; blank-free, repeat-free, every entry once."""
    entries = [
        FeedEntry("192.0.2.1", "ipv4", A, NONE, 50),
        FeedEntry("{not-a-header}.example", "fqdn", A, NONE, 50),
        FeedEntry("#hash.example", "fqdn", B, ["t"], 70),
        FeedEntry("x.example/a\nb", "url", A, NONE, 50),
        FeedEntry("x.example/{id}", "url", B, ["t"], 70),
        FeedEntry("192.0.2.2", "ipv4", B, ["t"], 70),
        FeedEntry("192.0.2.3", "ipv4", A, NONE, 50),
    ]
    raw = _write(tmp_path, {"mixed": entries})
    assert raw.count(b"\n{") == 6  # 3 headers (ipv4 ×2, url) + the 3 values written whole
    monkeypatch.setattr(entries_reader, "PARSE_BYTES", slice_bytes)
    expected: dict[str, dict[str, tuple[str, str, int]]] = {}
    for e in entries:
        expected.setdefault(e.indicator_type, {})[e.value] = _prov(e.sources, e.tags,
                                                                  e.confidence)
    assert entries_reader.read_provenance(raw) == expected
    assert entries_reader.entry_counts(raw, ["ipv4", "fqdn", "url"]) == {
        "ipv4": 3, "fqdn": 2, "url": 2}
    assert sorted(entries_reader.as_json_lines(raw).decode().splitlines()) == sorted(
        entry_json(e) for e in entries)


def test_garbage_is_not_taken_for_entries() -> None:
    assert entries_reader.entry_counts(b"192.0.2.1\n", ["ipv4"]) is None  # no header
    assert entries_reader.entry_counts(b"{oops\n192.0.2.1\n", ["ipv4"]) is None
    with pytest.raises(entries_reader.EntriesFormatError):
        entries_reader.read_grouped(b"#edl-entries 2\n192.0.2.1\n")


def test_the_delta_follows_values_across_headers(tmp_path: Path) -> None:
    old = _write(tmp_path, {"ipv4": [
        FeedEntry("192.0.2.1", "ipv4", A, NONE, 50),
        FeedEntry("192.0.2.2", "ipv4", A, NONE, 50),
        FeedEntry("192.0.2.3", "ipv4", A, NONE, 50),
    ]}, "old")
    new = _write(tmp_path, {"ipv4": [
        FeedEntry("192.0.2.1", "ipv4", A, NONE, 50),
        FeedEntry("192.0.2.2", "ipv4", B, ["t"], 70),  # its provenance changed
        FeedEntry("192.0.2.9", "ipv4", A, NONE, 50),  # new; .3 is gone
    ]}, "new")
    delta = provenance.compute_delta(old, new, ["ipv4"])
    assert delta is not None
    assert delta.added["ipv4"] == {"192.0.2.2": _prov(B, ["t"], 70),
                                   "192.0.2.9": _prov(A, NONE, 50)}
    assert delta.removed["ipv4"] == {"192.0.2.2", "192.0.2.3"}
    assert provenance.compute_delta(old, old, ["ipv4"]) == provenance.Delta(
        {"ipv4": {}}, {"ipv4": set()})


def test_a_legacy_baseline_is_compared_with_the_rows(tmp_path: Path) -> None:
    """A provenance artifact stored by an engine before the grouped form (JSON Lines)
    gives no delta: the publish falls back to the full comparison."""
    entries = [FeedEntry("192.0.2.1", "ipv4", A, NONE, 50)]
    legacy = "".join(entry_json(e) + "\n" for e in entries).encode()
    grouped = _write(tmp_path, {"ipv4": entries})
    assert provenance.compute_delta(legacy, grouped, ["ipv4"]) is None
    assert entries_reader.read_provenance(legacy) == entries_reader.read_provenance(grouped)
    assert entries_reader.as_json_lines(legacy) == legacy
    assert json.loads(entries_reader.as_json_lines(grouped)) == json.loads(legacy)
