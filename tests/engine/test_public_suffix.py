"""No public suffix (or a wildcard of one) is ever published, whichever step produced it;
whole-label wildcard URL hosts are kept. Through the engine on inline sources."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from publicsuffixlist import PublicSuffixList

from edl_api.engine.config import ConfigError, validate_config_document
from edl_api.engine.rules import url_host_of
from tests.engine.test_rules import feeds, run

BOTH = {"url_hosts": True, "wildcard_parent": True}

# (source value, augment, {published type: values that must be in it}, values never published)
CASES: list[tuple[str, dict[str, bool], dict[str, list[str]], list[str]]] = [
    ("*.com", BOTH, {}, ["*.com", "com"]),
    ("*.uk", BOTH, {}, ["*.uk", "uk"]),
    ("act.edu.au", {}, {}, ["act.edu.au"]),
    ("s3.amazonaws.com", {}, {}, ["s3.amazonaws.com"]),
    ("*.s3.amazonaws.com", BOTH, {}, ["*.s3.amazonaws.com", "s3.amazonaws.com"]),
    ("*.github.io", BOTH, {}, ["*.github.io", "github.io"]),
    ("bucket.s3.amazonaws.com", {}, {"fqdn": ["bucket.s3.amazonaws.com"]}, []),
    ("example.co.uk", {}, {"fqdn": ["example.co.uk"]}, []),
    ("*.example.co.uk", {}, {"fqdn": ["*.example.co.uk"]}, ["example.co.uk"]),
    ("*.example.co.uk", BOTH, {"fqdn": ["*.example.co.uk", "example.co.uk"]}, []),
    # url_hosts never yields a public-suffix host; a URL with a path stays specific.
    (
        "http://s3.amazonaws.com/bucket/key",
        BOTH,
        {"url": ["s3.amazonaws.com/bucket/key"]},
        ["s3.amazonaws.com"],
    ),
    ("http://co.uk/", BOTH, {}, ["co.uk/", "co.uk"]),
    ("https://github.io:8443/", {}, {}, ["github.io:8443/"]),
    (
        "http://bucket.s3.amazonaws.com/",
        BOTH,
        {
            "url": ["bucket.s3.amazonaws.com/"],
            "fqdn": ["bucket.s3.amazonaws.com"],
        },
        [],
    ),
    # Wildcard URL hosts: kept, with the parent URL (and hosts) when asked for.
    ("http://*.feyda.net/a.php", {}, {"url": ["*.feyda.net/a.php"]}, ["feyda.net/a.php"]),
    (
        "http://*.feyda.net/a.php",
        BOTH,
        {"url": ["*.feyda.net/a.php", "feyda.net/a.php"], "fqdn": ["*.feyda.net", "feyda.net"]},
        [],
    ),
    ("*.feyda.net/a.php", {}, {"url": ["*.feyda.net/a.php"]}, []),
    # The parent of a dropped wildcard URL is one URL on the suffix's own host: specific.
    ("http://*.co.uk/a.php", BOTH, {"url": ["co.uk/a.php"]}, ["*.co.uk/a.php", "*.co.uk", "co.uk"]),
    ("http://*.com/a.php", BOTH, {}, ["*.com/a.php", "com/a.php", "*.com", "com"]),
]


def _published(result: Any) -> set[str]:
    return {value for values in feeds(result).values() for value in values}


@pytest.mark.parametrize(("value", "augment", "published", "never"), CASES)
def test_public_suffix_table(
    value: str, augment: dict[str, bool], published: dict[str, list[str]], never: list[str]
) -> None:
    result = run([value], augment=augment)
    got = feeds(result)
    for kind, values in published.items():
        assert set(values) <= set(got[kind]), (kind, got[kind])
    assert not set(never) & _published(result)
    if not published:
        # Nothing reaches any feed, and the report says why.
        assert _published(result) == set()
        reasons = {reason for feed in result.report["feeds"].values() for reason in feed["dropped"]}
        assert reasons == {"public_suffix"}


def test_drops_are_counted_per_feed() -> None:
    result = run(
        ["*.com", "act.edu.au", "evil.example", "http://co.uk/", "http://co.uk/x"],
        augment={"wildcard_parent": True},
    )
    assert feeds(result)["fqdn"] == ["evil.example"]
    assert feeds(result)["url"] == ["co.uk/x"]
    assert result.report["feeds"]["fqdn"]["dropped"] == {"public_suffix": 3}  # *.com, com, act…
    assert result.report["feeds"]["url"]["dropped"] == {"public_suffix": 1}


def test_sections_icann_and_off() -> None:
    values = ["*.com", "act.edu.au", "s3.amazonaws.com", "*.github.io", "evil.example"]
    icann = run(values, rules={"public_suffix": "icann"})
    assert feeds(icann)["fqdn"] == ["*.github.io", "evil.example", "s3.amazonaws.com"]
    off = run(values, rules={"public_suffix": "off"})
    assert sorted(feeds(off)["fqdn"]) == sorted(values)
    # The older switch is an alias: false means off, true the default (all sections).
    assert feeds(run(values, rules={"drop_tld_wildcards": False}))["fqdn"] == feeds(off)["fqdn"]
    assert feeds(run(values, rules={"drop_tld_wildcards": True}))["fqdn"] == ["evil.example"]


def test_contradicting_switches_are_a_config_error() -> None:
    doc = {
        "sources": [{"name": "s", "values": ["evil.example"]}],
        "rules": {"drop_tld_wildcards": False, "public_suffix": "all"},
    }
    with pytest.raises(ConfigError) as caught:
        validate_config_document(doc)
    assert "public_suffix" in str(caught.value)


def test_allowlist_still_applies_to_wildcard_url_hosts() -> None:
    result = run(
        ["http://*.feyda.net/a.php", "http://*.evil.example/b"],
        rules={"allow": ["*.feyda.net"]},
        augment={"wildcard_parent": True},
    )
    # `*.feyda.net` allows every subdomain, not feyda.net itself.
    assert feeds(result)["url"] == ["*.evil.example/b", "evil.example/b", "feyda.net/a.php"]
    assert result.report["feeds"]["url"]["dropped"] == {"allow": 1}


# -- property: random names built from real suffixes never publish a suffix -----------------

_PSL = PublicSuffixList()
# ICANN and private suffixes, wildcard (`*.ck`, `*.kobe.jp`) and exception (`!www.ck`,
# `!city.kobe.jp`) rules, and ordinary parents of suffixes (`amazonaws.com`).
_SUFFIXES = """com uk co.uk act.edu.au edu.au s3.amazonaws.com github.io ck www.ck kobe.jp
city.kobe.jp blogspot.com xn--p1ai jp appspot.com s3.dualstack.us-east-1.amazonaws.com
compute.amazonaws.com amazonaws.com""".split()
_LABELS = "www evil a bucket x-y city s3 co amazonaws com".split()


@st.composite
def _entries(draw: st.DrawFn) -> str:
    labels = draw(st.lists(st.sampled_from(_LABELS), max_size=3))
    name = ".".join([*labels, draw(st.sampled_from(_SUFFIXES))])
    if draw(st.booleans()):
        name = "*." + name
    shape = draw(st.sampled_from(["name", "bare_url", "path_url", "port_url"]))
    if shape == "bare_url":
        return f"http://{name}/"
    if shape == "path_url":
        return f"http://{name}/p?q=1"
    if shape == "port_url":
        return f"https://{name}:8443/"
    return name


def _covers_suffix(name: str) -> bool:
    return bool(_PSL.is_public(name.removeprefix("*.")))


@settings(max_examples=150, deadline=None)
@given(st.lists(_entries(), min_size=1, max_size=12), st.booleans(), st.booleans())
def test_no_published_name_is_a_public_suffix(
    values: list[str], url_hosts: bool, wildcard_parent: bool
) -> None:
    result = run(values, augment={"url_hosts": url_hosts, "wildcard_parent": wildcard_parent})
    published = feeds(result)
    for name in published["fqdn"]:
        assert not _covers_suffix(name), name
    for url in published["url"]:
        host = url_host_of(url)
        assert isinstance(host, str)
        bare = url.find("/") == len(url) - 1
        if bare or host.startswith("*."):
            assert not _covers_suffix(host), url
        assert "." in host, url
