"""Array-path entries written in bulk (entries_file from their texts and groups) are
byte for byte what the per-entry writer gives, and stop being used once detached."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edl_api.engine.build import ArrayEntries, Provenance, array_entries, join_entries
from edl_api.engine.config import load_config
from edl_api.engine.entries_file import (
    ENTRIES_FILE,
    entry_json,
    read_entries_file,
    write_entries,
    write_plain,
)
from edl_api.engine.vector import Prefixes
from edl_api.feeds.entries_reader import as_json_lines

CONFIG = """
sources:
  - {name: a, values: ["1.2.3.4"], tags: [scan], confidence: 40}
  - {name: b, values: ["1.2.3.4"], tags: [b:1, a+b], confidence: 90}
augment:
  tags: [{add: [all]}, {add: [net], types: [cidr]}]
pipeline:
  outputs: [ip]
"""


def _entries() -> ArrayEntries:
    provenance = Provenance(load_config(CONFIG))
    network = np.array([0, 0x01020304, 0x0A000000, 0xFFFFFFFE], dtype=np.int64)
    prefixlen = np.array([8, 32, 24, 31], dtype=np.int64)
    mask = np.array([1, 3, 2, 1], dtype=np.int64)
    return array_entries(Prefixes(network, prefixlen, mask), provenance)


def test_bulk_lines_equal_per_entry_json(tmp_path: Path) -> None:
    entries = _entries()
    assert entries.intact
    write_entries({"ip": entries}, tmp_path / ENTRIES_FILE)
    bulk = (tmp_path / ENTRIES_FILE).read_bytes()
    expected = sorted(entry_json(entry) for entry in entries)
    assert sorted(as_json_lines(bulk).decode().splitlines()) == expected
    # The same file as the per-entry writer gives from the detached objects.
    detached = _entries()
    detached.detach()
    write_entries({"ip": detached}, tmp_path / "objects")
    assert sorted(bulk.splitlines()) == sorted((tmp_path / "objects").read_bytes().splitlines())
    assert [e.value for e in entries] == ["0.0.0.0/8", "1.2.3.4", "10.0.0.0/24",
                                          "255.255.255.254/31"]
    assert [e.indicator_type for e in entries] == ["cidr", "ipv4", "cidr", "cidr"]
    write_plain(entries, tmp_path / "ip.txt")
    assert (tmp_path / "ip.txt").read_text() == "".join(e.value + "\n" for e in entries)


def test_detached_entries_use_their_objects(tmp_path: Path) -> None:
    entries = _entries()
    entries.detach()
    entries[1].tags = ["changed"]
    write_entries({"ip": entries}, tmp_path / ENTRIES_FILE)
    read = read_entries_file(tmp_path / ENTRIES_FILE)
    assert [e["tags"] for e in read if e["value"] == "1.2.3.4"] == [["changed"]]
    write_plain(entries, tmp_path / "ip.txt")
    assert (tmp_path / "ip.txt").read_text().splitlines()[1] == "1.2.3.4"


def test_join_keeps_array_entries_only_when_alone() -> None:
    entries = _entries()
    assert join_entries(entries, []) is entries
    joined = join_entries(entries, list(entries))
    assert type(joined) is list
    assert len(joined) == 8


def test_entries_are_made_only_when_used(tmp_path: Path) -> None:
    entries = _entries()
    write_entries({"ip": entries}, tmp_path / ENTRIES_FILE)
    write_plain(entries, tmp_path / "ip.txt")
    assert entries.intact  # the writers needed no FeedEntry
    assert len(entries) == 4
    assert entries  # truthy from its texts
    built = _entries()
    assert built == list(_entries())  # comparing fills it
    assert not built.intact
    assert len(built) == 4
    assert [] + _entries() == list(built)
    assert type(__import__("copy").copy(_entries())) is list


def test_plain_render_reads_the_texts() -> None:
    """The plain renderer gives the same bytes from an untouched array feed's texts as
    from its entry objects, and makes no objects."""
    from edl_api.feeds.render import render

    entries = _entries()
    bulk = render(entries, "ip", "plain")
    assert entries.intact
    detached = _entries()
    detached.detach()
    assert bulk.body == render(detached, "ip", "plain").body == (
        b"0.0.0.0/8\n1.2.3.4\n10.0.0.0/24\n255.255.255.254/31\n")
    assert bulk.count == 4


def test_join_of_two_array_feeds_is_their_concatenation() -> None:
    """The `cidr`/`ip` join: texts and groups appended without objects made; both parts
    stay as they were."""
    expected = list(_entries()) + list(_entries())
    first, second = _entries(), _entries()
    joined = join_entries(first, second)
    assert isinstance(joined, ArrayEntries)
    assert joined.intact
    assert len(first) == len(second) == 4
    assert first.intact
    assert second.intact
    assert [(e.value, e.indicator_type, e.sources, e.confidence) for e in joined] == [
        (e.value, e.indicator_type, e.sources, e.confidence) for e in expected]
