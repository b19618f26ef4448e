"""Feeds served to a device with declared feeds: each cut to the device's capacity budget.

A device's declared feeds of one capacity kind (ip, fqdn, url) share that kind's limit
(`fleet.budget.allocate`: higher priority whole first). A feed whose share covers its
published count is served exactly as published (same bytes, same ETag); one cut to fit
keeps its highest-confidence entries (`bodies.budget_body`). Allocations and cut bodies are
cached by content (limit, versions, counts), so a poll stays a few dictionary lookups:
`cached_device_body` is the fast path's, `device_body` the route's once pointers are read
(`serving` reads them, fresh or, while the database is down, the last known ones).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession

from edl_api.auth.principal import Principal
from edl_api.errors import DatabaseUnavailable
from edl_api.feeds.bodies import (
    budget_body,
    budget_body_key,
    pipeline_body,
    pipeline_body_key,
    request_options,
)
from edl_api.feeds.cache import FeedBody, FeedCache, FeedPointer, stale_variant
from edl_api.feeds.http import FeedRequest, not_a_device_feed, require_served
from edl_api.fleet.budget import allocate
from edl_api.fleet.limits import indicator_kind
from edl_api.fleet.spec import DeviceFeed, DeviceSpec

PointerLookup = Callable[[int, str], "FeedPointer | None"]


class Budget(NamedTuple):
    allowed: int  # entries of the asked feed this device is served
    last_modified: datetime | None  # of a cut body: the newest of the kind's feeds
    stale: bool  # a pointer used is the last known one (database unavailable)


def declared(device: DeviceSpec, feed: FeedRequest) -> DeviceFeed:
    """The device's declaration of this feed (any format), else 404 `not_a_device_feed`."""
    found = None if feed.pipeline_id is None else device.feed(feed.pipeline_id, feed.kind)
    if found is None:
        raise not_a_device_feed(
            device.name, device.profile_id, device.id, feed.kind, feed.pipeline_id
        )
    return found


def _served_count(principal: Principal, pointer: FeedPointer) -> int:
    """What a declared feed adds to the kind's total: its published count, 0 when the
    pipeline is gone, inactive, unpublished or not the device's to read."""
    if (
        not pointer.live or pointer.sha256 is None
        or not principal.sees_pipeline(pointer.profile_id, pointer.pipeline_id)
    ):
        return 0
    return pointer.count


def budget(
    cache: FeedCache, principal: Principal, device: DeviceSpec, feed: FeedRequest,
    pointer: FeedPointer, lookup: PointerLookup,
) -> Budget | None:
    """This feed's share of its kind's limit; None when a sibling feed's pointer is not
    known (`lookup` returned None: read it first)."""
    limit = device.limit(indicator_kind(feed.kind))
    if limit is None:  # no known limit: every feed whole
        return Budget(pointer.count, pointer.updated_at, pointer.stale)
    siblings = device.kind_feeds(feed.kind)
    found: list[FeedPointer] = []
    counts: list[int] = []
    stale = pointer.stale
    for pipeline_id, indicator_type, _ in siblings:
        other = (
            pointer if pipeline_id == feed.pipeline_id and indicator_type == feed.kind
            else lookup(pipeline_id, indicator_type)
        )
        if other is None:
            return None
        stale = stale or other.stale
        counts.append(_served_count(principal, other))
        found.append(other)
    if sum(counts) <= limit:
        return Budget(pointer.count, pointer.updated_at, stale)
    # The versions and counts decide the split (a sha names one artifact, hashed once).
    key = ("allocation", limit, siblings, tuple(other.sha256 for other in found),
           tuple(counts))
    allowed = cache.allocation(key)
    if allowed is None:
        allowed = allocate(limit, [((pid, kind), priority, count) for (pid, kind, priority), count
                                   in zip(siblings, counts, strict=True)])
        cache.put_allocation(key, allowed)
    stamps = [other.updated_at for other in found if other.updated_at is not None]
    return Budget(allowed[(feed.pipeline_id, feed.kind)], max(stamps, default=None), stale)


def cached_device_body(
    cache: FeedCache, principal: Principal, device: DeviceSpec, feed: FeedRequest,
    *, poll: bool,
) -> FeedBody | None:
    """As `serving.cached_body`, for a device with declared feeds: None unless the pointers
    of the device's feeds of this kind and the body are all cached (errors: the route)."""
    if feed.pipeline_id is None or device.feed(feed.pipeline_id, feed.kind) is None:
        return None
    pointer = cache.pointer(feed.pipeline_id, feed.kind, poll=poll)
    if (
        pointer is None or not pointer.live
        or not principal.sees_pipeline(pointer.profile_id, feed.pipeline_id)
    ):
        return None
    share = budget(cache, principal, device, feed, pointer,
                   lambda pid, kind: cache.pointer(pid, kind, poll=poll))
    if share is None:
        return None
    key = pipeline_body_key(pointer, feed.kind, feed.fmt, request_options(feed))
    if share.allowed < pointer.count:
        key = budget_body_key(key, share.allowed, share.last_modified)
    body = cache.body(key)
    return stale_variant(body) if body is not None and share.stale else body


async def device_body(
    session: AsyncSession, cache: FeedCache, principal: Principal, device: DeviceSpec,
    feed: FeedRequest, pointer: FeedPointer | None, lookup: PointerLookup,
) -> FeedBody:
    """The body for a declared feed once its pointer (`pointer`) and its siblings'
    (`lookup`, which must know them all) are read; built and cached on a miss."""
    assert feed.pipeline_id is not None  # `declared` was asked first
    pointer = require_served(principal, pointer, feed.pipeline_id, feed.kind)
    share = budget(cache, principal, device, feed, pointer, lookup)
    if share is None:
        # Only while the database is down (the route reads every sibling first): without a
        # sibling's size the limit cannot be promised, so no body rather than too big a one.
        raise DatabaseUnavailable()
    options = request_options(feed)
    if share.allowed >= pointer.count:
        body = await pipeline_body(session, cache, pointer, feed.kind, feed.fmt, options)
    else:
        body = await budget_body(session, cache, pointer, feed.kind, feed.fmt, options,
                                 share.allowed, share.last_modified)
    return stale_variant(body) if share.stale else body
