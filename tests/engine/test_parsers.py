"""Parsers: every format, and no input can make them raise."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edl_api.engine.config import SourceConfig
from edl_api.engine.parsers import ParseStats, parse
from tests.helpers import FEEDS


def source(**fields: Any) -> SourceConfig:
    return SourceConfig.model_validate({"name": "s", "values": ["x.example"], **fields})


def tokens(data: bytes | str, **fields: Any) -> tuple[list[str], ParseStats]:
    stats = ParseStats()
    raw = data.encode() if isinstance(data, str) else data
    return list(parse(source(**fields), raw, stats)), stats


def test_text_comments_and_inline_comments() -> None:
    text = (
        "\ufeff# header\n; also a comment\n\n1.2.3.4 ; SBL1\n"
        "  5.6.7.8\t# note\nevil.example#x\r\n#only\n" + "x" * 9000 + "\n"
    )
    found, stats = tokens(text)
    assert found == ["1.2.3.4", "5.6.7.8", "evil.example"]
    assert stats.lines == 8
    assert stats.invalid == {"line_too_long": 1}


def test_csv_quoted_header_after_banner() -> None:
    found, _ = tokens((FEEDS / "feodo_ipblocklist.csv").read_bytes(), format="csv", column="dst_ip")
    assert found == ["162.243.103.246", "50.16.16.211", "139.59.48.2", "1.19.5.7", "192.168.10.4"]


def test_csv_commented_header_with_quoted_commas() -> None:
    data = (FEEDS / "urlhaus.csv").read_bytes()
    found, _ = tokens(data, format="csv", column="url")
    assert found[0] == "http://115.55.237.17:54713/i"
    assert len(found) == 7
    tags, _ = tokens(data, format="csv", column="tags")
    assert tags[0] == "32-bit,elf,mips,Mozi"


def test_csv_spaces_after_delimiters_and_index_column() -> None:
    data = (FEEDS / "threatfox.csv").read_bytes()
    found, _ = tokens(data, format="csv", column="ioc_value")
    assert found[:2] == ["45.95.147.236:8080", "panel.stealer-c2.example"]
    by_index, _ = tokens(data, format="csv", column=2, header=False)
    assert by_index == found


def test_csv_header_modes() -> None:
    text = "ip;note\n1.2.3.4;a\n5.6.7.8\n"
    assert tokens(text, format="csv", column=0, delimiter=";")[0] == ["1.2.3.4", "5.6.7.8"]
    assert tokens(text, format="csv", column=0, delimiter=";", header=False)[0] == [
        "ip",
        "1.2.3.4",
        "5.6.7.8",
    ]
    found, stats = tokens(text, format="csv", column=1, delimiter=";", header=True)
    assert found == ["a"]
    assert stats.invalid == {"missing_column": 1}
    found, stats = tokens(text, format="csv", column="nope", delimiter=";")
    assert found == []
    assert stats.invalid == {"column_not_found": 1}


def test_json_query_and_json_lines() -> None:
    data = (FEEDS / "aws_ip_ranges.json").read_bytes()
    found, _ = tokens(
        data, format="json", query="[prefixes[].ip_prefix, ipv6_prefixes[].ipv6_prefix][]"
    )
    assert found == [
        "3.2.34.0/26",
        "50.16.0.0/15",
        "1.19.128.0/17",
        "2600:1f14::/35",
        "2401:f4c0:8000::/33",
    ]
    lines = '{"ioc": "1.2.3.4"}\n{"ioc": "evil.example"}\nnot json\n{"other": 1}\n'
    found, stats = tokens(lines, format="json", query="ioc")
    assert found == ["1.2.3.4", "evil.example"]
    assert stats.invalid == {"bad_json": 1}
    found, _ = tokens('["a.example", ["b.example", 7], null, true]', format="json")
    assert found == ["a.example", "b.example", "7"]


def test_json_microsoft_365_endpoints() -> None:
    found, _ = tokens(
        (FEEDS / "m365_endpoints.json").read_bytes(), format="json", query="[[].ips[], [].urls[]][]"
    )
    assert "autodiscover.*.onmicrosoft.com" in found
    assert found[:3] == ["13.107.6.152/31", "13.107.18.10/31", "2603:1006::/40"]


def test_regex_named_group_and_group_one() -> None:
    data = (FEEDS / "tor_exit_addresses.txt").read_bytes()
    found, stats = tokens(data, format="regex", pattern=r"^ExitAddress (\S+)")
    assert found == [
        "162.247.74.201",
        "185.220.101.4",
        "185.220.101.5",
        "185.220.101.6",
        "185.220.101.7",
    ]
    assert stats.lines == 17
    named, _ = tokens(data, format="regex", pattern=r"^(Exit)Address (?P<indicator>\S+)")
    assert named == found


def test_stix_bundle() -> None:
    found, _ = tokens((FEEDS / "stix_bundle.json").read_bytes(), format="stix")
    assert found == [
        "91.215.85.17",
        "update.evil-c2.example",
        "http://update.evil-c2.example/gate.php?id=7",
        "2A03:B0C0:3:D0::5F",
        "94.232.40.0/22",
        "cdn.evil-c2.example",
    ]  # the revoked indicator and the file hash are skipped


def test_stix_escaped_quote() -> None:
    bundle = {
        "type": "bundle",
        "objects": [
            {"type": "indicator", "pattern": r"[url:value = 'http://a.example/it\'s']"},
        ],
    }
    assert tokens(json.dumps(bundle), format="stix")[0] == ["http://a.example/it's"]


FORMATS: list[dict[str, Any]] = [
    {"format": "text"},
    {"format": "csv", "column": 1},
    {"format": "csv", "column": "ioc"},
    {"format": "json"},
    {"format": "json", "query": "a[].b"},
    {"format": "regex", "pattern": r"(\S+)"},
    {"format": "stix"},
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000), st.sampled_from(FORMATS))
def test_arbitrary_bytes_never_raise(data: bytes, fields: dict[str, Any]) -> None:
    found, stats = tokens(data, **fields)
    assert all(isinstance(t, str) and t for t in found)
    assert stats.lines >= 0


@settings(max_examples=40, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=3), c, max_size=4),
        max_leaves=20,
    ),
    st.sampled_from(FORMATS[3:5] + FORMATS[6:]),
)
def test_arbitrary_json_never_raises(document: Any, fields: dict[str, Any]) -> None:
    tokens(json.dumps(document), **fields)


@pytest.mark.parametrize("depth", [5000])
def test_deeply_nested_json(depth: int) -> None:
    found, stats = tokens("[" * depth + "]" * depth, format="json")
    assert found == []
    found, _ = tokens("[" * depth + "]" * depth, format="stix")
    assert found == []
