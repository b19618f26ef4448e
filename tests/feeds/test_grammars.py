"""Vendor grammars as tables: input → the line each format publishes, or its drop reason.

Each row cites the vendor document the rule comes from (see `edl_api/feeds/grammars.py`
for the full titles, versions and addresses):
- PAN: PAN-OS 10.1/10.2 "Formatting Guidelines for an External Dynamic List" (Domain List:
  token separators `. / ? & = ; +`, `*`/`^` the only character within a token, ≤ 255).
- FGT: FortiOS Administration Guide "Threat feeds" (7.0-7.6), FortiGuard category example
  `http://example.com:8080/url`; wildcards "at the start or end" (FortiMail feed formats).
- CP: Check Point R81.10 "Supported Indicator Files" (IP = IPv4, IP Range = IPv4 range) and
  sk132193 (CSV, "Quoted fields are accepted").
- CSCO: Cisco cdFMC "Custom Lists and Feeds: Requirements" and "URL Lists and Feeds: URL
  Syntax and Matching Criteria" (`*` a whole domain label, not after the first slash; URL
  lists IPv4 only; no /0 network).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edl_api.engine.entries import FeedEntry
from edl_api.feeds import grammars
from edl_api.feeds.render import FORMATS, RenderOptions, drop_report, render

# (format, type, value, expected line or drop reason, source)
ROWS: list[tuple[str, str, str, str, str]] = [
    # PAN-OS: `*` must be a whole token between . / ? & = ; + only (the old check also split
    # on : @ , _ ~ -, so these four were published and PAN-OS rejects them).
    ("panos", "url", "evil.example/*-x", "drop:wildcard_token", "PAN token separators"),
    ("panos", "url", "evil.example/a_*", "drop:wildcard_token", "PAN token separators"),
    ("panos", "url", "evil.example/x~*", "drop:wildcard_token", "PAN token separators"),
    ("panos", "url", "evil.example/f:*", "drop:wildcard_token", "PAN token separators"),
    ("panos", "url", "evil.example/*/x", "evil.example/*/x", "PAN whole token"),
    ("panos", "url", "evil.example/a?b=*&c=^", "evil.example/a?b=*&c=^", "PAN ? & = tokens"),
    ("panos", "url", "evil.example/a+*;x", "evil.example/a+*;x", "PAN + ; tokens"),
    ("panos", "url", "*.feyda.net/a.php", "*.feyda.net/a.php", "PAN `*.` whole label"),
    ("panos", "url", "evil.example/ab*/x", "drop:wildcard_token", "PAN only char in token"),
    ("panos", "url", "evil.example/a^b", "drop:wildcard_token", "PAN caret whole token"),
    ("panos", "url", "evil.example:8080/x", "drop:port", "PAN no port"),
    ("panos", "url", "evil.example/" + "a" * 243, "drop:too_long", "PAN ≤ 255 chars"),
    ("panos", "url", "evil.example/" + "a" * 242, "evil.example/" + "a" * 242, "PAN 255"),
    ("panos", "url", "[2001:db8::1]/x", "drop:type_not_supported", "PAN (undocumented)"),
    ("panos", "url", "evil.example/a,b", "evil.example/a,b", "PAN `,` no separator"),
    ("panos", "fqdn", "*.bad.example", "*.bad.example", "PAN domain `*` prepended"),
    ("panos", "fqdn", "a" * 252 + ".com", "drop:too_long", "PAN domain ≤ 255"),
    ("panos", "ipv6", "2001:db8::1", "2001:db8::1", "PAN IP list has IPv6"),
    ("panos", "cidr", "2001:db8::/32", "2001:db8::/32", "PAN IP list has IPv6"),
    # FortiGate
    ("fortinet", "url", "evil.example:8080/x", "evil.example:8080/x", "FGT ported example"),
    ("fortinet", "url", "*.feyda.net/a.php", "*.feyda.net/a.php", "FGT `*` at the start"),
    ("fortinet", "url", "evil.example/x*", "evil.example/x*", "FGT `*` at the end"),
    ("fortinet", "url", "evil.example/*/x", "drop:wildcard_token", "FGT start/end only"),
    ("fortinet", "url", "[2001:db8::1]/x", "[2001:db8::1]/x", "FGT IPv6 URLs in [ ]"),
    ("fortinet", "url", "evil.example/" + "a" * 2040, "drop:too_long", "FGT ≤ 2048 kept"),
    ("fortinet", "fqdn", "*.bad.example", "*.bad.example", "FGT simple wildcards"),
    ("fortinet", "ipv6", "2001:db8::1", "2001:db8::1", "FGT IPv6 policies"),
    # Check Point
    ("checkpoint", "ipv4", "8.8.8.8", "IP:8.8.8.8", "CP IP = IPv4"),
    ("checkpoint", "ipv6", "2001:db8::1", "drop:type_not_supported", "CP IP = IPv4 only"),
    ("checkpoint", "cidr", "9.9.9.0/24", "IP Range:9.9.9.0-9.9.9.255", "CP IP Range"),
    ("checkpoint", "cidr", "2001:db8::/32", "drop:type_not_supported", "CP IPv4 ranges only"),
    ("checkpoint", "fqdn", "bad.example", "Domain:bad.example", "CP Domain"),
    ("checkpoint", "fqdn", "*.bad.example", "drop:wildcard_token", "CP no wildcard syntax"),
    ("checkpoint", "url", "*.feyda.net/a.php", "drop:wildcard_token", "CP no wildcard syntax"),
    ("checkpoint", "url", "evil.example:8080/x", "URL:evil.example:8080/x", "CP any valid URL"),
    ("checkpoint", "url", "evil.example/a,b", 'URL:"evil.example/a,b"', "CP quoted fields"),
    # Cisco FMC
    ("cisco", "fqdn", "*.bad.example", "*.bad.example", "CSCO `*` domain label"),
    ("cisco", "url", "*.feyda.net/a.php", "*.feyda.net/a.php", "CSCO `*` complete label"),
    ("cisco", "url", "evil.example/*", "drop:wildcard_token", "CSCO not after first /"),
    ("cisco", "url", "ev*il.example/a", "drop:wildcard_token", "CSCO not a partial label"),
    ("cisco", "url", "evil.example:8080/x", "drop:port", "CSCO (ports undocumented)"),
    ("cisco", "url", "[2001:db8::1]/x", "drop:type_not_supported", "CSCO URL lists IPv4"),
    ("cisco", "ipv6", "2001:db8::1", "2001:db8::1", "CSCO netmask 0-128"),
    ("cisco", "cidr", "0.0.0.0/0", "drop:whole_internet", "CSCO no /0"),
    ("cisco", "cidr", "10.0.0.0/8", "10.0.0.0/8", "CSCO address blocks"),
]


def _published(fmt: str, kind: str, value: str, options: RenderOptions | None = None) -> str:
    rendered = render([FeedEntry(value, kind, ["s"], [], 50)], kind, fmt,
                      options or RenderOptions())
    lines = rendered.body.decode().splitlines()
    if fmt == "checkpoint":
        lines = lines[1:]
    if not lines:
        assert rendered.dropped == 1
        (reason,) = rendered.drops.by_reason
        return f"drop:{reason}"
    (line,) = lines
    if fmt == "checkpoint":
        cells = line.split(",")
        value_cell = ",".join(cells[1:-5])  # a quoted value may hold a comma
        return f"{cells[-5]}:{value_cell}"
    return line


@pytest.mark.parametrize(("fmt", "kind", "value", "expected", "source"), ROWS)
def test_vendor_grammar_table(fmt: str, kind: str, value: str, expected: str, source: str) -> None:
    assert _published(fmt, kind, value) == expected, source


@pytest.mark.parametrize("fmt", ["panos", "cisco"])
def test_ports_strip_keeps_host_and_path(fmt: str) -> None:
    strip = RenderOptions(strip_ports=True)
    assert _published(fmt, "url", "evil.example:8080/x", strip) == "evil.example/x"
    entries = [FeedEntry(v, "url", [], [], 50) for v in ("a.example/x", "a.example:81/x")]
    rendered = render(entries, "url", fmt, strip)
    assert rendered.body == b"a.example/x\n"  # the stripped twin is not published twice
    assert rendered.dropped == 0


def test_drop_report_names_formats_reasons_and_a_sample() -> None:
    report = drop_report("url", ["a.example/x", "a.example:8080/x", "a.example/ab*"])
    assert report["panos"] == {
        "dropped": 2, "reasons": {"port": 1, "wildcard_token": 1},
        "sample": [{"value": "a.example:8080/x", "reason": "port"},
                   {"value": "a.example/ab*", "reason": "wildcard_token"}],
    }
    assert "fortinet" not in report  # a port and a trailing `*`: both load on FortiGate
    assert report["cisco"]["reasons"] == {"port": 1, "wildcard_token": 1}
    assert set(report["checkpoint"]["reasons"]) == {"wildcard_token"}
    ipv6 = drop_report("ipv6", ["2001:db8::1", "2001:db8::2"])
    assert ipv6 == {"checkpoint": {"dropped": 2, "reasons": {"type_not_supported": 2},
                                   "sample": [{"value": "2001:db8::1",
                                               "reason": "type_not_supported"},
                                              {"value": "2001:db8::2",
                                               "reason": "type_not_supported"}]}}
    assert drop_report("ip", ["8.8.8.8", "2001:db8::1"])["checkpoint"]["dropped"] == 1


def _agrees_with_render(kind: str, values: list[str]) -> dict[str, int]:
    return {fmt: render([FeedEntry(v, kind, [], [], 50) for v in values], kind, fmt).dropped
            for fmt in grammars.GRAMMARS}


def test_drop_report_counts_what_the_renderers_drop() -> None:
    values = sorted({r[2] for r in ROWS if r[1] == "url"})
    counts = {fmt: r["dropped"] for fmt, r in drop_report("url", values).items()}
    assert counts == {fmt: n for fmt, n in _agrees_with_render("url", values).items() if n}


# --- properties -----------------------------------------------------------------------

_PANOS_TOKEN = re.compile(r"[./?&=;+]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_URL_CHARS = st.sampled_from(list("ab09.-_~:@,/?&=;+*^%![]") + ["\t", "\x00", " ", "\x85"])
_VALUES = st.text(_URL_CHARS, min_size=1, max_size=40).map(lambda s: "h.example/" + s)
_HOSTS = st.text(st.sampled_from(list("ab0-*.^_")), min_size=1, max_size=20)


def _panos_would_reject(line: str) -> bool:
    return any(("*" in t or "^" in t) and t not in ("*", "^") for t in _PANOS_TOKEN.split(line))


@settings(max_examples=300, deadline=None)
@given(st.lists(_VALUES, max_size=20), st.lists(_HOSTS, max_size=10), st.booleans())
def test_no_published_line_has_a_control_char_or_a_token_panos_rejects(
    urls: list[str], hosts: list[str], strip: bool
) -> None:
    feeds: list[tuple[str, list[FeedEntry]]] = [
        ("url", [FeedEntry(v, "url", ["s"], [], 50) for v in urls]),
        ("fqdn", [FeedEntry(v, "fqdn", ["s"], [], 50) for v in hosts]),
    ]
    for kind, entries in feeds:
        for fmt in FORMATS:
            if fmt in ("plain", "csv", "json", "stix"):
                continue  # not vendor grammars: they carry every entry, quoted as needed
            rendered = render(entries, kind, fmt, RenderOptions(strip_ports=strip))
            lines = rendered.body.decode().split("\n")
            for line in lines:
                assert _CONTROL.search(line) is None
                if fmt == "panos":
                    assert not _panos_would_reject(line)
            published = len([x for x in lines if x]) - (1 if fmt == "checkpoint" else 0)
            assert published + rendered.dropped <= len(entries)
            assert rendered.dropped == sum(rendered.drops.by_reason.values())



@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.sampled_from(["192.0.2.1", "10.0.0.0/0", "x.example/a/0", "*.x.example", "::1",
                     "a" * 300, "x.example:8080/", "ok.example", "[::1]/x", "x.example\x85"]),
    st.text(min_size=1, max_size=12).filter(lambda v: "\n" not in v),
), max_size=60))
def test_screened_suspects_are_the_per_line_ones(lines: list[str]) -> None:
    """The drop report's bulk screen (slices joined and searched once) finds exactly the
    lines the per-line check finds, in order, whatever the slice boundaries."""
    expected = [v for v in lines if not grammars.plainly_ok(v)]
    for size in (1, 7, grammars.SUSPECT_SLICE):
        original = grammars.SUSPECT_SLICE
        grammars.SUSPECT_SLICE = size
        try:
            assert grammars.suspect_lines(lines) == expected
        finally:
            grammars.SUSPECT_SLICE = original
