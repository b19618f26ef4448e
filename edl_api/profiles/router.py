from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from edl_api import idempotency
from edl_api.auth.deps import AdminCaller, Caller, ProfileCreator, Writer
from edl_api.db import SessionDep
from edl_api.deps import AppStateDep, SettingsDep
from edl_api.errors import API_ERRORS
from edl_api.idempotency import IdempotencyHeader
from edl_api.pagination import Page, PageDep
from edl_api.profiles import keys as profile_keys
from edl_api.profiles import reach, service
from edl_api.profiles.schemas import (
    ConfigCreate,
    ConfigPatch,
    ConfigPublic,
    ConfigVersionPublic,
    ConfigWithUsage,
    ProfileBootstrapResponse,
    ProfileCreate,
    ProfileDetail,
    ProfileKeyRotated,
    ProfilePatch,
    ProfileSummary,
)
from edl_api.schemas import DbId, PathId

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
    owner_admin_id: Annotated[DbId | None, Query(description="admin account to link")] = None,
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


@router.get(
    "/profiles/{profile_id}", response_model=ProfileDetail,
    summary="Get a profile, with its folder for file sources and the files in it",
)
async def get_profile(
    profile_id: PathId, principal: Caller, session: SessionDep, settings: SettingsDep
) -> ProfileDetail:
    return await reach.profile_detail(session, principal, settings, profile_id)


@router.patch(
    "/profiles/{profile_id}", response_model=ProfileDetail,
    summary="Grant the profile its own private destinations (super-admin only)",
)
async def patch_profile(
    profile_id: PathId, body: ProfilePatch, principal: Caller, session: SessionDep,
    settings: SettingsDep,
) -> ProfileDetail:
    return await reach.patch_profile(session, principal, settings, profile_id, body)


@router.post(
    "/profiles/{profile_id}/configs",
    status_code=201,
    response_model=ConfigPublic,
    summary="Create a pipeline config (validated YAML)",
    tags=["configs"],
)
async def create_config(
    profile_id: PathId,
    body: ConfigCreate,
    principal: Writer,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyHeader = None,
) -> ConfigPublic:
    idem = idempotency.make_request(
        principal, "configs.create", idempotency_key, body, {"profile_id": profile_id}
    )
    return await service.create_config(
        session, principal, profile_id, body, idem, settings.run_max_bytes
    )


@router.get(
    "/profiles/{profile_id}/configs",
    response_model=Page[ConfigWithUsage],
    summary="List a profile's configs with usage metrics",
    tags=["configs"],
)
async def list_configs(
    profile_id: PathId, principal: Caller, session: SessionDep, page: PageDep
) -> Page[ConfigWithUsage]:
    return await service.list_configs(session, principal, profile_id, page)


@router.get(
    "/profiles/{profile_id}/configs/{config_id}",
    response_model=ConfigPublic,
    summary="Get a config",
    tags=["configs"],
)
async def get_config(
    profile_id: PathId, config_id: PathId, principal: Caller, session: SessionDep
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
    profile_id: PathId, config_id: PathId, body: ConfigPatch, principal: Writer,
    session: SessionDep, settings: SettingsDep,
) -> ConfigPublic:
    return await service.patch_config(
        session, principal, profile_id, config_id, body, settings.run_max_bytes
    )


@router.get(
    "/profiles/{profile_id}/configs/{config_id}/versions",
    response_model=Page[ConfigVersionPublic],
    summary="Every version of a config",
    tags=["configs"],
)
async def list_versions(
    profile_id: PathId, config_id: PathId, principal: Caller, session: SessionDep, page: PageDep
) -> Page[ConfigVersionPublic]:
    return await service.list_versions(session, principal, profile_id, config_id, page)


@router.get(
    "/profiles/{profile_id}/configs/{config_id}/versions/{version}",
    response_model=ConfigVersionPublic,
    summary="One version of a config",
    tags=["configs"],
)
async def get_version(
    profile_id: PathId, config_id: PathId, version: PathId, principal: Caller, session: SessionDep
) -> ConfigVersionPublic:
    return await service.get_version(session, principal, profile_id, config_id, version)


@router.post(
    "/profiles/{profile_id}/key",
    status_code=201,
    response_model=ProfileKeyRotated,
    summary="Rotate the profile key: a new key, shown once; the old one answers 401 at once",
)
async def rotate_key(
    profile_id: PathId, principal: Writer, session: SessionDep, state: AppStateDep
) -> ProfileKeyRotated:
    return await profile_keys.rotate_key(
        session, principal, profile_id, state.verifier, state.settings.bcrypt_rounds
    )


@router.delete(
    "/profiles/{profile_id}/key",
    status_code=204,
    response_class=Response,
    summary="Revoke the profile key without a replacement (admin keys still reach it)",
)
async def revoke_key(profile_id: PathId, principal: Writer, session: SessionDep) -> Response:
    await profile_keys.revoke_key(session, principal, profile_id)
    return Response(status_code=204)
