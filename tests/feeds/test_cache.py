"""The feed cache's pointer lifetime: fresh, expired, and the one-poll refresh."""

from __future__ import annotations

from typing import Any

import pytest

from edl_api.feeds import cache as cache_module
from edl_api.feeds.cache import REFRESH_GRACE_SECONDS, FeedCache, FeedPointer, UnionMembers


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: Any) -> Clock:
    fake = Clock()
    monkeypatch.setattr(cache_module.time, "monotonic", fake)
    return fake


def test_an_expired_pointer_sends_one_poll_to_the_database_and_the_rest_keep_it(
    clock: Clock,
) -> None:
    cache = FeedCache(max_bytes=1 << 20, ttl_seconds=2)
    old = FeedPointer(1, 1, True, "a" * 64, 10, 5)
    cache.put_pointer(old, "ipv4")
    assert cache.pointer(1, "ipv4") is old
    assert cache.pointer(1, "ipv4", poll=True) is old

    clock.now += 2.5  # expired
    assert cache.pointer(1, "ipv4") is None  # the route always re-reads an expired pointer
    assert cache.pointer(1, "ipv4", poll=True) is None  # the first poll goes to the route
    assert cache.pointer(1, "ipv4", poll=True) is old  # the others keep the old feed
    clock.now += REFRESH_GRACE_SECONDS / 2
    assert cache.pointer(1, "ipv4", poll=True) is old

    clock.now += REFRESH_GRACE_SECONDS  # the refresh never came (say the database failed)
    assert cache.pointer(1, "ipv4", poll=True) is None  # so one more poll tries
    assert cache.pointer(1, "ipv4", poll=True) is old

    new = FeedPointer(1, 1, True, "b" * 64, 11, 6)
    cache.put_pointer(new, "ipv4")  # the route's re-read
    assert cache.pointer(1, "ipv4", poll=True) is new
    assert cache.pointer(1, "ipv4") is new


def test_a_dropped_or_invalidated_pointer_is_never_served_stale(clock: Clock) -> None:
    cache = FeedCache(max_bytes=1 << 20, ttl_seconds=2)
    cache.put_pointer(FeedPointer(1, 1, True, "a" * 64, 10, 5), "ipv4")
    cache.put_pointer(FeedPointer(2, 1, True, "c" * 64, 12, 7), "ipv4")
    cache.drop_pointer(1, "ipv4")  # the route found no such pipeline
    assert cache.pointer(1, "ipv4", poll=True) is None
    cache.invalidate([2])  # this process published
    assert cache.pointer(2, "ipv4", poll=True) is None
    clock.now += 10
    assert cache.pointer(2, "ipv4", poll=True) is None


def test_global_feed_members_follow_the_same_rule(clock: Clock) -> None:
    cache = FeedCache(max_bytes=1 << 20, ttl_seconds=2)
    members = UnionMembers(())
    cache.put_union(("scope", None, "ipv4"), members)
    clock.now += 3
    assert cache.union(("scope", None, "ipv4")) is None
    assert cache.union(("scope", None, "ipv4"), poll=True) is None
    assert cache.union(("scope", None, "ipv4"), poll=True) is members


@pytest.mark.parametrize(
    ("header", "gzip"),
    [("gzip", True), ("gzip, deflate, br", True), ("br;q=1, gzip;q=0.5", True), ("*", True),
     ("GZIP", True), ("gzip;q=0", False), ("identity", False), ("br, deflate", False),
     ("gzip;q=x", False), ("", False)],
)
def test_accept_encoding_is_read_the_same_the_first_and_the_next_time(
    header: str, gzip: bool
) -> None:
    from edl_api.feeds.http import accepts_gzip

    assert accepts_gzip(header) is gzip
    assert accepts_gzip(header) is gzip  # the remembered answer
