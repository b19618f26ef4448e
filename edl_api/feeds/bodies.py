"""Feed bodies: an artifact's bytes rendered in a feed format (with provenance where the
format shows it), or several pipelines' feeds merged for the global feed. Each body is
built once per (pointer, format, options) and kept in the per-process `FeedCache`;
`serving.py` resolves which pointer is served and calls these."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api.engine.aggregate import aggregate_values
from edl_api.engine.entries import BASE_TYPES, FeedEntry
from edl_api.engine.indicators import ip_kind
from edl_api.feeds import content as feed_content
from edl_api.feeds.cache import (
    FeedBody,
    FeedCache,
    FeedPointer,
    UnionMembers,
    prepare,
)
from edl_api.feeds.http import (
    FeedBytesGone,
    FeedRequest,
)
from edl_api.feeds.render import (
    DEFAULT_OPTIONS,
    FEED_FORMATS,
    RenderOptions,
    clean_plain,
    render,
)
from edl_api.models import Artifact, Indicator, PipelineRun
from edl_api.runs.state import RunState

EMPTY_SHA = feed_content.sha256_hex(b"")
_EMPTY_GZIP = feed_content.gzip_bytes(b"")


def pipeline_body_key(
    pointer: FeedPointer, kind: str, fmt: str, options: RenderOptions = RenderOptions()
) -> Hashable:
    # The option's bool, not the dataclass: hashing and comparing a dataclass on every
    # poll cost the fast path ~1 µs.
    return ("pipeline", pointer.pipeline_id, kind, fmt, options.strip_ports, pointer.sha256,
            pointer.run_id, pointer.updated_at)


def budget_body_key(body_key: Hashable, allowed: int, last_modified: datetime | None) -> Hashable:
    """A feed cut to `allowed` entries for a device. Its Last-Modified is the newest of the
    device's feeds of that kind (the cut moves when a sibling feed changes size)."""
    return ("budget", body_key, allowed, last_modified)


def union_body_key(
    members: UnionMembers, kind: str, fmt: str, options: RenderOptions = RenderOptions()
) -> Hashable:
    return ("union", kind, fmt, options.strip_ports,
            tuple((p.pipeline_id, p.sha256, p.run_id, p.updated_at) for p in members.pointers))


async def _artifact_content(
    session: AsyncSession, cache: FeedCache, sha: str, artifact_id: int
) -> tuple[bytes, bytes, int]:
    key = ("artifact", sha)
    cached = cache.body(key)
    if cached is not None:
        return cached.plain, cached.gzip, cached.count
    row = (
        await session.execute(
            select(col(Artifact.content), col(Artifact.content_gzip), col(Artifact.count),
                   col(Artifact.pruned_at))
            .where(col(Artifact.id) == artifact_id)
        )
    ).first()
    if row is None or row[3] is not None:
        # Deleted, or its bytes pruned, since a (stale, ≤ the pointer TTL) pointer was
        # read: never serve it empty. The firewall keeps its last list and retries.
        raise FeedBytesGone("this feed just changed; retry shortly")
    plain, gzipped, count, _ = row
    cache.put_body(key, FeedBody(sha, plain, gzipped, count))
    return plain, gzipped, count


async def _provenance(
    session: AsyncSession, pointers: Sequence[FeedPointer], kind: str, fmt: str
) -> dict[str, list[Any]]:
    """value -> [sources, tags, confidence, first_seen, last_seen], merged across pipelines
    for a global feed; empty (no query) when the format shows no provenance.

    A row present in the feed (run_id NULL) was last seen when its feed was published."""
    if not FEED_FORMATS[fmt].needs_provenance:
        return {}
    seen_at = {p.pipeline_id: p.updated_at for p in pointers}
    rows = await session.execute(
        select(col(Indicator.pipeline_id), col(Indicator.value), col(Indicator.sources),
               col(Indicator.tags), col(Indicator.confidence), col(Indicator.first_seen),
               col(Indicator.last_seen), col(Indicator.run_id))
        .where(col(Indicator.pipeline_id).in_(list(seen_at)),
               col(Indicator.indicator_type).in_(BASE_TYPES[kind]))
    )
    merged: dict[str, list[Any]] = {}
    for pipeline_id, value, sources, tags, confidence, first_seen, last_seen, run_id in rows:
        published_at = seen_at.get(pipeline_id)
        if run_id is None and published_at is not None:
            last_seen = max(last_seen, published_at)
        known = merged.get(value)
        if known is None:
            merged[value] = [set(sources), set(tags), confidence, first_seen, last_seen]
            continue
        known[0].update(sources)
        known[1].update(tags)
        known[2] = max(known[2], confidence)
        known[3] = min(known[3], first_seen)
        known[4] = max(known[4], last_seen)
    return merged


async def provenance_settled(session: AsyncSession, pointers: Sequence[FeedPointer]) -> bool:
    """Whether the indicator store has caught up with these feeds: a feed goes live before
    its run writes the store (`feeds.publish`), so a body with provenance built in between
    shows the previous run's and must not be cached for the version's lifetime."""
    run_ids = [p.run_id for p in pointers if p.run_id is not None]
    if not run_ids:
        return True
    busy = await session.execute(
        select(col(PipelineRun.id))
        .where(col(PipelineRun.id).in_(run_ids), col(PipelineRun.state) == RunState.RUNNING)
        .limit(1)
    )
    return busy.first() is None


def _feed_entries(kind: str, lines: list[str], provenance: dict[str, list[Any]]) -> list[FeedEntry]:
    entries = []
    for line in lines:
        # The combined `ip` feed holds hosts and networks: each line says which it is.
        indicator_type = (ip_kind(line) or kind) if kind == "ip" else kind
        found = provenance.get(line)
        if found is None:  # not loaded, or a network made by aggregating a global feed
            entries.append(FeedEntry(line, indicator_type, [], [], 50))
            continue
        sources, tags, confidence, first_seen, last_seen = found
        entries.append(FeedEntry(line, indicator_type, sorted(sources), sorted(tags),
                                 confidence, first_seen, last_seen))
    return entries


def _rendered_body(
    kind: str, fmt: str, lines: list[str], provenance: dict[str, list[Any]],
    options: RenderOptions, published_at: datetime | None = None,
) -> FeedBody:
    if published_at is not None:
        options = replace(options, published_at=published_at)
    rendered = render(_feed_entries(kind, lines, provenance), kind, fmt, options)
    return FeedBody(
        feed_content.sha256_hex(rendered.body), rendered.body,
        feed_content.gzip_bytes(rendered.body), rendered.count,
        media_type=FEED_FORMATS[fmt].content_type.encode(), dropped=rendered.dropped,
    )


def _plain_body(
    plain: bytes, count: int, sha: str | None = None, gzipped: bytes | None = None
) -> FeedBody:
    """The plain lines as stored (not rendered), after the same last check as `render`."""
    cleaned = clean_plain(plain)
    if cleaned is not None:
        plain, refused = cleaned
        return FeedBody(feed_content.sha256_hex(plain), plain, feed_content.gzip_bytes(plain),
                        count - refused, dropped=refused)
    return FeedBody(
        sha or feed_content.sha256_hex(plain), plain,
        feed_content.gzip_bytes(plain) if gzipped is None else gzipped, count,
    )


_STRIP_PORTS = RenderOptions(strip_ports=True)


def request_options(feed: FeedRequest) -> RenderOptions:
    return _STRIP_PORTS if feed.strip_ports else DEFAULT_OPTIONS


async def pipeline_body(
    session: AsyncSession, cache: FeedCache, pointer: FeedPointer, kind: str, fmt: str,
    options: RenderOptions = RenderOptions(),
) -> FeedBody:
    key = pipeline_body_key(pointer, kind, fmt, options)
    body = cache.body(key)
    if body is not None:
        return body
    if pointer.sha256 is None or pointer.artifact_id is None:
        plain, gzipped, count, sha = b"", _EMPTY_GZIP, 0, EMPTY_SHA
    else:
        plain, gzipped, count = await _artifact_content(
            session, cache, pointer.sha256, pointer.artifact_id
        )
        sha = pointer.sha256
    settled = True
    if fmt == "plain":
        body = await asyncio.to_thread(_plain_body, plain, count, sha, gzipped)
    else:
        settled = not FEED_FORMATS[fmt].needs_provenance or await provenance_settled(
            session, [pointer]
        )
        provenance = await _provenance(session, [pointer], kind, fmt)
        # Splitting 1M lines is CPU work too: in the worker thread, not on the loop.
        body = await asyncio.to_thread(lambda: _rendered_body(
            kind, fmt, feed_content.split_lines(plain), provenance, options, pointer.updated_at
        ))
    prepare(body, run_ids=[pointer.run_id] if pointer.run_id else [],
            last_modified=pointer.updated_at)
    if settled:
        cache.put_body(key, body)
    return body


async def served_entries(
    session: AsyncSession, cache: FeedCache, pointer: FeedPointer, kind: str
) -> tuple[list[FeedEntry], bool]:
    """The entries of the feed `pointer` serves, with their provenance, in feed order: what
    the TAXII server builds its per-version view from (the same artifact bytes and rows
    as the `stix` body); and whether that provenance is settled (`provenance_settled`)."""
    if pointer.sha256 is None or pointer.artifact_id is None:
        return [], True
    plain, _, _ = await _artifact_content(session, cache, pointer.sha256, pointer.artifact_id)
    settled = await provenance_settled(session, [pointer])
    provenance = await _provenance(session, [pointer], kind, "stix")
    entries = await asyncio.to_thread(
        lambda: _feed_entries(kind, feed_content.split_lines(plain), provenance)
    )
    return entries, settled


def _union_lines(contents: list[bytes], kind: str) -> list[str]:
    lines: set[str] = set()
    for plain in contents:
        lines.update(feed_content.split_lines(plain))
    if kind in ("cidr", "ip"):
        return aggregate_values(lines)
    return feed_content.sorted_lines(lines)


async def union_body(
    session: AsyncSession, cache: FeedCache, members: UnionMembers, kind: str, fmt: str,
    options: RenderOptions = RenderOptions(),
) -> FeedBody:
    """The de-duplicated (IP networks: aggregated) union, built once per member set."""
    key = union_body_key(members, kind, fmt, options)
    body = cache.body(key)
    if body is not None:
        return body
    contents = []
    for pointer in members.pointers:
        assert pointer.sha256 is not None
        assert pointer.artifact_id is not None
        plain, _, _ = await _artifact_content(session, cache, pointer.sha256, pointer.artifact_id)
        contents.append(plain)
    lines = await asyncio.to_thread(_union_lines, contents, kind)
    settled = True
    if fmt == "plain":
        body = await asyncio.to_thread(
            lambda: _plain_body(feed_content.join_lines(lines), len(lines))
        )
    else:
        settled = not FEED_FORMATS[fmt].needs_provenance or await provenance_settled(
            session, members.pointers
        )
        provenance = await _provenance(session, members.pointers, kind, fmt)
        body = await asyncio.to_thread(
            _rendered_body, kind, fmt, lines, provenance, options,
            max((p.updated_at for p in members.pointers if p.updated_at is not None),
                default=None),
        )
    updated = [p.updated_at for p in members.pointers if p.updated_at is not None]
    prepare(body, run_ids=sorted({p.run_id for p in members.pointers if p.run_id}),
            last_modified=max(updated) if updated else None)
    if settled:
        cache.put_body(key, body)
    return body


# --- a feed cut to a device's capacity budget -------------------------------------------

DEFAULT_CONFIDENCE = 50  # an entry without an indicator row, as in `_feed_entries`


def top_lines(lines: list[str], confidence: Callable[[str], int], allowed: int) -> list[str]:
    """The `allowed` highest-confidence lines in feed order, ties keeping the earlier:
    `engine.build.cap_entries`' rule. Found by a confidence threshold in two passes rather
    than a sort: a sort of a million keys is one C call holding the GIL (the event loop's
    too) for ~100 ms, these Python loops let it switch."""
    if len(lines) <= allowed:
        return lines
    if allowed <= 0:
        return []
    scores: list[int] = []
    counts: dict[int, int] = {}
    for line in lines:
        score = confidence(line)
        scores.append(score)
        counts[score] = counts.get(score, 0) + 1
    above = 0  # lines kept whole above the threshold
    threshold = 0
    for score in sorted(counts, reverse=True):
        if above + counts[score] >= allowed:
            threshold = score
            break
        above += counts[score]
    ties = allowed - above  # the first lines at the threshold, in feed order
    kept: list[str] = []
    for line, score in zip(lines, scores, strict=True):
        if score > threshold:
            kept.append(line)
        elif score == threshold and ties > 0:
            kept.append(line)
            ties -= 1
    return kept


async def _confidences(session: AsyncSession, pointer: FeedPointer, kind: str) -> Sequence[Any]:
    """(value, confidence) rows of the pipeline's entries, for a format showing no
    provenance (made into a map in the worker thread, not on the loop)."""
    rows = await session.execute(
        select(col(Indicator.value), col(Indicator.confidence))
        .where(col(Indicator.pipeline_id) == pointer.pipeline_id,
               col(Indicator.indicator_type).in_(BASE_TYPES[kind]))
    )
    return rows.all()


def _cut_body(
    kind: str, fmt: str, plain: bytes, allowed: int, provenance: dict[str, list[Any]],
    confidences: Sequence[Any], options: RenderOptions, published_at: datetime | None = None,
) -> FeedBody:
    lines = feed_content.split_lines(plain)
    if provenance:
        def confidence(line: str) -> int:
            found = provenance.get(line)
            return DEFAULT_CONFIDENCE if found is None else int(found[2])
    else:
        known: dict[str, int] = dict(confidences)

        def confidence(line: str) -> int:
            return known.get(line, DEFAULT_CONFIDENCE)

    kept = top_lines(lines, confidence, allowed)
    if fmt == "plain":
        body = _plain_body(feed_content.join_lines(kept), len(kept))
    else:
        body = _rendered_body(kind, fmt, kept, provenance, options, published_at)
    body.truncated = len(lines) - len(kept)
    return body


async def budget_body(
    session: AsyncSession, cache: FeedCache, pointer: FeedPointer, kind: str, fmt: str,
    options: RenderOptions, allowed: int, last_modified: datetime | None,
) -> FeedBody:
    """The pipeline's feed cut to its `allowed` highest-confidence entries (feed order
    kept), rendered in `fmt`, with its own ETag; built once per (version, allowance)."""
    key = budget_body_key(pipeline_body_key(pointer, kind, fmt, options), allowed, last_modified)
    body = cache.body(key)
    if body is not None:
        return body
    plain = b""
    if pointer.sha256 is not None and pointer.artifact_id is not None:
        plain, _, _ = await _artifact_content(session, cache, pointer.sha256, pointer.artifact_id)
    # The cut ranks by confidence from the indicator store, whatever the format shows.
    settled = await provenance_settled(session, [pointer])
    provenance = await _provenance(session, [pointer], kind, fmt)  # {} unless shown
    confidences = (
        () if FEED_FORMATS[fmt].needs_provenance else await _confidences(session, pointer, kind)
    )
    body = await asyncio.to_thread(
        _cut_body, kind, fmt, plain, allowed, provenance, confidences, options,
        pointer.updated_at,
    )
    prepare(body, run_ids=[pointer.run_id] if pointer.run_id else [],
            last_modified=last_modified)
    if settled:
        cache.put_body(key, body)
    return body
