"""`/profiles/{profile_id}/secrets`: names and dates out, values only in."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from edl_api.auth.deps import Caller, Writer
from edl_api.db import SessionDep
from edl_api.deps import SettingsDep
from edl_api.errors import API_ERRORS, error_responses
from edl_api.pagination import Page, PageDep
from edl_api.schemas import PathId
from edl_api.secrets import service
from edl_api.secrets.schemas import SECRET_NAME_PATTERN, SecretPublic, SecretPut

router = APIRouter(tags=["secrets"], responses=API_ERRORS)

SecretName = Annotated[
    str, Path(pattern=SECRET_NAME_PATTERN, description="A-Z, 0-9 and _, starting with a letter")
]


@router.put(
    "/profiles/{profile_id}/secrets/{name}",
    status_code=204,
    response_class=Response,
    summary="Create or replace a secret of the profile (the value is never shown again)",
)
async def put_secret(
    profile_id: PathId, name: SecretName, body: SecretPut, principal: Writer,
    session: SessionDep, settings: SettingsDep,
) -> Response:
    await service.put_secret(session, principal, settings, profile_id, name, body)
    return Response(status_code=204)


@router.get(
    "/profiles/{profile_id}/secrets",
    response_model=Page[SecretPublic],
    summary="The profile's secrets: names and dates, never values",
)
async def list_secrets(
    profile_id: PathId, principal: Caller, session: SessionDep, page: PageDep
) -> Page[SecretPublic]:
    return await service.list_secrets(session, principal, profile_id, page)


@router.delete(
    "/profiles/{profile_id}/secrets/{name}",
    status_code=204,
    response_class=Response,
    responses=error_responses(409),
    summary="Delete a secret (409 while a config of the profile references it)",
)
async def delete_secret(
    profile_id: PathId, name: SecretName, principal: Writer, session: SessionDep
) -> Response:
    await service.delete_secret(session, principal, profile_id, name)
    return Response(status_code=204)
