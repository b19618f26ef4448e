"""The rules of the read-only TAXII 2.1 server: which API roots and collections a caller
sees (the feeds' scope rules), and the objects of a collection from its per-version view.

One API root per profile (`/taxii2/{profile_id}/`); one collection per feed a pipeline
hosts (pipeline × type), id UUIDv5 of "pipeline_id:type". What a caller may not see is
missing: the same 404 as an id that never existed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api.auth.principal import Principal
from edl_api.engine.entries import FEED_TYPES
from edl_api.feeds.bodies import served_entries
from edl_api.feeds.cache import FeedCache
from edl_api.feeds.http import require_served
from edl_api.feeds.serving import pipeline_pointer
from edl_api.feeds.stix import NAMESPACE, STIX_MEDIA_TYPE
from edl_api.models import HostedFeed, Pipeline, Profile
from edl_api.schemas import MAX_DB_ID
from edl_api.taxii import views

TAXII_MEDIA_TYPE = "application/taxii+json;version=2.1"
# Largest request body an API root accepts: it accepts none (read-only), but the field is
# required; the body limit every route has is what a POST would meet.
MAX_CONTENT_LENGTH = 1_048_576


class TaxiiError(Exception):
    """A TAXII error message (TAXII 2.1 section 3.6.1) with its HTTP status."""

    def __init__(
        self, status: int, title: str, description: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(description)
        self.status = status
        self.title = title
        self.description = description
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"title": self.title, "description": self.description,
                "http_status": str(self.status)}


def not_found() -> TaxiiError:
    return TaxiiError(404, "Not found", "no such API root or collection in your scope")


def bad_request(description: str) -> TaxiiError:
    return TaxiiError(400, "Bad request", description)


def collection_id(pipeline_id: int, kind: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{pipeline_id}:{kind}"))


def profile_number(raw: str) -> int:
    """The profile id of an API root path; anything else names no API root (404)."""
    if raw.isascii() and raw.isdigit() and len(raw) <= 10 and 1 <= int(raw) <= MAX_DB_ID:
        return int(raw)
    raise not_found()


# --- discovery and API roots ------------------------------------------------------------


def _visible_profiles(principal: Principal) -> Any:
    query = select(col(Profile.id), col(Profile.name)).where(
        col(Profile.deleted_at).is_(None), principal.scope_filter(col(Profile.id))
    )
    return query.order_by(col(Profile.id))


async def discovery(session: AsyncSession, principal: Principal, base: str) -> dict[str, Any]:
    roots = [f"{base}taxii2/{pid}/" for pid, _ in await session.execute(
        _visible_profiles(principal)
    )]
    found: dict[str, Any] = {
        "title": "EDL platform TAXII 2.1",
        "description": "Each API root is a profile; each collection a feed a pipeline hosts "
        "(read-only STIX 2.1 indicators).",
        "api_roots": roots,
    }
    if len(roots) == 1:
        found["default"] = roots[0]
    return found


async def api_root(session: AsyncSession, principal: Principal, profile_id: int) -> dict[str, Any]:
    row = (await session.execute(
        _visible_profiles(principal).where(col(Profile.id) == profile_id)
    )).first()
    if row is None:
        raise not_found()
    return {
        "title": row[1], "description": f"profile {row[0]}'s hosted feeds",
        "versions": [TAXII_MEDIA_TYPE], "max_content_length": MAX_CONTENT_LENGTH,
    }


# --- collections ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Feed:
    pipeline_id: int
    pipeline_name: str
    kind: str

    @property
    def id(self) -> str:
        return collection_id(self.pipeline_id, self.kind)

    def resource(self) -> dict[str, Any]:
        return {
            "id": self.id, "title": f"{self.pipeline_name} {self.kind}",
            "description": f"pipeline {self.pipeline_id}'s {self.kind} feed as STIX 2.1 "
            "indicators", "can_read": True, "can_write": False,
            "media_types": [STIX_MEDIA_TYPE],
        }


def _sees(principal: Principal, feed: Feed) -> bool:
    """A device with declared feeds reads exactly those (as on the feed URLs)."""
    device = principal.device
    return device is None or not device.budgeted or (
        device.feed(feed.pipeline_id, feed.kind) is not None
    )


async def feeds(session: AsyncSession, principal: Principal, profile_id: int) -> list[Feed]:
    """The collections of an API root this caller sees; 404 for a root it does not."""
    await api_root(session, principal, profile_id)  # the root must be visible first
    rows = await session.execute(
        select(col(Pipeline.id), col(Pipeline.name), col(HostedFeed.indicator_type))
        .join(HostedFeed, col(HostedFeed.pipeline_id) == col(Pipeline.id))
        .where(col(Pipeline.profile_id) == profile_id,
               principal.scope_filter(col(Pipeline.profile_id), col(Pipeline.id)),
               col(Pipeline.deleted_at).is_(None), col(Pipeline.is_active).is_(True),
               col(HostedFeed.indicator_type).in_(FEED_TYPES))
        .order_by(col(Pipeline.id), col(HostedFeed.indicator_type))
    )
    found = [Feed(pid, name, kind) for pid, name, kind in rows if pid is not None]
    return [feed for feed in found if _sees(principal, feed)]


async def collection(
    session: AsyncSession, principal: Principal, profile_id: int, wanted: str
) -> Feed:
    for feed in await feeds(session, principal, profile_id):
        if feed.id == wanted:
            return feed
    raise not_found()


async def view(
    session: AsyncSession, cache: FeedCache, principal: Principal, feed: Feed
) -> views.CollectionView:
    """The collection's objects as of the version served now, built once per version."""
    pointer = await pipeline_pointer(session, cache, feed.pipeline_id, feed.kind)
    pointer = require_served(principal, pointer, feed.pipeline_id, feed.kind)
    key = ("taxii", pointer.pipeline_id, feed.kind, pointer.sha256, pointer.run_id,
           pointer.updated_at)
    found = cache.view(key)
    if isinstance(found, views.CollectionView):
        return found
    # One build per version at a time: a TIP's parallel first requests wait for it (and
    # build it themselves if that build did not finish: its client went away, or it failed).
    building = cache.view(("building", key))
    if isinstance(building, asyncio.Future):
        try:
            done: views.CollectionView = await asyncio.shield(building)
            return done
        except asyncio.CancelledError:
            if not building.cancelled():
                raise  # this request was cancelled, not the build it waited for
    future: asyncio.Future[views.CollectionView] = asyncio.get_running_loop().create_future()
    cache.put_view(("building", key), future, 0)
    try:
        entries, settled = await served_entries(session, cache, pointer, feed.kind)
        built = await asyncio.to_thread(views.build_view, entries, pointer.updated_at)
    except BaseException:
        future.cancel()
        raise
    finally:
        cache.drop_view(("building", key))
    future.set_result(built)
    if settled:  # else first_seen and tags are the previous run's: built again next time
        cache.put_view(key, built, built.size)
    return built


# --- filters ----------------------------------------------------------------------------


def _values(query: Mapping[str, str], name: str) -> list[str] | None:
    raw = query.get(name)
    if raw is None:
        return None
    return [part.strip() for part in raw.split(",") if part.strip()]


def _limit(raw: str | None) -> int:
    if raw is None:
        return views.DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise bad_request(f"limit must be a whole number from 1 to {views.MAX_LIMIT}")
    return min(int(raw), views.MAX_LIMIT)  # more than the cap is served the cap


def _versions(values: list[str] | None) -> frozenset[int] | None:
    if values is None or any(v in ("last", "first", "all") for v in values):
        return None  # each object has one version: it is first, last and all
    try:
        return frozenset(views.parse_timestamp(v, "match[version]") for v in values)
    except views.BadQuery as exc:
        raise bad_request(f"{exc}, or one of last, first, all") from None


def read_query(query: Mapping[str, str]) -> views.Query:
    """The filters and paging of an objects or manifest request (TAXII 2.1 3.4); an
    unknown `match[...]` field is ignored, as the spec allows."""
    try:
        added_after = query.get("added_after")
        after = query.get("next")
        types = _values(query, "match[type]")
        specs = _values(query, "match[spec_version]")
        ids = _values(query, "match[id]")
        return views.Query(
            limit=_limit(query.get("limit")),
            added_after=None if added_after is None else views.parse_timestamp(
                added_after, "added_after"),
            after=None if not after else views.read_token(after),
            ids=None if ids is None else frozenset(ids),
            versions=_versions(_values(query, "match[version]")),
            nothing=(types is not None and "indicator" not in types)
            or (specs is not None and "2.1" not in specs),
        )
    except views.BadQuery as exc:
        raise bad_request(str(exc)) from None
