"""`/profiles/{id}/feed-tokens`: the feed tokens of earlier versions, kept as an alias over
devices. A token made here is a `generic` device without declared feeds (it reads its
profile's feeds, or `pipeline_ids`, unbudgeted); every device is listed as a token."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from edl_api import idempotency
from edl_api.auth import keys
from edl_api.auth.principal import Principal
from edl_api.auth.verifier import KeyVerifier
from edl_api.feeds.schemas import FeedTokenCreate, FeedTokenCreated, FeedTokenPublic
from edl_api.fleet.service import device_page, profile_in_scope, require_pipelines, revoke
from edl_api.models import Device
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
    await profile_in_scope(session, principal, profile_id, write=True)

    async def create() -> FeedTokenCreated:
        pipeline_ids = None
        if body.pipeline_ids is not None:
            pipeline_ids = await require_pipelines(session, profile_id, body.pipeline_ids)
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
    await profile_in_scope(session, principal, profile_id)
    rows, total = await device_page(
        session, profile_id, page, include_revoked=include_revoked, newest_first=True
    )
    return Page(items=[token_view(row) for row in rows], total=total, limit=page.limit,
                offset=page.offset)


async def revoke_token(
    session: AsyncSession, principal: Principal, profile_id: int, token_id: int
) -> FeedTokenPublic:
    return token_view(await revoke(session, principal, profile_id, token_id))
