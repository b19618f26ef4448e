"""Capacity budgets as pure functions: how a kind's limit is shared (`allocate`) and which
entries a cut feed keeps (`top_lines`, the engine's `cap_entries` rule)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edl_api.engine.build import cap_entries
from edl_api.engine.entries import FeedEntry
from edl_api.feeds.bodies import top_lines
from edl_api.fleet.budget import allocate


def test_no_limit_serves_every_feed_whole() -> None:
    assert allocate(None, [("a", 0, 10), ("b", 5, 7)]) == {"a": 10, "b": 7}


def test_feeds_that_fit_are_whole() -> None:
    assert allocate(100, [("a", 0, 60), ("b", 0, 40)]) == {"a": 60, "b": 40}


def test_higher_priority_is_served_whole_first() -> None:
    # 100 entries: the priority-10 feed (80) whole, the lower one gets the remaining 20.
    assert allocate(100, [("low", 0, 500), ("high", 10, 80)]) == {"high": 80, "low": 20}


def test_a_level_that_does_not_fit_shares_evenly_and_lower_levels_get_nothing() -> None:
    allowed = allocate(90, [("a", 5, 100), ("b", 5, 100), ("c", 5, 100), ("z", 1, 10)])
    assert allowed == {"a": 30, "b": 30, "c": 30, "z": 0}


def test_water_filling_gives_a_small_feeds_leftover_to_the_others() -> None:
    # Even share 50 each; "small" needs 10, so the other two split the remaining 90.
    allowed = allocate(100, [("small", 0, 10), ("x", 0, 1000), ("y", 0, 1000)])
    assert allowed == {"small": 10, "x": 45, "y": 45}


def test_uneven_remainders_are_not_lost() -> None:
    allowed = allocate(10, [("a", 0, 100), ("b", 0, 100), ("c", 0, 100)])
    assert sum(allowed.values()) == 10
    assert sorted(allowed.values()) == [3, 3, 4]


def test_zero_limit_serves_nothing() -> None:
    assert allocate(0, [("a", 1, 5), ("b", 0, 3)]) == {"a": 0, "b": 0}


FEEDS = st.lists(
    st.tuples(st.integers(-3, 3), st.integers(0, 10_000)), min_size=0, max_size=8
)


@settings(max_examples=300, deadline=None)
@given(limit=st.one_of(st.none(), st.integers(0, 30_000)), feeds=FEEDS)
def test_allocation_never_exceeds_the_limit_or_a_feed(
    limit: int | None, feeds: list[tuple[int, int]]
) -> None:
    keyed = [(index, priority, count) for index, (priority, count) in enumerate(feeds)]
    allowed = allocate(limit, keyed)
    assert set(allowed) == {key for key, _, _ in keyed}
    for key, _, count in keyed:
        assert 0 <= allowed[key] <= count
    total = sum(count for _, _, count in keyed)
    if limit is None or total <= limit:
        assert allowed == {key: count for key, _, count in keyed}
    else:  # nothing left unused while a feed still wants more
        assert sum(allowed.values()) == limit
        # A higher-priority feed is cut only when every lower one gets nothing.
        for key, priority, count in keyed:
            if allowed[key] < count:
                assert all(allowed[k] == 0 for k, p, _ in keyed if p < priority)


@settings(max_examples=300, deadline=None)
@given(
    scores=st.lists(st.integers(0, 5), max_size=60),
    allowed=st.integers(-1, 70),
)
def test_top_lines_is_the_engines_cap_rule(scores: list[int], allowed: int) -> None:
    lines = [f"198.51.100.{index}" for index in range(len(scores))]
    confidence = dict(zip(lines, scores, strict=True))
    kept = top_lines(lines, confidence.__getitem__, allowed)
    entries = [FeedEntry(line, "ipv4", [], [], confidence[line]) for line in lines]
    expected, _ = cap_entries(entries, max(allowed, 0))
    assert kept == [entry.value for entry in expected]


def test_top_lines_keeps_feed_order_and_earlier_ties() -> None:
    lines = ["a", "b", "c", "d", "e"]
    scores = {"a": 10, "b": 90, "c": 50, "d": 90, "e": 50}
    assert top_lines(lines, scores.__getitem__, 3) == ["b", "c", "d"]
