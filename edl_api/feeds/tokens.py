"""Feed tokens: read-only keys for firewalls, limited to a profile (and some pipelines)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api import idempotency
from edl_api.auth import keys
from edl_api.auth.principal import Principal
from edl_api.errors import NotFound, Unprocessable
from edl_api.feeds.hooks import drop_key_after_commit
from edl_api.feeds.schemas import FeedTokenCreate, FeedTokenCreated, FeedTokenPublic
from edl_api.models import FeedToken, Pipeline, Profile, utcnow
from edl_api.pagination import Page, PageParams, paginate


async def create_token(
    session: AsyncSession, principal: Principal, profile_id: int, body: FeedTokenCreate,
    idem: idempotency.IdempotencyRequest | None, rounds: int,
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
        new_key = keys.generate_key(keys.FEED_PREFIX, rounds)
        token = FeedToken(
            profile_id=profile_id, name=body.name, key_id=new_key.key_id,
            key_hash=new_key.key_hash, pipeline_ids=pipeline_ids,
        )
        session.add(token)
        await session.flush()
        return FeedTokenCreated(
            **FeedTokenPublic.model_validate(token).model_dump(), token=new_key.plaintext
        )

    # The secret is never stored: a replay returns the same token id without it.
    return await idempotency.replay_or_create(
        session, idem, FeedTokenCreated, create, secret="token"
    )


async def list_tokens(
    session: AsyncSession, principal: Principal, profile_id: int, page: PageParams,
    include_revoked: bool = False,
) -> Page[FeedTokenPublic]:
    principal.require_profile(profile_id)
    query = select(FeedToken).where(col(FeedToken.profile_id) == profile_id)
    if not include_revoked:
        query = query.where(col(FeedToken.revoked_at).is_(None))
    return await paginate(session, query.order_by(col(FeedToken.id).desc()), page, FeedTokenPublic)


async def revoke_token(
    session: AsyncSession, principal: Principal, profile_id: int, token_id: int
) -> FeedTokenPublic:
    principal.require_profile(profile_id, write=True)
    token = await session.get(FeedToken, token_id)
    if token is None or token.profile_id != profile_id:
        raise NotFound("not found")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        await session.flush()
    drop_key_after_commit(session, token.key_id)
    return FeedTokenPublic.model_validate(token)
