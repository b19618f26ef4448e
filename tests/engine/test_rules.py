"""Rules, augment, aggregation and caps, through the engine on inline sources."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import netaddr
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edl_api.engine.config import validate_config_document
from edl_api.engine.pipeline import EngineResult, EngineSettings, run_pipeline
from edl_api.engine.special import RESERVED_V4_CIDRS, RESERVED_V6_CIDRS


def run(
    values: list[str] | list[list[str]],
    rules: dict[str, Any] | None = None,
    pipeline: dict[str, Any] | None = None,
    augment: dict[str, Any] | None = None,
    allow_values: list[str] | None = None,
    confidences: list[int] | None = None,
) -> EngineResult:
    groups = values if values and isinstance(values[0], list) else [values]
    sources: list[dict[str, Any]] = [
        {"name": f"s{i}", "values": list(group), "confidence": (confidences or [50] * 9)[i]}
        for i, group in enumerate(groups)
    ]
    if allow_values is not None:
        sources.append({"name": "allow", "values": allow_values, "role": "allow"})
    doc: dict[str, Any] = {"sources": sources, "rules": rules or {}, "pipeline": pipeline or {}}
    if augment:
        doc["augment"] = augment
    return asyncio.run(run_pipeline(validate_config_document(doc), EngineSettings()))


def feeds(result: EngineResult) -> dict[str, list[str]]:
    return {name: [e.value for e in entries] for name, entries in result.feeds.items()}


def test_allowed_range_splits_a_covering_network() -> None:
    result = run(["8.0.0.0/16", "8.0.1.7"], rules={"allow": ["8.0.1.0/24"]})
    assert feeds(result)["cidr"] == [
        "8.0.0.0/24",
        "8.0.2.0/23",
        "8.0.4.0/22",
        "8.0.8.0/21",
        "8.0.16.0/20",
        "8.0.32.0/19",
        "8.0.64.0/18",
        "8.0.128.0/17",
    ]
    assert feeds(result)["ipv4"] == []
    assert result.report["feeds"]["cidr"]["split"] == {"allow": 1}
    assert result.report["feeds"]["ipv4"]["dropped"] == {"allow": 1}


def test_allow_sources_and_v6() -> None:
    result = run(["2a00:1450::/32", "2a00:1450:4001::1"], allow_values=["2a00:1450:4000::/34"])
    assert feeds(result)["cidr"] == ["2a00:1450::/34", "2a00:1450:8000::/33"]
    assert feeds(result)["ipv6"] == []
    assert result.report["counts"]["allowlist"]["ipv6_ranges"] == 1


def test_domain_allowlist() -> None:
    values = [
        "example.org",
        "www.example.org",
        "corp.example",
        "a.corp.example",
        "*.x.corp.example",
        "*.corp.example",
        "http://a.corp.example/x",
        "http://example.org/y",
        "http://evil.example/keep",
        "http://evil.example/drop",
        "http://8.0.0.1/z",
    ]
    result = run(
        values,
        rules={
            "allow": ["example.org", "*.corp.example", "http://evil.example/drop", "8.0.0.0/24"],
        },
    )
    assert feeds(result)["fqdn"] == ["corp.example", "www.example.org"]
    assert feeds(result)["url"] == ["evil.example/keep"]
    assert result.report["feeds"]["fqdn"]["dropped"] == {"allow": 4}
    assert result.report["feeds"]["url"]["dropped"] == {"allow": 4}


@pytest.mark.parametrize("cidr", RESERVED_V4_CIDRS + RESERVED_V6_CIDRS)
def test_exclude_reserved_covers_each_registry_entry(cidr: str) -> None:
    network = ipaddress.ip_network(cidr)
    inside = str(network.network_address + network.num_addresses // 2 + 1)
    result = run([inside, cidr])
    assert result.feeds["ip"] == []
    off = run([inside], rules={"exclude_reserved": False, "min_prefix": {"ipv4": 0, "ipv6": 0}})
    assert feeds(off)["ip"] == [inside]


def test_public_addresses_are_not_reserved() -> None:
    values = [
        "8.8.8.8",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "2a00:1450:4001:80b::200e",
        "192.0.1.1",
        "100.128.0.1",
        "172.32.0.1",
    ]
    assert sorted(feeds(run(values))["ip"]) == sorted(values)


def test_min_prefix_and_tld_wildcards_and_regex() -> None:
    values = [
        "9.0.0.0/7",
        "9.0.0.0/8",
        "2a00::/12",
        "*.com",
        "*.co.uk",
        "co.uk",
        "*.github.io",
        "*.evil.com",
        "evil.com",
        "portal.agency.gov",
        "http://x.gov/a",
    ]
    result = run(
        values,
        rules={"min_prefix": {"ipv4": 8, "ipv6": 16}, "exclude_regex": [r"\.gov$", r"\.gov/"]},
    )
    assert feeds(result)["cidr"] == ["9.0.0.0/8"]
    assert feeds(result)["fqdn"] == ["*.evil.com", "evil.com"]
    assert feeds(result)["url"] == []
    assert result.report["feeds"]["cidr"]["dropped"] == {"min_prefix": 2}
    assert result.report["feeds"]["fqdn"]["dropped"] == {
        "public_suffix": 4,
        "exclude_regex": 1,
    }


def test_include_types_and_min_confidence() -> None:
    result = run(
        [["8.8.8.8", "evil.example"], ["9.9.9.9", "bad.example"]],
        rules={"include_types": ["ipv4"], "min_confidence": 60},
        confidences=[80, 40],
    )
    assert feeds(result)["ipv4"] == ["8.8.8.8"]
    assert feeds(result)["fqdn"] == []
    assert result.report["feeds"]["fqdn"]["dropped"] == {"include_types": 2}
    assert result.report["feeds"]["ipv4"]["dropped"] == {"min_confidence": 1}


def test_augment() -> None:
    result = run(
        ["http://a.evil.example/x", "http://8.8.4.4:81/", "*.bad.example", "*.co.uk"],
        augment={
            "url_hosts": True,
            "wildcard_parent": True,
            "tags": [{"types": ["url"], "add": ["phish"]}, {"add": ["all"]}],
        },
    )
    assert feeds(result)["fqdn"] == ["*.bad.example", "a.evil.example", "bad.example"]
    assert feeds(result)["ipv4"] == ["8.8.4.4"]
    url = result.feeds["url"][0]
    assert (url.tags, result.feeds["fqdn"][0].tags) == (["all", "phish"], ["all"])
    assert result.report["counts"]["augmented"] == {"fqdn": 3, "ipv4": 1}


def test_aggregation_drops_covered_hosts_and_merges_adjacent() -> None:
    values = [
        "8.8.8.0/25",
        "8.8.8.128/25",
        "8.8.8.8",
        "8.8.9.0",
        "8.8.9.1",
        "2a00::/33",
        "2a00:0:8000::/33",
        "2a00::1",
    ]
    result = run(values)
    assert feeds(result) == {
        "ipv4": ["8.8.9.0", "8.8.9.1"],
        "ipv6": [],
        "cidr": ["8.8.8.0/24", "2a00::/32"],
        "fqdn": [],
        "url": [],
        "ip": ["8.8.8.0/24", "8.8.9.0/31", "2a00::/32"],
    }
    plain = run(values, pipeline={"aggregate": False})
    assert feeds(plain)["cidr"] == ["8.8.8.0/25", "8.8.8.128/25", "2a00::/33", "2a00:0:8000::/33"]
    assert feeds(plain)["ipv4"] == ["8.8.8.8", "8.8.9.0", "8.8.9.1"]
    assert feeds(plain)["ip"] == [
        "8.8.8.0/25",
        "8.8.8.8",
        "8.8.8.128/25",
        "8.8.9.0",
        "8.8.9.1",
        "2a00::/33",
        "2a00::1",
        "2a00:0:8000::/33",
    ]


def test_max_entries_keeps_highest_confidence() -> None:
    result = run(
        [["8.8.8.1", "8.8.8.3"], ["8.8.8.2", "8.8.8.4", "8.8.8.5"]],
        pipeline={"max_entries": {"ipv4": 3}, "outputs": ["ipv4"]},
        confidences=[30, 90],
    )
    assert feeds(result) == {"ipv4": ["8.8.8.2", "8.8.8.4", "8.8.8.5"]}
    assert result.report["feeds"]["ipv4"]["cut"] == 2


# -- properties against an independent oracle (netaddr) -------------------------------------


def _networks(version: int) -> st.SearchStrategy[str]:
    bits = 32 if version == 4 else 128
    # Concentrate on a small space so overlaps and adjacency happen often.
    base = 0x08000000 if version == 4 else 0x2A000000 << 96
    span = 1 << (12 if version == 4 else 14)

    def build(offset: int, prefixlen: int) -> str:
        host_bits = bits - prefixlen
        address = base + (offset % span)
        network = address >> host_bits << host_bits
        return str(ipaddress.ip_network((network, prefixlen)))

    low = bits - 10
    return st.builds(build, st.integers(0, span), st.integers(low, bits))


def _check_against_oracle(deny: list[str], allow: list[str], version: int) -> None:
    result = run(
        deny,
        rules={"allow": allow, "exclude_reserved": False, "min_prefix": {"ipv4": 0, "ipv6": 0}},
    )
    expected = netaddr.IPSet(deny) - netaddr.IPSet(allow)
    published = feeds(result)
    ip_feed = netaddr.IPSet(published["ip"])
    assert ip_feed == expected
    assert len(published["ip"]) == len(list(expected.iter_cidrs()))  # minimal
    host_type = f"ipv{version}"
    assert netaddr.IPSet(published["cidr"] + published[host_type]) == expected
    networks = netaddr.IPSet(published["cidr"])
    assert not any(netaddr.IPAddress(h) in networks for h in published[host_type])


@settings(max_examples=60, deadline=None)
@given(st.lists(_networks(4), min_size=1, max_size=25), st.lists(_networks(4), max_size=6))
def test_ipv4_aggregation_matches_ipset(deny: list[str], allow: list[str]) -> None:
    _check_against_oracle(deny, allow, 4)


@settings(max_examples=60, deadline=None)
@given(st.lists(_networks(6), min_size=1, max_size=25), st.lists(_networks(6), max_size=6))
def test_ipv6_aggregation_matches_ipset(deny: list[str], allow: list[str]) -> None:
    _check_against_oracle(deny, allow, 6)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(_networks(4), min_size=1, max_size=20),
    st.integers(16, 32),
    st.lists(_networks(6), max_size=8),
    st.integers(100, 128),
)
def test_nothing_broader_than_min_prefix(
    v4: list[str], min4: int, v6: list[str], min6: int
) -> None:
    result = run(
        v4 + v6, rules={"exclude_reserved": False, "min_prefix": {"ipv4": min4, "ipv6": min6}}
    )
    for feed in ("cidr", "ip"):
        for entry in result.feeds[feed]:
            network = ipaddress.ip_network(entry.value)
            assert network.prefixlen >= (min4 if network.version == 4 else min6)
    # Exactly the admissible networks are covered, split where merging would widen them.
    admissible = [
        n for n in v4 + v6 if ipaddress.ip_network(n).prefixlen >= (min4 if ":" not in n else min6)
    ]
    assert netaddr.IPSet(feeds(result)["ip"]) == netaddr.IPSet(admissible)
