"""Serving hosted feeds: resolve what is served and build its body (once).

Everything here fills the per-process `FeedCache`; `fastpath.py` answers from that
cache alone, and falls back to the routes (this module) whenever anything is missing.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Hashable, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api.auth.principal import Principal
from edl_api.engine.aggregate import aggregate_values
from edl_api.engine.config import OUTPUT_TYPES
from edl_api.engine.document import ConfigError, load_config_document
from edl_api.engine.entries import BASE_TYPES, FEED_TYPES, FeedEntry
from edl_api.engine.indicators import ip_kind
from edl_api.errors import NotFound
from edl_api.feeds import content as feed_content
from edl_api.feeds.cache import FeedBody, FeedCache, FeedPointer, UnionMembers, prepare
from edl_api.feeds.http import (
    NOT_READY_RETRY_SECONDS,
    FeedBytesGone,
    FeedNotReady,
    FeedRequest,
    not_served,
)
from edl_api.feeds.render import (
    DEFAULT_OPTIONS,
    FEED_FORMATS,
    RenderOptions,
    clean_plain,
    render,
)
from edl_api.models import Artifact, HostedFeed, Indicator, Pipeline, ProfileConfig

EMPTY_SHA = feed_content.sha256_hex(b"")
_EMPTY_GZIP = feed_content.gzip_bytes(b"")


def _pointer_query(kind: str) -> Any:
    return select(
        col(Pipeline.id), col(Pipeline.profile_id), col(Pipeline.is_active),
        col(Pipeline.deleted_at), col(HostedFeed.sha256), col(HostedFeed.artifact_id),
        col(HostedFeed.run_id), col(HostedFeed.count), col(HostedFeed.updated_at),
    ).select_from(Pipeline).outerjoin(
        HostedFeed,
        and_(col(HostedFeed.pipeline_id) == col(Pipeline.id),
             col(HostedFeed.indicator_type) == kind),
    )


def _pointer(row: Any) -> FeedPointer:
    pid, profile_id, active, deleted_at, sha, artifact_id, run_id, count, updated_at = row
    return FeedPointer(
        pid, profile_id, bool(active) and deleted_at is None, sha, artifact_id, run_id,
        count or 0, updated_at,
    )


async def pipeline_pointer(
    session: AsyncSession, cache: FeedCache, pipeline_id: int, kind: str
) -> FeedPointer | None:
    pointer = cache.pointer(pipeline_id, kind)
    if pointer is not None:
        return pointer
    row = (
        await session.execute(_pointer_query(kind).where(col(Pipeline.id) == pipeline_id))
    ).first()
    if row is None:
        cache.drop_pointer(pipeline_id, kind)  # no stale copy left for the fast path
        return None
    pointer = _pointer(row)
    if pointer.sha256 is None and pointer.live:
        pointer = replace(pointer, outputs=await _config_outputs(session, pipeline_id))
    cache.put_pointer(pointer, kind)
    return pointer


async def _config_outputs(session: AsyncSession, pipeline_id: int) -> tuple[str, ...]:
    """The outputs of the pipeline's bound config as it is now (a run report's may be older:
    an output just added is "not ready", not "not published"). Configs are validated when
    saved, so the raw document is read; only on a pointer refresh of an unpublished type."""
    text = (await session.execute(
        select(col(ProfileConfig.yaml)).join(
            Pipeline, col(Pipeline.profile_config_id) == col(ProfileConfig.id)
        ).where(col(Pipeline.id) == pipeline_id)
    )).scalar_one_or_none()
    try:
        document = await asyncio.to_thread(load_config_document, text or "")
        outputs = (document.get("pipeline") or {}).get("outputs") or OUTPUT_TYPES
        return tuple(str(output) for output in outputs)
    except (ConfigError, AttributeError, TypeError):
        return FEED_TYPES  # unreadable: "not ready" rather than a wrong 404


def union_key(principal: Principal, profile_id: int | None, kind: str) -> Hashable:
    """The caller's scope, not its identity: an admin linked or unlinked since gets a new
    principal whose key misses the old members (`FeedCache.drop_unions` clears them too)."""
    return (principal.profile_ids, principal.pipeline_ids, profile_id, kind)


async def union_members(
    session: AsyncSession, cache: FeedCache, principal: Principal, profile_id: int | None,
    kind: str,
) -> UnionMembers:
    """The caller's active pipelines that serve a feed of this type."""
    if profile_id is not None:
        principal.require_profile(profile_id)
    key = union_key(principal, profile_id, kind)
    members = cache.union(key)
    if members is not None:
        return members
    query = _pointer_query(kind).where(
        principal.scope_filter(col(Pipeline.profile_id), col(Pipeline.id)),
        col(Pipeline.deleted_at).is_(None), col(Pipeline.is_active).is_(True),
        col(HostedFeed.sha256).is_not(None),
    )
    if profile_id is not None:
        query = query.where(col(Pipeline.profile_id) == profile_id)
    rows = (await session.execute(query.order_by(col(Pipeline.id)))).all()
    members = UnionMembers(tuple(_pointer(row) for row in rows))
    cache.put_union(key, members)
    return members


# --- bodies ---------------------------------------------------------------------------


def pipeline_body_key(
    pointer: FeedPointer, kind: str, fmt: str, options: RenderOptions = RenderOptions()
) -> Hashable:
    # The option's bool, not the dataclass: hashing and comparing a dataclass on every
    # poll cost the fast path ~1 µs.
    return ("pipeline", pointer.pipeline_id, kind, fmt, options.strip_ports, pointer.sha256,
            pointer.run_id, pointer.updated_at)


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
    options: RenderOptions,
) -> FeedBody:
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


def _request_options(feed: FeedRequest) -> RenderOptions:
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
    if fmt == "plain":
        body = await asyncio.to_thread(_plain_body, plain, count, sha, gzipped)
    else:
        lines = feed_content.split_lines(plain)
        provenance = await _provenance(session, [pointer], kind, fmt)
        body = await asyncio.to_thread(_rendered_body, kind, fmt, lines, provenance, options)
    prepare(body, run_ids=[pointer.run_id] if pointer.run_id else [],
            last_modified=pointer.updated_at)
    cache.put_body(key, body)
    return body


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
    if fmt == "plain":
        body = await asyncio.to_thread(_plain_body, feed_content.join_lines(lines), len(lines))
    else:
        provenance = await _provenance(session, members.pointers, kind, fmt)
        body = await asyncio.to_thread(
            _rendered_body, kind, fmt, lines, provenance, options
        )
    updated = [p.updated_at for p in members.pointers if p.updated_at is not None]
    prepare(body, run_ids=sorted({p.run_id for p in members.pointers if p.run_id}),
            last_modified=max(updated) if updated else None)
    cache.put_body(key, body)
    return body


def cached_body(
    cache: FeedCache, principal: Principal, feed: FeedRequest, *, poll: bool = False
) -> FeedBody | None:
    """The body this caller gets for `feed` if every step is in the cache, else None (then
    `feed_body` reads what is missing). `poll=True` is the fast path's question: an
    expired pointer is still used during its refresh grace (see `FeedCache`)."""
    if feed.pipeline_id is not None:
        pointer = cache.pointer(feed.pipeline_id, feed.kind, poll=poll)
        if (
            pointer is None or not pointer.live
            or not principal.sees_pipeline(pointer.profile_id, feed.pipeline_id)
        ):
            return None
        return cache.body(
            pipeline_body_key(pointer, feed.kind, feed.fmt, _request_options(feed))
        )
    if feed.profile_id is not None and not principal.sees_profile(feed.profile_id):
        return None
    members = cache.union(union_key(principal, feed.profile_id, feed.kind), poll=poll)
    if members is None:
        return None
    return cache.body(union_body_key(members, feed.kind, feed.fmt, _request_options(feed)))


async def feed_body(
    session: AsyncSession, cache: FeedCache, principal: Principal, feed: FeedRequest
) -> FeedBody:
    """What the route serves: from the cache, or read and built (and cached) on a miss."""
    body = cached_body(cache, principal, feed)
    if body is not None:
        return body
    if feed.pipeline_id is None:
        members = await union_members(session, cache, principal, feed.profile_id, feed.kind)
        if not members.pointers:
            raise FeedNotReady(
                f"no pipeline in scope has published a {feed.kind} feed yet; "
                f"retry after {NOT_READY_RETRY_SECONDS} s"
            )
        return await union_body(
            session, cache, members, feed.kind, feed.fmt, _request_options(feed)
        )
    pointer = await pipeline_pointer(session, cache, feed.pipeline_id, feed.kind)
    if (
        pointer is None or not pointer.live
        or not principal.sees_pipeline(pointer.profile_id, feed.pipeline_id)
    ):
        raise NotFound("not found")
    if pointer.sha256 is None:
        raise not_served(pointer, feed.kind)
    return await pipeline_body(
        session, cache, pointer, feed.kind, feed.fmt, _request_options(feed)
    )


def _md5_hex(content: bytes) -> str:
    # Not a security use: FMC compares it to decide whether to download the feed.
    return hashlib.md5(content, usedforsecurity=False).hexdigest()


async def feed_md5(body: FeedBody) -> str:
    """MD5 hex of exactly the identity bytes the feed URL serves (made once per body)."""
    if body.md5 is None:
        body.md5 = await asyncio.to_thread(_md5_hex, body.plain)
    return body.md5


# --- conditional answers ----------------------------------------------------------------
