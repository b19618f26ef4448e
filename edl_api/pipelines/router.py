from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from edl_api import idempotency
from edl_api.auth.deps import Caller, Writer
from edl_api.db import SessionDep
from edl_api.errors import API_ERRORS, error_responses
from edl_api.idempotency import IdempotencyHeader
from edl_api.pagination import Page, PageDep
from edl_api.pipelines import service
from edl_api.pipelines.schemas import (
    PipelineConfigPatch,
    PipelineCreate,
    PipelinePatch,
    PipelinePublic,
)
from edl_api.schemas import DbId, PathId

router = APIRouter(tags=["pipelines"], responses=API_ERRORS)


@router.post(
    "/pipelines",
    status_code=201,
    response_model=PipelinePublic,
    summary="Create a pipeline bound to a profile config",
)
async def create_pipeline(
    body: PipelineCreate,
    principal: Writer,
    session: SessionDep,
    idempotency_key: IdempotencyHeader = None,
) -> PipelinePublic:
    idem = idempotency.make_request(principal, "pipelines.create", idempotency_key, body)
    return await service.create_pipeline(session, principal, body, idem)


@router.get("/pipelines", response_model=Page[PipelinePublic], summary="List pipelines in scope")
async def list_pipelines(
    principal: Caller,
    session: SessionDep,
    page: PageDep,
    profile_id: Annotated[DbId | None, Query()] = None,
    profile_config_id: Annotated[DbId | None, Query()] = None,
    active_only: Annotated[bool, Query(description="active, not deleted")] = False,
    include_deleted: Annotated[bool, Query()] = False,
) -> Page[PipelinePublic]:
    return await service.list_pipelines(
        session,
        principal,
        page,
        profile_id=profile_id,
        profile_config_id=profile_config_id,
        active_only=active_only,
        include_deleted=include_deleted,
    )


@router.get(
    "/profiles/{profile_id}/pipelines",
    response_model=Page[PipelinePublic],
    summary="List a profile's pipelines",
    tags=["profiles"],
)
async def list_profile_pipelines(
    profile_id: PathId,
    principal: Caller,
    session: SessionDep,
    page: PageDep,
    profile_config_id: Annotated[DbId | None, Query()] = None,
    active_only: Annotated[bool, Query()] = False,
    include_deleted: Annotated[bool, Query()] = False,
) -> Page[PipelinePublic]:
    principal.require_profile(profile_id)
    return await service.list_pipelines(
        session,
        principal,
        page,
        profile_id=profile_id,
        profile_config_id=profile_config_id,
        active_only=active_only,
        include_deleted=include_deleted,
    )


@router.get("/pipelines/{pipeline_id}", response_model=PipelinePublic, summary="Get a pipeline")
async def get_pipeline(
    pipeline_id: PathId, principal: Caller, session: SessionDep
) -> PipelinePublic:
    return PipelinePublic.model_validate(
        await service.get_pipeline(session, principal, pipeline_id)
    )


@router.patch(
    "/pipelines/{pipeline_id}",
    response_model=PipelinePublic,
    summary="Rename, (de)activate or change a pipeline's concurrency limit",
    responses=error_responses(409),  # `pipeline_deleted`
)
async def patch_pipeline(
    pipeline_id: PathId, body: PipelinePatch, principal: Writer, session: SessionDep
) -> PipelinePublic:
    return await service.patch_pipeline(session, principal, pipeline_id, body)


@router.patch(
    "/pipelines/{pipeline_id}/config",
    response_model=PipelinePublic,
    summary="Point a pipeline at another config of the same profile",
    responses=error_responses(409),  # `pipeline_deleted`
)
async def rebind_config(
    pipeline_id: PathId, body: PipelineConfigPatch, principal: Writer, session: SessionDep
) -> PipelinePublic:
    return await service.rebind_config(session, principal, pipeline_id, body)


@router.delete(
    "/pipelines/{pipeline_id}",
    response_model=PipelinePublic,
    summary="Soft-delete a pipeline; its feeds stop being served",
)
async def delete_pipeline(
    pipeline_id: PathId, principal: Writer, session: SessionDep
) -> PipelinePublic:
    return await service.delete_pipeline(session, principal, pipeline_id)
