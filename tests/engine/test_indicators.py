"""Classification and normalisation (CONFIG.md "Semantics")."""

from __future__ import annotations

import ipaddress

import netaddr
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edl_api.engine.aggregate import aggregate_values
from edl_api.engine.indicators import (
    cidr_ok,
    classify,
    ip_kind,
    ip_network,
    normalise_fqdn,
    normalise_url,
    range_to_prefixes,
    sort_key,
)


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("203.0.113.7", [("ipv4", "203.0.113.7")]),
        (" 8.8.8.8 ", [("ipv4", "8.8.8.8")]),
        ("45.95.147.236:8080", [("ipv4", "45.95.147.236")]),
        ("2001:DB8:0:0::1", [("ipv6", "2001:db8::1")]),
        ("[2001:db8::1]:443", [("ipv6", "2001:db8::1")]),
        ("[2001:db8::1]", [("ipv6", "2001:db8::1")]),
        ("10.1.2.3/8", [("cidr", "10.0.0.0/8")]),
        ("2001:db8::1/32", [("cidr", "2001:db8::/32")]),
        ("1.2.3.4/32", [("ipv4", "1.2.3.4")]),
        (
            "1.1.1.1-1.1.1.6",
            [
                ("ipv4", "1.1.1.1"),
                ("cidr", "1.1.1.2/31"),
                ("cidr", "1.1.1.4/31"),
                ("ipv4", "1.1.1.6"),
            ],
        ),
        ("10.0.0.0-10.0.255.255", [("cidr", "10.0.0.0/16")]),
        ("2001:db8::-2001:db8::ff", [("cidr", "2001:db8::/120")]),
        ("Evil.Example.", [("fqdn", "evil.example")]),
        ("*.Bad.Example", [("fqdn", "*.bad.example")]),
        ("bücher.example", [("fqdn", "xn--bcher-kva.example")]),
        ("evil.example:8443", [("fqdn", "evil.example")]),
        ("http://Evil.Example:80/a?b=c#frag", [("url", "evil.example/a?b=c")]),
        ("https://evil.example:443", [("url", "evil.example/")]),
        ("https://evil.example:8443/X", [("url", "evil.example:8443/X")]),
        ("http://user:pw@1.2.3.4/x", [("url", "1.2.3.4/x")]),
        ("http://[2001:DB8::1]:8080/p", [("url", "[2001:db8::1]:8080/p")]),
        ("evil.example/path", [("url", "evil.example/path")]),
    ],
)
def test_classify(token: str, expected: list[tuple[str, str]]) -> None:
    result = classify(token)
    assert [(i.indicator_type, i.value) for i in result.indicators] == expected
    assert result.reason is None


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "empty"),
        ("999.1.1.1", "bad_ipv4"),
        ("1.2.3", "bad_ipv4"),
        ("01.2.3.4", "bad_ipv4"),
        ("1.2.3.4/33", "bad_cidr"),
        ("1.2.3.9-1.2.3.1", "bad_range"),
        ("1.2.3.4-2001:db8::1", "bad_range"),
        ("2001:db8:::1", "bad_ipv6"),
        ("1.2.3.4:99999", "bad_port"),
        ("localhost", "unrecognised"),
        ("-bad.example", "bad_domain"),
        ("a..b.example", "bad_domain"),
        ("*.*.example", "bad_domain"),
        ("ftp:/x", "bad_url"),
        ("gopher://x.example/", "bad_url"),
        ("http://exa mple.com/", "bad_url"),
        ("http:///nohost", "bad_url"),
        ("x" * 3000, "too_long"),
        ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "unrecognised"),
    ],
)
def test_invalid_reasons(token: str, reason: str) -> None:
    result = classify(token)
    assert result.indicators == ()
    assert result.reason == reason


def test_label_length_limit() -> None:
    assert normalise_fqdn("a" * 63 + ".example") == "a" * 63 + ".example"
    assert normalise_fqdn("a" * 64 + ".example") is None


tokens = st.one_of(
    st.ip_addresses().map(str),
    st.builds(
        lambda ip, n: f"{ip}/{n % (33 if ip.version == 4 else 129)}",
        st.ip_addresses(),
        st.integers(0, 128),
    ),
    st.from_regex(
        r"(\*\.)?[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?(\.[a-z0-9]{1,8}){0,3}\.[a-z]{2,6}",
        fullmatch=True,
    ),
    st.from_regex(
        r"https?://[a-z0-9]{1,8}\.[a-z]{2,5}(:[0-9]{1,5})?(/[A-Za-z0-9._~%-]{0,12}){0,3}(\?[a-z=&0-9]{0,10})?",
        fullmatch=True,
    ),
    st.text(max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(tokens)
def test_normalisation_is_idempotent(token: str) -> None:
    first = classify(token)
    for indicator in first.indicators:
        again = classify(indicator.value)
        if indicator.indicator_type == "url" and again.indicator_type == "cidr":
            continue  # "1.2.3.4/24" as a URL path is ambiguous once the scheme is gone
        assert [(i.indicator_type, i.value) for i in again.indicators] == [
            (indicator.indicator_type, indicator.value)
        ]
    if first.indicator_type == "url":
        value = first.value
        assert value is not None
        assert normalise_url(value) == value


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 32))
def test_range_to_prefixes_is_exact_and_minimal(a: int, size: int, min_prefix: int) -> None:
    # Bound the output: a huge range with a long min_prefix is millions of prefixes.
    size %= 1 << min(32, 32 - min_prefix + 6)
    start = min(a, 2**32 - 1 - size)
    end = start + size
    ours = range_to_prefixes(start, end, 32, min_prefix)
    covered = [ipaddress.ip_network((n, p)) for n, p in ours]
    assert all(p >= min_prefix for _, p in ours)
    assert sum(net.num_addresses for net in covered) == end - start + 1
    assert int(covered[0].network_address) == start
    assert int(covered[-1].broadcast_address) == end
    if min_prefix == 0:
        expected = list(
            ipaddress.summarize_address_range(
                ipaddress.IPv4Address(start), ipaddress.IPv4Address(end)
            )
        )
        assert covered == expected


# -- published values: parsing, kind, order and aggregation (oracles: ipaddress, netaddr) ---


def _address(version: int) -> st.SearchStrategy[str]:
    # A small space, so that overlaps and adjacency are common.
    base = 0xC0000200 if version == 4 else 0x20010DB8 << 96
    return st.integers(0, 1 << 12).map(lambda offset: str(ipaddress.ip_address(base + offset)))


def _published(version: int) -> st.SearchStrategy[str]:
    """A host ("192.0.2.7") or a network with its host bits cleared ("192.0.2.0/24")."""
    bits = 32 if version == 4 else 128

    def network(address: str, prefixlen: int) -> str:
        return str(ipaddress.ip_network(f"{address}/{prefixlen}", strict=False))

    return st.one_of(
        _address(version),
        st.builds(network, _address(version), st.integers(bits - 12, bits - 1)),
    )


published_values = st.one_of(_published(4), _published(6))


@settings(max_examples=300, deadline=None)
@given(st.one_of(published_values, st.builds(lambda a, n: f"{a}/{n}", _address(4),
                                               st.integers(0, 40))))
def test_ip_network_and_kind_match_ipaddress(value: str) -> None:
    try:
        oracle = ipaddress.ip_network(value, strict=False)
    except ValueError:
        assert ip_network(value) is None
        assert ip_kind(value) is None
        return
    assert ip_network(value) == (oracle.version, int(oracle.network_address), oracle.prefixlen)
    assert cidr_ok(value) == (
        oracle.version, int(oracle.network_address), int(oracle.broadcast_address)
    )
    full = oracle.prefixlen == oracle.max_prefixlen
    assert ip_kind(value) == (f"ipv{oracle.version}" if full else "cidr")


@pytest.mark.parametrize(
    "value", ["", "evil.example", "1.2.3", "1.2.3.4/", "1.2.3.4/33", "::1/129", "1.2.3.4/²",
              "01.2.3.4", "1.2.3.4/24/1", "[::1]"],
)
def test_ip_kind_of_non_ips_is_none(value: str) -> None:
    assert ip_network(value) is None
    assert ip_kind(value) is None


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(published_values, st.sampled_from(["evil.example", "a.example/x"])),
                max_size=30))
def test_aggregate_values_is_exact_and_minimal(values: list[str]) -> None:
    ips = [v for v in values if ip_kind(v) is not None]
    aggregated = aggregate_values(values)
    networks = [v for v in aggregated if ip_kind(v) is not None]
    expected = netaddr.IPSet(ips)
    assert netaddr.IPSet(networks) == expected
    assert len(networks) == len(list(expected.iter_cidrs()))  # minimal
    # IPv4 before IPv6, each in address order; the other values follow, sorted.
    assert networks == sorted(networks, key=sort_key)
    assert aggregated[len(networks):] == sorted({v for v in values if ip_kind(v) is None})
    assert all("/" not in v or ip_kind(v) == "cidr" for v in networks)  # hosts stay bare


def test_a_url_with_no_faithful_schemeless_form_is_not_normalised() -> None:
    """https on port 80 would read back as plain http (port dropped): refused, not widened
    (hypothesis found `HTTPS://0.AA:80` breaking idempotency)."""
    assert normalise_url("HTTPS://0.AA:80") is None
    assert normalise_url("https://evil.example:443/a") == "evil.example/a"
    assert normalise_url("https://evil.example:8443/a") == "evil.example:8443/a"
    assert normalise_url("http://evil.example:80/a") == "evil.example/a"
