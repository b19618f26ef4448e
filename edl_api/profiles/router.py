from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse

from edl_api import idempotency
from edl_api.auth.deps import AdminCaller, Caller, ProfileCreator, Writer
from edl_api.db import SessionDep
from edl_api.deps import AppStateDep, SettingsDep
from edl_api.errors import API_ERRORS, error_responses
from edl_api.idempotency import IdempotencyHeader
from edl_api.pagination import Page, PageDep
from edl_api.profiles import config_versions, lifecycle, reach, service
from edl_api.profiles import keys as profile_keys
from edl_api.profiles.schemas import (
    ConfigCreate,
    ConfigDiff,
    ConfigPatch,
    ConfigPublic,
    ConfigReplace,
    ConfigVersionPublic,
    ConfigWithUsage,
    ConfigWritten,
    ProfileBootstrapResponse,
    ProfileCreate,
    ProfileDeleted,
    ProfileDetail,
    ProfileKeyRotated,
    ProfilePatch,
    ProfileSummary,
)
from edl_api.profiles.yamlbody import ConfigBodyRoute, openapi_yaml_body
from edl_api.schemas import DbId, PathId

router = APIRouter(tags=["profiles"], responses=API_ERRORS)
# Config writes whose body may also be the YAML itself (`profiles.yamlbody`).
yaml_router = APIRouter(tags=["configs"], responses=API_ERRORS, route_class=ConfigBodyRoute)
_YAML_EXAMPLE = (
    "# edl: name=c2-block refresh_interval_minutes=60\n"
    "sources:\n  - name: feodo  # abuse.ch botnet C2\n"
    "    url: https://feeds.example/feodo/ipblocklist.txt\n"
    "rules:\n  exclude_reserved: true\n"
)


@router.post(
    "/profiles",
    status_code=201,
    response_model=ProfileBootstrapResponse,
    summary="Create a profile (tenant); returns its API key once",
    responses=error_responses(409),  # `name_taken`
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


@router.delete(
    "/profiles/{profile_id}", response_model=ProfileDeleted, responses=error_responses(409),
    summary="Delete a profile (super-admin or a linked operator); 409 while it has live "
    "pipelines unless ?force=true",
    description="The profile is missing (404) for every caller at once; forced, its live "
    "pipelines are deleted and their runs cancelled. The profile key and every device "
    "credential of it are revoked. Its data is purged after EDL_DELETED_RETENTION_DAYS. "
    "409 `profile_in_use` names the live pipelines.",
)
async def delete_profile(
    profile_id: PathId, principal: AdminCaller, session: SessionDep, settings: SettingsDep,
    force: Annotated[bool, Query(description="also delete its live pipelines")] = False,
) -> ProfileDeleted:
    return await lifecycle.delete_profile(
        session, principal, profile_id, force=force,
        retention_days=settings.deleted_retention_days,
    )


@yaml_router.post(
    "/profiles/{profile_id}/configs",
    status_code=201,
    response_model=ConfigWritten,
    summary="Create a pipeline config: JSON, or the YAML itself (Content-Type: application/yaml)",
    openapi_extra=openapi_yaml_body(_YAML_EXAMPLE),
)
async def create_config(
    profile_id: PathId,
    body: ConfigCreate,
    principal: Writer,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyHeader = None,
) -> ConfigWritten:
    idem = idempotency.make_request(
        principal, "configs.create", idempotency_key, body, {"profile_id": profile_id}
    )
    created = await service.create_config(
        session, principal, profile_id, body, idem, settings.run_max_bytes
    )
    return config_versions.written(created, settings)


@yaml_router.put(
    "/profiles/{profile_id}/configs/{config_id}",
    response_model=ConfigWritten,
    summary="Replace a config's YAML (a new version): JSON, or the YAML itself",
    openapi_extra=openapi_yaml_body(_YAML_EXAMPLE),
)
async def replace_config(
    profile_id: PathId, config_id: PathId, body: ConfigReplace, principal: Writer,
    session: SessionDep, settings: SettingsDep,
) -> ConfigWritten:
    config = await config_versions.replace_config(
        session, principal, profile_id, config_id, body, settings.run_max_bytes
    )
    return config_versions.written(config, settings)


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
    response_model=ConfigWritten,
    summary="Change a config; each section given replaces that section (comments kept)",
    tags=["configs"],
)
async def patch_config(
    profile_id: PathId, config_id: PathId, body: ConfigPatch, principal: Writer,
    session: SessionDep, settings: SettingsDep,
) -> ConfigWritten:
    patched = await config_versions.patch_config(
        session, principal, profile_id, config_id, body, settings.run_max_bytes
    )
    return config_versions.written(patched, settings)


@router.delete(
    "/profiles/{profile_id}/configs/{config_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a config (409 config_in_use while a live pipeline uses it)",
    tags=["configs"],
    responses=error_responses(409),
)
async def delete_config(
    profile_id: PathId, config_id: PathId, principal: Writer, session: SessionDep
) -> Response:
    await config_versions.delete_config(session, principal, profile_id, config_id)
    return Response(status_code=204)


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


@router.get(
    "/profiles/{profile_id}/configs/{config_id}/versions/{a}/diff/{b}",
    response_model=ConfigDiff,
    summary="Unified diff from version a to version b (Accept: text/plain for the diff alone)",
    tags=["configs"],
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def diff_versions(
    profile_id: PathId, config_id: PathId, a: PathId, b: PathId, principal: Caller,
    session: SessionDep, request: Request,
) -> ConfigDiff | Response:
    diff = await config_versions.diff_versions(session, principal, profile_id, config_id, a, b)
    if _wants_text(request.headers.get("accept", "")):
        return PlainTextResponse(diff.diff)
    return diff


def _wants_text(accept: str) -> bool:
    types = [part.split(";", 1)[0].strip().lower() for part in accept.split(",")]
    return "text/plain" in types and "application/json" not in types


@router.post(
    "/profiles/{profile_id}/configs/{config_id}/versions/{version}/restore",
    status_code=201,
    response_model=ConfigWritten,
    summary="Make a new version equal to this one (name, YAML, refresh interval)",
    tags=["configs"],
)
async def restore_version(
    profile_id: PathId, config_id: PathId, version: PathId, principal: Writer,
    session: SessionDep, settings: SettingsDep,
) -> ConfigWritten:
    config = await config_versions.restore_version(
        session, principal, profile_id, config_id, version, settings.run_max_bytes
    )
    return config_versions.written(config, settings)


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


router.include_router(yaml_router)
