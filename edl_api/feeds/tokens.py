"""`/profiles/{id}/feed-tokens`: the feed tokens of earlier versions, kept as an alias over
devices. A token made here is a `generic` device without declared feeds (it reads its
profile's feeds, or `pipeline_ids`, unbudgeted); every device is listed as a token."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api import idempotency
from edl_api.auth import keys
from edl_api.auth.principal import Principal
from edl_api.auth.verifier import KeyVerifier
from edl_api.errors import NotFound, Unprocessable
from edl_api.feeds.schemas import FeedTokenCreate, FeedTokenCreated, FeedTokenPublic
from edl_api.fleet.service import device_page, revoke
from edl_api.models import Device, Pipeline, Profile
from edl_api.pagination import Page, PageParams


def token_view(device: Device) -> FeedTokenPublic:
    pipeline_ids = (
        sorted({int(feed["pipeline_id"]) for feed in device.feeds}) if device.feeds
        else device.pipeline_ids
    )
    assert device.id is not None
    return FeedTokenPublic(
        id=device.id, profile_id=device.profile_id, name=device.name,
        pipeline_ids=pipeline_ids, created_at=device.created_at, revoked_at=device.revoked_at,
    )


async def create_token(
    session: AsyncSession, principal: Principal, profile_id: int, body: FeedTokenCreate,
    idem: idempotency.IdempotencyRequest | None, verifier: KeyVerifier, rounds: int,
) -> FeedTokenCreated:
    principal.require_profile(profile_id, write=True)
    # A super-admin reaches every profile id, existing or not: the insert's foreign key
    # would fail (a 500) where a missing profile is a 404.
    if await session.get(Profile, profile_id) is None:
        raise NotFound("not found")

    async def create() -> FeedTokenCreated:
        pipeline_ids = None
        if body.pipeline_ids is not None:
            pipeline_ids = sorted(set(body.pipeline_ids))
            found = set(
                (await session.execute(
                    select(col(Pipeline.id)).where(
                        col(Pipeline.id).in_(pipeline_ids),
                        col(Pipeline.profile_id) == profile_id,
                        col(Pipeline.deleted_at).is_(None),
                    )
                )).scalars()
            )
            missing = [pid for pid in pipeline_ids if pid not in found]
            if missing:
                raise Unprocessable(
                    f"pipelines not in this profile: {missing}", code="unknown_pipeline"
                )
        new_key = await verifier.hash_new(keys.FEED_PREFIX, rounds)
        device = Device(
            profile_id=profile_id, name=body.name, key_id=new_key.key_id,
            key_hash=new_key.key_hash, pipeline_ids=pipeline_ids,
        )
        session.add(device)
        await session.flush()
        return FeedTokenCreated(**token_view(device).model_dump(), token=new_key.plaintext)

    # The secret is never stored: a replay returns the same token id without it.
    return await idempotency.replay_or_create(
        session, idem, FeedTokenCreated, create, secret="token"
    )


async def list_tokens(
    session: AsyncSession, principal: Principal, profile_id: int, page: PageParams,
    include_revoked: bool = False,
) -> Page[FeedTokenPublic]:
    principal.require_profile(profile_id)
    rows, total = await device_page(
        session, profile_id, page, include_revoked=include_revoked, newest_first=True
    )
    return Page(items=[token_view(row) for row in rows], total=total, limit=page.limit,
                offset=page.offset)


async def revoke_token(
    session: AsyncSession, principal: Principal, profile_id: int, token_id: int
) -> FeedTokenPublic:
    return token_view(await revoke(session, principal, profile_id, token_id))
