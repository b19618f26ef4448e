"""Serving hosted feeds: resolve what is served, build (once) and answer conditionally.

Everything here fills the per-process `FeedCache`; `fastpath.py` answers from that
cache alone, and falls back to the routes (this module) whenever anything is missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Mapping, Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api.auth.principal import Principal
from edl_api.engine.pipeline import FeedEntry
from edl_api.errors import AppError, NotFound, Unprocessable
from edl_api.feeds import content as feed_content
from edl_api.feeds.cache import FeedBody, FeedCache, FeedPointer, UnionMembers, prepare
from edl_api.feeds.render import CONTENT_TYPES, FORMATS, render
from edl_api.models import Artifact, HostedFeed, Indicator, Pipeline

EMPTY_SHA = feed_content.sha256_hex(b"")
_EMPTY_GZIP = feed_content.gzip_bytes(b"")


class UnknownFeedType(NotFound):
    code = "unknown_feed_type"


class UnknownFormat(Unprocessable):
    code = "unknown_format"


class FeedBytesGone(AppError):
    code = "feed_changed"
    status_code = 503
    headers = {"Retry-After": "2"}  # noqa: RUF012 - read-only


def check_type_and_format(indicator_type: str, fmt: str) -> None:
    if indicator_type not in feed_content.FEED_TYPES:
        raise UnknownFeedType(
            f"no such feed type; one of {', '.join(feed_content.FEED_TYPES)}"
        )
    if fmt not in FORMATS:
        raise UnknownFormat(f"unknown format; one of {', '.join(FORMATS)}")


# --- pointers -------------------------------------------------------------------------


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
    cache.put_pointer(pointer, kind)
    return pointer


def union_key(principal: Principal, profile_id: int | None, kind: str) -> Hashable:
    return (principal.scope_key, profile_id, kind)


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
        col(Pipeline.deleted_at).is_(None), col(Pipeline.is_active).is_(True),
        col(HostedFeed.sha256).is_not(None),
    )
    if profile_id is not None:
        query = query.where(col(Pipeline.profile_id) == profile_id)
    elif principal.profile_ids is not None:
        query = query.where(col(Pipeline.profile_id).in_(principal.profile_ids))
    if principal.pipeline_ids is not None:
        query = query.where(col(Pipeline.id).in_(principal.pipeline_ids))
    rows = (await session.execute(query.order_by(col(Pipeline.id)))).all()
    members = UnionMembers(tuple(_pointer(row) for row in rows))
    cache.put_union(key, members)
    return members


# --- bodies ---------------------------------------------------------------------------


def pipeline_body_key(pointer: FeedPointer, kind: str, fmt: str) -> Hashable:
    return ("pipeline", pointer.pipeline_id, kind, fmt, pointer.sha256, pointer.run_id,
            pointer.updated_at)


def union_body_key(members: UnionMembers, kind: str, fmt: str) -> Hashable:
    return ("union", kind, fmt,
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


async def _entries(
    session: AsyncSession, pointers: Sequence[FeedPointer], kind: str, lines: list[str]
) -> list[FeedEntry]:
    """Each line with its provenance (merged across pipelines for a global feed).

    A row present in the feed (run_id NULL) was last seen when its feed was published."""
    seen_at = {p.pipeline_id: p.updated_at for p in pointers}
    rows = await session.execute(
        select(col(Indicator.pipeline_id), col(Indicator.value), col(Indicator.sources),
               col(Indicator.tags), col(Indicator.confidence), col(Indicator.first_seen),
               col(Indicator.last_seen), col(Indicator.run_id))
        .where(col(Indicator.pipeline_id).in_(list(seen_at)),
               col(Indicator.indicator_type).in_(feed_content.BASE_TYPES[kind]))
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
    entries = []
    for line in lines:
        found = merged.get(line)
        if found is None:  # e.g. a network made by aggregating a global feed
            entries.append(FeedEntry(line, _entry_type(kind, line), [], [], 50))
            continue
        sources, tags, confidence, first_seen, last_seen = found
        entries.append(FeedEntry(line, _entry_type(kind, line), sorted(sources), sorted(tags),
                                 confidence, first_seen, last_seen))
    return entries


def _entry_type(kind: str, value: str) -> str:
    if kind != "ip":
        return kind
    network = feed_content.ip_network(value)
    if network is None:
        return kind
    version, _, prefixlen = network
    if prefixlen == (32 if version == 4 else 128):
        return "ipv4" if version == 4 else "ipv6"
    return "cidr"


def _rendered_body(entries: list[FeedEntry], kind: str, fmt: str) -> FeedBody:
    rendered = render(entries, kind, fmt)
    return FeedBody(
        feed_content.sha256_hex(rendered.body), rendered.body,
        feed_content.gzip_bytes(rendered.body), rendered.count,
        media_type=CONTENT_TYPES[fmt].encode(),
    )


async def pipeline_body(
    session: AsyncSession, cache: FeedCache, pointer: FeedPointer, kind: str, fmt: str
) -> FeedBody:
    key = pipeline_body_key(pointer, kind, fmt)
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
        body = FeedBody(sha, plain, gzipped, count)
    else:
        lines = feed_content.split_lines(plain)
        entries = await _entries(session, [pointer], kind, lines)
        body = await asyncio.to_thread(_rendered_body, entries, kind, fmt)
    prepare(body, run_ids=[pointer.run_id] if pointer.run_id else [],
            last_modified=pointer.updated_at)
    cache.put_body(key, body)
    return body


def _union_lines(contents: list[bytes], kind: str) -> list[str]:
    lines: set[str] = set()
    for plain in contents:
        lines.update(feed_content.split_lines(plain))
    if kind in ("cidr", "ip"):
        return feed_content.aggregate_ip(lines)
    return feed_content.sorted_lines(lines)


async def union_body(
    session: AsyncSession, cache: FeedCache, members: UnionMembers, kind: str, fmt: str
) -> FeedBody:
    """The de-duplicated (IP networks: aggregated) union, built once per member set."""
    key = union_body_key(members, kind, fmt)
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
        plain = feed_content.join_lines(lines)
        body = await asyncio.to_thread(
            lambda: FeedBody(feed_content.sha256_hex(plain), plain,
                             feed_content.gzip_bytes(plain), len(lines))
        )
    else:
        entries = await _entries(session, members.pointers, kind, lines)
        body = await asyncio.to_thread(_rendered_body, entries, kind, fmt)
    updated = [p.updated_at for p in members.pointers if p.updated_at is not None]
    prepare(body, run_ids=sorted({p.run_id for p in members.pointers if p.run_id}),
            last_modified=max(updated) if updated else None)
    cache.put_body(key, body)
    return body


# --- conditional answers ----------------------------------------------------------------


_GZIP_ANSWERS: dict[str, bool] = {}


def accepts_gzip(value: str | None) -> bool:
    """Whether Accept-Encoding allows gzip; a fleet sends a handful of distinct values, so
    the answers are remembered (bounded) instead of parsed on every poll."""
    if not value:
        return False
    known = _GZIP_ANSWERS.get(value)
    if known is None:
        known = _accepts_gzip(value)
        if len(_GZIP_ANSWERS) < 256:
            _GZIP_ANSWERS[value] = known
    return known


def _accepts_gzip(value: str) -> bool:
    for part in value.split(","):
        name, _, params = part.partition(";")
        if name.strip().lower() not in ("gzip", "*"):
            continue
        quality = 1.0
        for param in params.split(";"):
            key, _, number = param.strip().partition("=")
            if key.lower() == "q":
                try:
                    quality = float(number)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            return True
    return False


def _etag_matches(header: str, etag: str) -> bool:
    for token in header.split(","):
        token = token.strip()
        if token == "*":
            return True
        token = token.removeprefix("W/").strip('"')
        if token == etag:
            return True
    return False


def _not_modified_since(header: str, last_modified: datetime | None) -> bool:
    if last_modified is None:
        return False
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return False
    if since.tzinfo is None:
        return False
    return last_modified.replace(microsecond=0) <= since


def choose(
    body: FeedBody, headers: Mapping[str, str], head: bool
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """(status, headers, payload) for this request: 304, gzip or identity; HEAD: no payload."""
    match = headers.get("if-none-match")
    if match is not None:
        if match == body.quoted_etag or _etag_matches(match, body.etag):
            return 304, body.not_modified_headers, b""
    else:
        since = headers.get("if-modified-since")
        if since is not None and _not_modified_since(since, body.last_modified):
            return 304, body.not_modified_headers, b""
    if accepts_gzip(headers.get("accept-encoding")):
        return 200, body.gzip_headers, b"" if head else body.gzip
    return 200, body.identity_headers, b"" if head else body.plain
