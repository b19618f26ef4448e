"""The explain record: one entry dropped by each rule names that step, its detail, the
source that carried it and the raw line; covering entries count; the record round-trips."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edl_api.cli import main as cli_main
from edl_api.engine.config import validate_config_document
from edl_api.engine.explain import ExplainRecord, RecordBuilder, lookup
from edl_api.engine.pipeline import EngineSettings, run_pipeline

BLOCK = [
    "8.8.4.4",            # 1 kept
    "10.1.2.3",           # 2 reserved
    "1.0.0.0/7",          # 3 min_prefix (normalised to 0.0.0.0/7: no raw line)
    "co.uk",              # 4 public_suffix
    "ads.tracker.test",   # 5 exclude_regex
    "9.9.9.9",            # 6 allowlist (allow source)
    "8.8.8.8",            # 7 allowlist (rules.allow entry)
    "bad..name",          # 8 invalid
    "8.0.0.0/16",         # 9 split by the allowlist
    "http://x.test/a",    # 10 include_types (url is not included)
]


def _run(doc: dict[str, Any]) -> ExplainRecord:
    result = asyncio.run(run_pipeline(validate_config_document(doc), EngineSettings()))
    assert result.explain is not None
    return ExplainRecord.from_bytes(result.explain.to_bytes())  # as stored


@pytest.fixture(scope="module")
def record() -> ExplainRecord:
    return _run({
        "sources": [
            {"name": "feed", "values": BLOCK},
            {"name": "low", "values": ["5.5.5.5"], "confidence": 10},
            {"name": "names-only", "values": ["6.6.6.6", "ok.test"], "types": ["fqdn"]},
            {"name": "corp", "values": ["9.9.9.9"], "role": "allow"},
        ],
        "rules": {
            "allow": ["8.8.8.8", "8.0.1.0/24"], "exclude_regex": ["tracker"],
            "min_confidence": 20, "include_types": ["ipv4", "ipv6", "cidr", "fqdn"],
        },
    })


def _one(record: ExplainRecord, value: str) -> dict[str, Any]:
    found = lookup(record, value)
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize(("value", "step", "detail", "line"), [
    ("10.1.2.3", "reserved", "10.0.0.0/8", 2),
    ("co.uk", "public_suffix", "public suffix", 4),
    ("ads.tracker.test", "exclude_regex", "exclude_regex tracker", 5),
    ("9.9.9.9", "allowlist", "allow source corp", 6),
    ("8.8.8.8", "allowlist", "rules.allow entry 8.8.8.8", 7),
    ("bad..name", "invalid", "bad_domain", 8),
    # Stored as x.test/a: the raw line differs from the entry, so it is not known.
    ("http://x.test/a", "include_types", "url is not in rules.include_types", None),
])
def test_each_rule_names_its_step_detail_source_and_line(
    record: ExplainRecord, value: str, step: str, detail: str, line: int | None
) -> None:
    found = _one(record, value)
    assert found["step"] == step
    assert detail in found["detail"]
    assert found["sources"] == ["feed"]
    assert found["first_line"] == ({"source": "feed", "line": line} if line else None)
    assert found["covers"] is False


def test_min_prefix_network_covers_an_address_inside_it(record: ExplainRecord) -> None:
    found = _one(record, "1.2.3.4")
    assert (found["step"], found["value"], found["covers"]) == ("min_prefix", "0.0.0.0/7", True)
    assert "min_prefix /8" in found["detail"]


def test_split_network_explains_the_removed_part(record: ExplainRecord) -> None:
    found = _one(record, "8.0.1.77")
    assert (found["step"], found["value"]) == ("allowlist", "8.0.0.0/16")
    assert "rules.allow entry 8.0.1.0/24" in found["detail"]


def test_confidence_types_filter_and_cap(record: ExplainRecord) -> None:
    low = _one(record, "5.5.5.5")
    assert low["step"] == "min_confidence"
    assert "confidence 10" in low["detail"]
    assert low["sources"] == ["low"]
    typed = _one(record, "6.6.6.6")
    assert typed["step"] == "types"
    assert "names-only: [fqdn]" in typed["detail"]
    assert typed["first_line"] == {"source": "names-only", "line": 1}


def test_max_entries_cut_is_recorded_per_feed() -> None:
    record = _run({
        "sources": [{"name": "a", "values": ["a.test", "b.test"], "confidence": 50},
                    {"name": "b", "values": ["b.test"], "confidence": 90}],
        "pipeline": {"max_entries": {"fqdn": 1}},
    })
    found = _one(record, "a.test")
    assert (found["step"], found["feed"]) == ("max_entries", "fqdn")
    assert "keeps its 1 highest-confidence" in found["detail"]
    assert lookup(record, "b.test") == []  # kept: nothing to explain


def test_wildcard_and_url_hosts_are_covered() -> None:
    record = _run({"sources": [{"name": "a", "values": ["*.corp.test", "www.corp.test"]}],
                   "rules": {"allow": ["*.corp.test"]}})
    found = lookup(record, "www.corp.test")  # itself, and the wildcard above it
    assert [(f["value"], f["covers"]) for f in found] == [
        ("www.corp.test", False), ("*.corp.test", True)
    ]
    assert found[0]["detail"] == "rules.allow entry *.corp.test"
    covering = _one(record, "deep.corp.test")  # the dropped wildcard would have covered it
    assert (covering["value"], covering["covers"]) == ("*.corp.test", True)
    in_url = lookup(record, "http://www.corp.test/x")  # a URL on a dropped host
    assert {f["value"] for f in in_url} == {"www.corp.test", "*.corp.test"}


def test_raw_line_of_a_text_body(tmp_path: Path) -> None:
    body = "# header\n8.8.4.4\n\n10.9.9.9\r\n"
    (tmp_path / "list.txt").write_text(body)
    doc = {"sources": [{"name": "file", "path": "list.txt"}]}
    result = asyncio.run(run_pipeline(validate_config_document(doc),
                                      EngineSettings(source_dir=str(tmp_path))))
    assert result.explain is not None
    found = _one(result.explain, "10.9.9.9")
    assert found["first_line"] == {"source": "file", "line": 4}


def test_kept_values_are_not_in_the_record(record: ExplainRecord) -> None:
    assert lookup(record, "8.8.4.4") == []
    assert record.entries >= 10


def test_cli_explain_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text('sources:\n  - name: s\n    values: ["8.8.4.4", "10.1.2.3"]\n')
    assert cli_main(["explain", str(config), "10.1.2.3"]) == 0
    out = capsys.readouterr().out
    assert "ipv4: not listed: reserved: inside reserved range 10.0.0.0/8 [from s line 2]" in out
    assert cli_main(["explain", str(config), "8.8.4.4"]) == 0
    assert "ipv4: listed as 8.8.4.4" in capsys.readouterr().out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a.example", "b.example\r", "", "\r", "junk", "c" * 9]),
                max_size=30), st.integers(3, 20))
def test_raw_lines_are_found_across_locate_chunks(
    lines: list[str], chunk: int
) -> None:
    """The first raw line of each value is the same however the body is cut up."""
    import edl_api.engine.explain as explain_module

    body = "\n".join(lines).encode()
    expected: dict[str, int] = {}
    for number, line in enumerate(body.replace(b"\r\n", b"\n").split(b"\n"), 1):
        expected.setdefault(line.decode(), number)
    saved = explain_module.LOCATE_CHUNK
    explain_module.LOCATE_CHUNK = chunk
    try:
        builder = RecordBuilder(["s"], {0: len(lines)})
        for value in ("a.example", "b.example", "junk", "c" * 9, "missing.example"):
            builder.add("fqdn", value, "allowlist", "x", 1)
        builder.locate_text(0, body)
    finally:
        explain_module.LOCATE_CHUNK = saved
    for value in ("a.example", "b.example", "junk", "c" * 9, "missing.example"):
        found = builder.where.get(value)
        assert (found[1] if found else None) == expected.get(value)


@pytest.mark.parametrize("capped", [False, True])
def test_a_text_sources_drops_and_cuts_keep_their_raw_lines(tmp_path: Path, capped: bool) -> None:
    """Drops are located before the feeds are built (the bodies are freed then unless a
    feed is capped); a capped feed's cuts are located after, in the same bodies."""
    (tmp_path / "feed.txt").write_text("# list\r\na.test\r\nco.uk\r\nb.test\r\nbad..x\r\n")
    doc: dict[str, Any] = {
        "sources": [{"name": "a", "path": "feed.txt", "confidence": 50},
                    {"name": "b", "values": ["b.test"], "confidence": 90}],
    }
    if capped:
        doc["pipeline"] = {"max_entries": {"fqdn": 1}}
    result = asyncio.run(run_pipeline(validate_config_document(doc),
                                      EngineSettings(source_dir=str(tmp_path))))
    assert result.explain is not None
    record = ExplainRecord.from_bytes(result.explain.to_bytes())
    assert _one(record, "co.uk")["first_line"] == {"source": "a", "line": 3}
    assert _one(record, "bad..x")["first_line"] == {"source": "a", "line": 5}
    if capped:
        cut = _one(record, "a.test")
        assert cut["step"] == "max_entries"
        assert cut["first_line"] == {"source": "a", "line": 2}
    else:
        assert lookup(record, "a.test") == []
