"""The array IPv4 host table (engine.hosts4) and ingest's plain-name fast path give what
one dict written entry by entry and the full classifier give: the same keys, masks,
counts and (for the dict) iteration order, so feeds and explain records are unchanged."""

from __future__ import annotations

import asyncio

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edl_api.engine.augment import augment
from edl_api.engine.build import ArrayEntries
from edl_api.engine.config import AugmentConfig, load_config
from edl_api.engine.entries import FeedEntry
from edl_api.engine.hosts4 import Hosts4
from edl_api.engine.indicators import FQDN, IPV6, URL, classify_parts, plain_url, split_url
from edl_api.engine.pipeline import EngineSettings, run_pipeline
from edl_api.engine.store import IndicatorStore, IngestStats, ingest

ADDRESSES = st.integers(0, 40)  # few values: repeats across writes are the point
WRITES = st.lists(
    st.one_of(
        st.tuples(st.just("batch"), st.lists(ADDRESSES, max_size=8), st.integers(0, 5)),
        st.tuples(st.just("one"), st.lists(ADDRESSES, max_size=4), st.integers(0, 5)),
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(WRITES)
def test_hosts_table_is_one_dict_written_in_order(writes: list[tuple[str, list[int], int]]) -> None:
    table, reference = Hosts4(), {}
    for how, values, source in writes:
        bit = 1 << source
        if how == "batch":
            table.add(np.array(values, dtype=np.int64), bit)
            # What the bulk path did before: the distinct addresses, ascending.
            for value in sorted(set(values)):
                reference[value] = reference.get(value, 0) | bit
        else:
            sink = table.sink()
            for value in values:
                sink[value] = sink.get(value, 0) | bit
                reference[value] = reference.get(value, 0) | bit
    assert len(table) == len(reference)
    arrays = table.arrays()
    assert arrays is not None
    assert arrays[0].tolist() == sorted(reference)
    assert arrays[1].tolist() == [reference[k] for k in sorted(reference)]
    known = table.known(np.arange(0, 45, dtype=np.int64))
    assert known.tolist() == [v in reference for v in range(45)]
    assert list(table.as_dict().items()) == list(reference.items())


def test_wide_masks_stay_exact() -> None:
    """A source index past 62 needs a mask beyond int64: the table falls back to the dict."""
    table = Hosts4()
    table.add(np.array([5, 3, 5], dtype=np.int64), 1 << 70)
    table.add(np.array([3], dtype=np.int64), 1)
    assert table.arrays() is None
    assert table.as_dict() == {3: (1 << 70) | 1, 5: 1 << 70}


def test_url_hosts_count_only_new_addresses() -> None:
    """augment's `added` counts URL-host addresses the bulk arrays did not hold yet."""
    store = IndicatorStore()
    store.hosts4.add(np.array([0x01020304], dtype=np.int64), 1)
    store.url.update({"1.2.3.4/a": 2, "5.6.7.8/b": 2, "5.6.7.8/c": 4})
    added = augment(store, AugmentConfig(url_hosts=True))
    assert added["ipv4"] == 1
    assert store.ipv4 == {0x01020304: 3, 0x05060708: 6}


NAME_CHARS = st.sampled_from("abcxyz019-._*:/AZé")


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(NAME_CHARS, min_size=1, max_size=70), max_size=6))
def test_plain_name_fast_path_is_the_classifier(tokens: list[str]) -> None:
    store, stats = IndicatorStore(), IngestStats()
    ingest(tokens, store, 1, None, stats)
    names: dict[str, int] = {}
    invalid = 0
    for token in tokens:
        parts = classify_parts(token)
        if isinstance(parts, str):
            invalid += 1
            continue
        for kind, key in parts:
            if kind == FQDN:
                assert isinstance(key, str)
                names[key] = 1
    assert list(store.fqdn.items()) == list(names.items())
    assert stats.invalid.total() == invalid
    assert stats.indicators["fqdn"] == sum(
        1 for t in tokens if not isinstance(p := classify_parts(t), str)
        for kind, _ in p if kind == FQDN
    )


URL_SCHEMES = st.sampled_from(["http", "https", "HTTP", "ftp", "hxxp"])
URL_HOSTS = st.text(st.sampled_from("abz09-_.é*A"), min_size=1, max_size=70)
URL_PORTS = st.one_of(
    st.none(), st.sampled_from(["0", "80", "443", "21", "8080", "080", "65535", "65536", "99999"])
)
URL_PATHS = st.text(st.sampled_from("/a?=#%. é\t\u2028|x"), max_size=12)


@settings(max_examples=1500, deadline=None)
@given(URL_SCHEMES, URL_HOSTS, URL_PORTS, URL_PATHS)
def test_plain_url_fast_path_is_split_url(
    scheme: str, host: str, port: str | None, path: str
) -> None:
    token = f"{scheme}://{host}{'' if port is None else ':' + port}{path}"
    fast = plain_url(token)
    if fast is not None:
        parsed = split_url(token)
        assert parsed is not None
        assert fast == (parsed[0], parsed[2])
        assert parsed[1] == FQDN
        assert classify_parts(token) == [(URL, fast[0])]


def test_plain_url_fast_path_takes_the_common_shapes() -> None:
    """The bench's URLs (and most feeds') take it, so it is not dead code."""
    assert plain_url("https://login1f.pay.d3a.co.uk:8443/ab/a.php?id=7") == (
        "login1f.pay.d3a.co.uk:8443/ab/a.php?id=7", "login1f.pay.d3a.co.uk"
    )
    assert plain_url("https://evil.example:443/x") == ("evil.example/x", "evil.example")
    assert plain_url("http://evil.example:80/") == ("evil.example/", "evil.example")
    for other in ("https://evil.example:80/", "http://Evil.example/", "http://e.example/#f",
                  "http://u@evil.example/", "http://evil.example", "http://1.2.3.4/"):
        assert plain_url(other) is None


V6_CHARS = st.sampled_from("0123456789abcdefABCDEF:.%/[]-g ")


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.text(V6_CHARS, min_size=1, max_size=45), max_size=6))
def test_ipv6_and_url_fast_paths_are_the_classifier(tokens: list[str]) -> None:
    """ingest's IPv6 and URL shortcuts: the same keys, counts and url hosts as classifying."""
    tokens = [*tokens, "2a00:1450::1", "2A00:1450::1", "https://a.example:8443/p", "::ffff:1.2.3.4"]
    store, stats = IndicatorStore(), IngestStats()
    ingest(tokens, store, 1, None, stats)
    ipv6: dict[int, int] = {}
    urls: dict[str, int] = {}
    for token in tokens:
        parts = classify_parts(token)
        if isinstance(parts, str):
            continue
        for kind, key in parts:
            if kind == IPV6:
                assert isinstance(key, int)
                ipv6[key] = 1
            elif kind == URL:
                assert isinstance(key, str)
                urls[key] = 1
    assert list(store.ipv6.items()) == list(ipv6.items())
    assert list(store.url.items()) == list(urls.items())
    assert store.url_hosts == {"a.example:8443/p": "a.example"}
    assert stats.indicators["ipv6"] == sum(
        1 for t in tokens if not isinstance(p := classify_parts(t), str)
        for kind, _ in p if kind == IPV6
    )


MIXED = """
sources:
  - {name: a, values: ["1.2.3.4", "1.2.3.6", "11.9.0.0/16", "11.9.1.1", "2a01::1", "8.8.8.8"]}
  - {name: b, values: ["8.8.8.8", "2a00:1450::/48"], confidence: 90}
pipeline:
  outputs: [ipv4, ipv6, cidr, ip]
"""


def _fields(entries: list[FeedEntry]) -> list[tuple[str, str, list[str], list[str], int]]:
    return [(e.value, e.indicator_type, e.sources, e.tags, e.confidence) for e in entries]


def test_ip_feed_shares_the_host_entries() -> None:
    """The `ip` feed lists what it did, and its hosts are the ipv4 feed's entry objects
    (each made once)."""
    result = asyncio.run(run_pipeline(load_config(MIXED), EngineSettings()))
    ip, ipv4 = result.feeds["ip"], result.feeds["ipv4"]
    assert isinstance(ip, ArrayEntries)
    assert ip.intact  # IPv6 joined its texts: nothing made yet
    assert isinstance(ipv4, ArrayEntries)
    # Before any object is made, the hosts' texts are the ipv4 feed's strings.
    host_texts = {id(text) for text in ipv4.texts}
    assert [id(t) in host_texts for t in ip.texts] == [True, True, True, False, False, False]
    assert _fields(ip) == [
        ("1.2.3.4", "ipv4", ["a"], [], 50), ("1.2.3.6", "ipv4", ["a"], [], 50),
        ("8.8.8.8", "ipv4", ["a", "b"], [], 90), ("11.9.0.0/16", "cidr", ["a"], [], 50),
        ("2a00:1450::/48", "cidr", ["b"], [], 90), ("2a01::1", "ipv6", ["a"], [], 50),
    ]
    hosts = {e.value: e for e in ipv4}
    assert sorted(hosts) == ["1.2.3.4", "1.2.3.6", "8.8.8.8"]  # 11.9.1.1 is in the /16
    assert all(e is hosts[e.value] for e in ip if e.value in hosts)


MOVED = MIXED.replace("outputs: [ipv4, ipv6, cidr, ip]", "outputs: [ipv4, ip]").replace(
    ', "2a01::1"', "").replace(', "2a00:1450::/48"', "")


def test_a_moved_host_feed_is_not_reused() -> None:
    result = asyncio.run(run_pipeline(load_config(MOVED), EngineSettings()))
    ip, ipv4 = result.feeds["ip"], result.feeds["ipv4"]
    assert isinstance(ip, ArrayEntries)
    assert ip.intact  # IPv4 only: nothing made yet
    ipv4.reverse()  # its indexes no longer say where a host is
    assert [e.value for e in ip][:3] == ["1.2.3.4", "1.2.3.6", "8.8.8.8"]
    assert not any(e is f for e in ip for f in ipv4)
