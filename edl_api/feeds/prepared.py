"""A run's feed files as publishing needs them: what going live needs first (bytes, hash,
count), and what can wait until the feeds are live (lines, diffs).

`feeds.publish` calls `prepare_feeds` inside the transaction that repoints the feeds and
`finish_feeds` once it committed (or before, when nothing is published); both run in a
worker thread.
"""

from __future__ import annotations

from pathlib import Path

from edl_api.feeds import content as feed_content
from edl_api.feeds.indexing import PreparedFeed


def prepare_feeds(
    out_dir: Path, types: list[str], retained_by_type: dict[str, set[str]]
) -> dict[str, PreparedFeed]:
    """CPU work, off the event loop: read, merge retained entries, hash. A feed file the
    engine wrote in its canonical form (one distinct line per entry, each ending in a
    newline) is served as it is: its lines are split after the feeds went live
    (`finish_feeds`), as is every diff (the gzip copies are made afterwards, in
    parallel: zlib runs without the GIL)."""
    prepared: dict[str, PreparedFeed] = {}
    for kind in types:
        raw = (out_dir / f"{kind}.txt").read_bytes()
        retained = retained_by_type.get(kind, set())
        if not retained and feed_content.is_canonical(raw):
            prepared[kind] = PreparedFeed(
                kind, raw, b"", feed_content.sha256_hex(raw), raw.count(b"\n"), [], set(), {},
                lines_pending=True,
            )
            continue
        lines = feed_content.split_lines(raw)
        if retained:
            line_set = feed_content.line_set(lines)
            retained = retained - line_set
        if retained:
            lines = feed_content.sorted_lines([*lines, *retained])
        body = feed_content.join_lines(lines)
        prepared[kind] = PreparedFeed(
            kind, body, b"", feed_content.sha256_hex(body), len(lines), lines, retained, {},
        )
    return prepared


def finish_feeds(prepared: dict[str, PreparedFeed], old_contents: dict[str, bytes | None]
                  ) -> None:
    """CPU work, off the event loop: the lines `prepare_feeds` left in the feed bytes, and each
    feed's diff with the one it replaces (`old_contents`: its bytes, None when it had the
    same sha256, absent when there was none)."""
    for kind, feed in prepared.items():
        if feed.lines_pending:
            feed.lines = feed_content.split_lines(feed.content)
            feed.lines_pending = False
        if kind in old_contents and old_contents[kind] is None:  # the same bytes again
            feed.diff = feed_content.diff_summary(None, [])
            feed.diff["previous"] = feed.count
            continue
        old = old_contents.get(kind)
        # A first publish needs no set of its lines (the engine writes them distinct):
        # building one costs ~50 ms of single C calls (resizes) at 1M (see CHUNK_BYTES).
        new: set[str] | list[str] = feed.lines
        if old is not None or feed.retained:
            new = feed_content.line_set(feed.lines)
        old_set = (
            feed_content.line_set(feed_content.split_lines(old)) if old is not None else None
        )
        feed.diff = feed_content.diff_summary(old_set, new)
