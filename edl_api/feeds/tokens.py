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
from edl_api.models import FeedToken, Pipeline, utcnow
from edl_api.pagination import Page, PageParams, paginate


async def create_token(
    session: AsyncSession, principal: Principal, profile_id: int, body: FeedTokenCreate,
    idem: idempotency.IdempotencyRequest | None, rounds: int,
) -> FeedTokenCreated:
    principal.require_profile(profile_id, write=True)
    if idem is not None and (stored := await idempotency.replay(session, idem)) is not None:
        return FeedTokenCreated.model_validate(stored)
    pipeline_ids = None
    if body.pipeline_ids is not None:
        pipeline_ids = sorted(set(body.pipeline_ids))
        found = set(
            (await session.execute(
                select(col(Pipeline.id)).where(
                    col(Pipeline.id).in_(pipeline_ids), col(Pipeline.profile_id) == profile_id,
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
        profile_id=profile_id, name=body.name, key_id=new_key.key_id, key_hash=new_key.key_hash,
        pipeline_ids=pipeline_ids,
    )
    session.add(token)
    await session.flush()
    response = FeedTokenCreated(
        **FeedTokenPublic.model_validate(token).model_dump(), token=new_key.plaintext
    )
    if idem is not None:
        # The secret is never stored: a replay returns the same token id without it.
        stored = await idempotency.remember(
            session, idem, response.model_dump(mode="json") | {"token": None}
        )
        if stored["id"] != token.id:
            return FeedTokenCreated.model_validate(stored)
    return response


async def list_tokens(
    session: AsyncSession, principal: Principal, profile_id: int, page: PageParams,
    include_revoked: bool = False,
) -> Page[FeedTokenPublic]:
    principal.require_profile(profile_id)
    query = select(FeedToken).where(col(FeedToken.profile_id) == profile_id)
    if not include_revoked:
        query = query.where(col(FeedToken.revoked_at).is_(None))
    rows, total = await paginate(session, query.order_by(col(FeedToken.id).desc()), page)
    return Page(
        items=[FeedTokenPublic.model_validate(t) for t in rows],
        total=total, limit=page.limit, offset=page.offset,
    )


async def revoke_token(
    session: AsyncSession, principal: Principal, profile_id: int, token_id: int,
    cache: keys.VerifiedKeyCache[Principal],
) -> FeedTokenPublic:
    principal.require_profile(profile_id, write=True)
    token = await session.get(FeedToken, token_id)
    if token is None or token.profile_id != profile_id:
        raise NotFound("not found")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        await session.flush()
    cache.drop_key_id(token.key_id)
    drop_key_after_commit(session, token.key_id)
    return FeedTokenPublic.model_validate(token)
