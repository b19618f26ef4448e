"""Vendor renderers: grammar, drops, and round trips."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edl_api.engine.entries import FeedEntry
from edl_api.engine.indicators import classify
from edl_api.feeds.render import FORMATS, render


def entry(value: str, kind: str, confidence: int = 50, **extra: object) -> FeedEntry:
    return FeedEntry(value, kind, ["feodo", "drop"], ["c2"], confidence, **extra)  # type: ignore[arg-type]


IPS = [entry("8.8.8.8", "ipv4"), entry("9.9.9.0/24", "cidr", 90), entry("2a00::1", "ipv6", 10)]
URLS = [
    entry("evil.example/a?b=c", "url"),
    entry("evil.example:8080/x", "url"),
    entry("evil.example/*/x", "url"),
    entry("evil.example/ab*/x", "url"),
    entry("evil.example/" + "a" * 300, "url"),
    entry("evil.example/a,b", "url"),
]
NAMES = [entry("*.bad.example", "fqdn"), entry("bad.example", "fqdn")]


def test_formats() -> None:
    assert FORMATS == ("plain", "panos", "fortinet", "checkpoint", "csv", "json", "cisco",
                       "stix")
    with pytest.raises(ValueError, match="unknown format"):
        render(IPS, "ip", "xml")


def test_plain() -> None:
    rendered = render(IPS, "ip", "plain")
    assert rendered.body == b"8.8.8.8\n9.9.9.0/24\n2a00::1\n"
    assert (rendered.count, rendered.dropped) == (3, 0)
    assert render([], "ip", "plain").body == b""


def test_panos_url_grammar() -> None:
    rendered = render(URLS, "url", "panos")
    assert rendered.body.decode().splitlines() == [
        "evil.example/a?b=c",
        "evil.example/*/x",
        "evil.example/a,b",
    ]
    assert rendered.dropped == 3  # port, partial-token "*", longer than 255
    assert rendered.drops.by_reason == {"port": 1, "wildcard_token": 1, "too_long": 1}
    assert render(NAMES, "fqdn", "panos").body == b"*.bad.example\nbad.example\n"
    assert render(IPS, "ip", "panos").count == 3


def test_fortinet_keeps_ports() -> None:
    rendered = render(URLS, "url", "fortinet")
    assert "evil.example:8080/x" in rendered.body.decode().splitlines()
    # FortiGate documents `*` at the start or end only: the mid-path ones are dropped.
    assert rendered.drops.by_reason == {"wildcard_token": 2}


def test_checkpoint() -> None:
    rendered = render(IPS + NAMES + URLS[:1] + URLS[-1:], "ip", "checkpoint")
    lines = rendered.body.decode().splitlines()
    assert lines[0] == "#UNIQ-NAME,VALUE,TYPE,CONFIDENCE,SEVERITY,PRODUCT,COMMENT"
    rows = list(csv.reader(lines[1:]))
    assert [(r[1], r[2], r[3], r[5]) for r in rows] == [
        ("8.8.8.8", "IP", "medium", "AB"),
        ("9.9.9.0-9.9.9.255", "IP Range", "high", "AB"),
        ("bad.example", "Domain", "medium", "AB"),
        ("evil.example/a?b=c", "URL", "medium", "AB"),
        ("evil.example/a,b", "URL", "medium", "AB"),  # quoted (sk132193)
    ]
    assert all(len(r) == 7 and r[0].startswith("edl-") for r in rows)
    assert rows[0][6] == "feodo drop #c2"
    # Check Point's IP type is IPv4: the IPv6 host is dropped, not sent as an IP row.
    assert rendered.drops.by_reason == {"type_not_supported": 1, "wildcard_token": 1}
    assert render(IPS, "ip", "checkpoint").body == render(IPS, "ip", "checkpoint").body


def test_csv_and_json_carry_provenance() -> None:
    seen = datetime(2025, 1, 15, 10, 0, tzinfo=UTC)
    entries = [entry("evil.example", "fqdn", 80, first_seen=seen, last_seen=seen)]
    rows = list(csv.reader(io.StringIO(render(entries, "fqdn", "csv").body.decode())))
    assert rows == [
        ["value", "type", "sources", "tags", "confidence", "first_seen", "last_seen"],
        ["evil.example", "fqdn", "feodo|drop", "c2", "80", seen.isoformat(), seen.isoformat()],
    ]
    assert json.loads(render(entries, "fqdn", "json").body) == [
        {
            "value": "evil.example",
            "type": "fqdn",
            "sources": ["feodo", "drop"],
            "tags": ["c2"],
            "confidence": 80,
            "first_seen": seen.isoformat(),
            "last_seen": seen.isoformat(),
        }
    ]


values = st.one_of(
    st.ip_addresses().map(str),
    st.builds(
        lambda ip, n: f"{ip}/{n % (33 if ip.version == 4 else 129)}",
        st.ip_addresses(),
        st.integers(0, 128),
    ),
    st.from_regex(r"(\*\.)?[a-z0-9]{1,10}(\.[a-z0-9-]{0,5}[a-z0-9])?\.[a-z]{2,5}", fullmatch=True),
    st.from_regex(
        r"https?://[a-z0-9]{1,8}\.[a-z]{2,5}(:[0-9]{2,5})?/[A-Za-z0-9._~%-]{0,20}", fullmatch=True
    ),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(values, max_size=30))
def test_plain_and_fortinet_reparse_to_the_same_set(raw: list[str]) -> None:
    entries = {}
    for token in raw:
        for indicator in classify(token).indicators:
            entries[indicator.value] = entry(indicator.value, indicator.indicator_type)
    feed = list(entries.values())
    for fmt in ("plain", "fortinet"):
        body = render(feed, "mixed", fmt).body.decode()
        reparsed = {i.value for line in body.splitlines() for i in classify(line).indicators}
        assert reparsed == set(entries)
