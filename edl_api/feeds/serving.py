"""Serving hosted feeds: resolve what is served and build its body (once).

Everything here fills the per-process `FeedCache`; `fastpath.py` answers from that
cache alone, and falls back to the routes (this module) whenever anything is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
from collections.abc import Hashable
from dataclasses import replace
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api import metrics
from edl_api.auth.principal import Principal
from edl_api.engine.config import OUTPUT_TYPES
from edl_api.engine.document import ConfigError, load_config_document
from edl_api.engine.entries import FEED_TYPES
from edl_api.errors import (
    AppError,
    DatabaseUnavailable,
    Throttled,
    database_unavailable,
)
from edl_api.feeds import budgets
from edl_api.feeds.bodies import (
    pipeline_body,
    pipeline_body_key,
    request_options,
    union_body,
    union_body_key,
)
from edl_api.feeds.cache import (
    FeedBody,
    FeedCache,
    FeedPointer,
    UnionMembers,
    stale_variant,
)
from edl_api.feeds.http import (
    NOT_READY_RETRY_SECONDS,
    FeedNotReady,
    FeedRequest,
    require_served,
)
from edl_api.fleet.spec import DeviceSpec
from edl_api.logging_setup import escape_log
from edl_api.models import HostedFeed, Pipeline, ProfileConfig

# One api.log line per 30 s while feeds are served stale, not one per poll.
_STALE_LOG = Throttled(logging.getLogger("edl_api.feeds"))


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


def cached_body(
    cache: FeedCache, principal: Principal, feed: FeedRequest, *, poll: bool = False
) -> FeedBody | None:
    """The body this caller gets for `feed` if every step is in the cache, else None (then
    `feed_body` reads what is missing). `poll=True` is the fast path's question: an
    expired pointer is still used during its refresh grace (see `FeedCache`)."""
    device = principal.device
    if device is not None and device.budgeted:
        return budgets.cached_device_body(cache, principal, device, feed, poll=poll)
    if feed.pipeline_id is not None:
        pointer = cache.pointer(feed.pipeline_id, feed.kind, poll=poll)
        if (
            pointer is None or not pointer.live
            or not principal.sees_pipeline(pointer.profile_id, feed.pipeline_id)
        ):
            return None
        body = cache.body(
            pipeline_body_key(pointer, feed.kind, feed.fmt, request_options(feed))
        )
        return stale_variant(body) if body is not None and pointer.stale else body
    if feed.profile_id is not None and not principal.sees_profile(feed.profile_id):
        return None
    members = cache.union(union_key(principal, feed.profile_id, feed.kind), poll=poll)
    if members is None:
        return None
    body = cache.body(union_body_key(members, feed.kind, feed.fmt, request_options(feed)))
    return stale_variant(body) if body is not None and members.stale else body


async def feed_body(
    session: AsyncSession, cache: FeedCache, principal: Principal, feed: FeedRequest
) -> FeedBody:
    """What the route serves: from the cache, or read and built (and cached) on a miss.

    Stale-if-error: when the database cannot be read to refresh the pointer, the last
    known pointer and body are served (`X-EDL-Stale: db-unavailable`); with none known in
    this process, 503 `database_unavailable`."""
    body = cached_body(cache, principal, feed)
    if body is not None:
        return body
    try:
        return await _read_feed_body(session, cache, principal, feed)
    except AppError:
        raise
    except Exception as exc:
        reason = database_unavailable(exc)
        if reason is None:
            raise
        with contextlib.suppress(Exception):  # the request's commit must not trip on it
            await session.rollback()
        body = await _stale_body(session, cache, principal, feed, exc)
        metrics.FEED_STALE_SERVES.inc()
        _STALE_LOG.warning(
            "database unavailable (%s): serving the last known %s feed%s (X-EDL-Stale)",
            escape_log(reason), feed.kind,
            "" if feed.pipeline_id is None else f" of pipeline {feed.pipeline_id}",
        )
        return body


async def _stale_body(
    session: AsyncSession, cache: FeedCache, principal: Principal, feed: FeedRequest,
    exc: Exception,
) -> FeedBody:
    """The last known feed, its pointer re-put (stale) for another TTL: the fast path keeps
    answering from memory and one poll per TTL tries the database again. Same scope and
    liveness rules as a fresh pointer."""
    try:
        device = principal.device
        if device is not None and device.budgeted:
            budgets.declared(device, feed)
            assert feed.pipeline_id is not None
            known = _stale_pointer(cache, feed.pipeline_id, feed.kind)
            if known is None:
                raise DatabaseUnavailable() from exc
            return stale_variant(await budgets.device_body(
                session, cache, principal, device, feed, known,
                functools.partial(_stale_pointer, cache),
            ))
        if feed.pipeline_id is None:
            key = union_key(principal, feed.profile_id, feed.kind)
            members = cache.last_union(key)
            if members is None or not members.pointers:
                raise DatabaseUnavailable() from exc
            if not members.stale:
                members = replace(members, stale=True)
            cache.put_union(key, members)
            body = await union_body(
                session, cache, members, feed.kind, feed.fmt, request_options(feed)
            )
            return stale_variant(body)
        pointer = _stale_pointer(cache, feed.pipeline_id, feed.kind)
        if pointer is None:
            raise DatabaseUnavailable() from exc
        require_served(principal, pointer, feed.pipeline_id, feed.kind)
        body = await pipeline_body(
            session, cache, pointer, feed.kind, feed.fmt, request_options(feed)
        )
        return stale_variant(body)
    except AppError:
        raise
    except Exception as error:  # the body was not cached and needs the database too
        if database_unavailable(error) is None:
            raise
        raise DatabaseUnavailable() from error


def _stale_pointer(cache: FeedCache, pipeline_id: int, kind: str) -> FeedPointer | None:
    """The last known pointer, re-put marked stale for another TTL (see `_stale_body`)."""
    pointer = cache.last_pointer(pipeline_id, kind)
    if pointer is not None:
        if not pointer.stale:
            pointer = replace(pointer, stale=True)
        cache.put_pointer(pointer, kind)
    return pointer


async def _read_device_body(
    session: AsyncSession, cache: FeedCache, principal: Principal, device: DeviceSpec,
    feed: FeedRequest,
) -> FeedBody:
    budgets.declared(device, feed)
    assert feed.pipeline_id is not None
    # Every feed sharing this one's limit, this one included (it is declared).
    read: dict[tuple[int, str], FeedPointer] = {}
    for pipeline_id, indicator_type, _ in device.kind_feeds(feed.kind):
        found = await pipeline_pointer(session, cache, pipeline_id, indicator_type)
        if found is None:
            # A declared pipeline since deleted: kept as not live (it adds nothing, and the
            # fast path need not come here for it on every poll).
            found = FeedPointer(pipeline_id, 0, False)
            cache.put_pointer(found, indicator_type)
        read[(pipeline_id, indicator_type)] = found
    return await budgets.device_body(
        session, cache, principal, device, feed, read[(feed.pipeline_id, feed.kind)],
        lambda pipeline_id, kind: read.get((pipeline_id, kind)),
    )


async def _read_feed_body(
    session: AsyncSession, cache: FeedCache, principal: Principal, feed: FeedRequest
) -> FeedBody:
    device = principal.device
    if device is not None and device.budgeted:
        return await _read_device_body(session, cache, principal, device, feed)
    if feed.pipeline_id is None:
        members = await union_members(session, cache, principal, feed.profile_id, feed.kind)
        if not members.pointers:
            raise FeedNotReady(
                f"no pipeline in scope has published a {feed.kind} feed yet; "
                f"retry after {NOT_READY_RETRY_SECONDS} s"
            )
        return await union_body(
            session, cache, members, feed.kind, feed.fmt, request_options(feed)
        )
    pointer = await pipeline_pointer(session, cache, feed.pipeline_id, feed.kind)
    pointer = require_served(principal, pointer, feed.pipeline_id, feed.kind)
    return await pipeline_body(
        session, cache, pointer, feed.kind, feed.fmt, request_options(feed)
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
