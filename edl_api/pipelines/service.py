"""Pipelines bind a profile config; every query filters by the caller's scope."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api import idempotency
from edl_api.auth.principal import Principal
from edl_api.errors import Conflict, NotFound, Unprocessable
from edl_api.models import Pipeline, SourceState, utcnow
from edl_api.pagination import Page, PageParams, paginate
from edl_api.pipelines.schemas import (
    PipelineConfigPatch,
    PipelineCreate,
    PipelinePatch,
    PipelinePublic,
)
from edl_api.profiles.service import get_config_in_scope


async def create_pipeline(
    session: AsyncSession,
    principal: Principal,
    body: PipelineCreate,
    idem: idempotency.IdempotencyRequest | None,
) -> PipelinePublic:
    config = await get_config_in_scope(session, principal, body.profile_config_id)
    principal.require_profile(config.profile_id, write=True)

    async def create() -> PipelinePublic:
        pipeline = Pipeline(
            profile_id=config.profile_id,
            profile_config_id=body.profile_config_id,
            name=body.name,
            concurrency_limit=body.concurrency_limit,
            is_active=body.is_active,
        )
        session.add(pipeline)
        await session.flush()
        return PipelinePublic.model_validate(pipeline)

    return await idempotency.replay_or_create(session, idem, PipelinePublic, create)


async def get_pipeline(
    session: AsyncSession, principal: Principal, pipeline_id: int, *, write: bool = False
) -> Pipeline:
    query = select(Pipeline).where(
        col(Pipeline.id) == pipeline_id,
        principal.scope_filter(col(Pipeline.profile_id), col(Pipeline.id)),
    )
    pipeline = (await session.execute(query)).scalar_one_or_none()
    if pipeline is None:
        raise NotFound("not found")
    principal.require_profile(pipeline.profile_id, write=write)
    return pipeline


async def list_pipelines(
    session: AsyncSession,
    principal: Principal,
    page: PageParams,
    *,
    profile_id: int | None = None,
    profile_config_id: int | None = None,
    active_only: bool = False,
    include_deleted: bool = False,
) -> Page[PipelinePublic]:
    filters: list[Any] = [principal.scope_filter(col(Pipeline.profile_id), col(Pipeline.id))]
    if profile_id is not None:
        filters.append(col(Pipeline.profile_id) == profile_id)
    if profile_config_id is not None:
        filters.append(col(Pipeline.profile_config_id) == profile_config_id)
    if active_only:
        filters.append(col(Pipeline.is_active).is_(True))
    if active_only or not include_deleted:
        filters.append(col(Pipeline.deleted_at).is_(None))
    query = select(Pipeline).where(*filters).order_by(col(Pipeline.id).desc())
    return await paginate(session, query, page, PipelinePublic)


def _refuse_deleted(pipeline: Pipeline) -> None:
    if pipeline.deleted_at is not None:
        raise Conflict("the pipeline is deleted", code="pipeline_deleted")


async def rebind_config(
    session: AsyncSession, principal: Principal, pipeline_id: int, body: PipelineConfigPatch
) -> PipelinePublic:
    pipeline = await get_pipeline(session, principal, pipeline_id, write=True)
    _refuse_deleted(pipeline)
    config = await get_config_in_scope(session, principal, body.profile_config_id)
    if config.profile_id != pipeline.profile_id:
        raise Unprocessable("the config belongs to another profile", code="config_profile_mismatch")
    pipeline.profile_config_id = body.profile_config_id
    await session.flush()
    return PipelinePublic.model_validate(pipeline)


async def patch_pipeline(
    session: AsyncSession, principal: Principal, pipeline_id: int, body: PipelinePatch
) -> PipelinePublic:
    pipeline = await get_pipeline(session, principal, pipeline_id, write=True)
    _refuse_deleted(pipeline)
    changes = body.model_dump(exclude_unset=True)
    if not changes or any(value is None for value in changes.values()):
        raise Unprocessable("give at least one non-null field", code="validation_error")
    for field, value in changes.items():
        setattr(pipeline, field, value)
    await session.flush()
    return PipelinePublic.model_validate(pipeline)


async def delete_pipeline(
    session: AsyncSession, principal: Principal, pipeline_id: int
) -> PipelinePublic:
    pipeline = await get_pipeline(session, principal, pipeline_id, write=True)
    if pipeline.deleted_at is None:
        pipeline.deleted_at = utcnow()
        pipeline.is_active = False
        # What its sources were told (TAXII objects, MISP events, first-seen times) is
        # tenant data with no use once the pipeline is gone.
        await session.execute(
            delete(SourceState).where(col(SourceState.pipeline_id) == pipeline.id)
        )
        await session.flush()
    return PipelinePublic.model_validate(pipeline)
