from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from edl_api import idempotency
from edl_api.auth.deps import AdminCaller, Caller, ProfileCreator, Writer
from edl_api.db import SessionDep
from edl_api.deps import SettingsDep
from edl_api.errors import API_ERRORS
from edl_api.idempotency import IdempotencyHeader
from edl_api.pagination import Page, PageDep
from edl_api.profiles import service
from edl_api.profiles.schemas import (
    ConfigCreate,
    ConfigPatch,
    ConfigPublic,
    ConfigVersionPublic,
    ConfigWithUsage,
    ProfileBootstrapResponse,
    ProfileCreate,
    ProfilePublic,
    ProfileSummary,
)

router = APIRouter(tags=["profiles"], responses=API_ERRORS)


@router.post(
    "/profiles",
    status_code=201,
    response_model=ProfileBootstrapResponse,
    summary="Create a profile (tenant); returns its API key once",
)
async def create_profile(
    body: ProfileCreate,
    principal: ProfileCreator,
    session: SessionDep,
    settings: SettingsDep,
    owner_admin_id: Annotated[int | None, Query(description="admin account to link")] = None,
    idempotency_key: IdempotencyHeader = None,
) -> ProfileBootstrapResponse:
    idem = idempotency.make_request(
        principal, "profiles.create", idempotency_key, body, {"owner_admin_id": owner_admin_id}
    )
    return await service.create_profile(
        session, principal, body, owner_admin_id, idem, settings.bcrypt_rounds
    )


@router.get(
    "/profiles", response_model=Page[ProfileSummary], summary="List the profiles in your scope"
)
async def list_profiles(
    principal: AdminCaller, session: SessionDep, page: PageDep
) -> Page[ProfileSummary]:
    return await service.list_profiles(session, principal, page)


@router.get("/profiles/{profile_id}", response_model=ProfilePublic, summary="Get a profile")
async def get_profile(profile_id: int, principal: Caller, session: SessionDep) -> ProfilePublic:
    return ProfilePublic.model_validate(await service.get_profile(session, principal, profile_id))


@router.post(
    "/profiles/{profile_id}/configs",
    status_code=201,
    response_model=ConfigPublic,
    summary="Create a pipeline config (validated YAML)",
    tags=["configs"],
)
async def create_config(
    profile_id: int,
    body: ConfigCreate,
    principal: Writer,
    session: SessionDep,
    idempotency_key: IdempotencyHeader = None,
) -> ConfigPublic:
    idem = idempotency.make_request(
        principal, "configs.create", idempotency_key, body, {"profile_id": profile_id}
    )
    return await service.create_config(session, principal, profile_id, body, idem)


@router.get(
    "/profiles/{profile_id}/configs",
    response_model=Page[ConfigWithUsage],
    summary="List a profile's configs with usage metrics",
    tags=["configs"],
)
async def list_configs(
    profile_id: int, principal: Caller, session: SessionDep, page: PageDep
) -> Page[ConfigWithUsage]:
    return await service.list_configs(session, principal, profile_id, page)


@router.get(
    "/profiles/{profile_id}/configs/{config_id}",
    response_model=ConfigPublic,
    summary="Get a config",
    tags=["configs"],
)
async def get_config(
    profile_id: int, config_id: int, principal: Caller, session: SessionDep
) -> ConfigPublic:
    return ConfigPublic.model_validate(
        await service.get_config(session, principal, profile_id, config_id)
    )


@router.patch(
    "/profiles/{profile_id}/configs/{config_id}",
    response_model=ConfigPublic,
    summary="Change a config; each section given replaces that section",
    tags=["configs"],
)
async def patch_config(
    profile_id: int, config_id: int, body: ConfigPatch, principal: Writer, session: SessionDep
) -> ConfigPublic:
    return await service.patch_config(session, principal, profile_id, config_id, body)


@router.get(
    "/profiles/{profile_id}/configs/{config_id}/versions",
    response_model=Page[ConfigVersionPublic],
    summary="Every version of a config",
    tags=["configs"],
)
async def list_versions(
    profile_id: int, config_id: int, principal: Caller, session: SessionDep, page: PageDep
) -> Page[ConfigVersionPublic]:
    return await service.list_versions(session, principal, profile_id, config_id, page)


@router.get(
    "/profiles/{profile_id}/configs/{config_id}/versions/{version}",
    response_model=ConfigVersionPublic,
    summary="One version of a config",
    tags=["configs"],
)
async def get_version(
    profile_id: int, config_id: int, version: int, principal: Caller, session: SessionDep
) -> ConfigVersionPublic:
    return await service.get_version(session, principal, profile_id, config_id, version)
