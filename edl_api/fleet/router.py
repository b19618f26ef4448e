"""Device routes: the fleet of a profile (firewalls and their feed credentials)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from edl_api import idempotency
from edl_api.auth.deps import Caller, Writer
from edl_api.db import SessionDep
from edl_api.deps import AppStateDep
from edl_api.errors import API_ERRORS, error_responses
from edl_api.fleet import polls, service
from edl_api.fleet.schemas import (
    DeviceCreate,
    DeviceCreated,
    DevicePublic,
    DeviceUpdate,
    PollPublic,
)
from edl_api.idempotency import IdempotencyHeader
from edl_api.pagination import Page, PageDep
from edl_api.schemas import PathId
from edl_api.settings import Settings

router = APIRouter(tags=["devices"], responses=API_ERRORS)


def base_url(request: Request, settings: Settings) -> str:
    """Where firewalls reach this service: EDL_PUBLIC_URL, else the URL this request used."""
    return (settings.public_url or str(request.base_url)).rstrip("/")


@router.post(
    "/profiles/{profile_id}/devices", status_code=201, response_model=DeviceCreated,
    summary="Add a device (firewall): its feed credential (shown once) and feed URLs",
)
async def create_device(
    profile_id: PathId, body: DeviceCreate, request: Request, principal: Writer,
    session: SessionDep, state: AppStateDep, idempotency_key: IdempotencyHeader = None,
) -> DeviceCreated:
    idem = idempotency.make_request(
        principal, "devices.create", idempotency_key, body, {"profile_id": profile_id}
    )
    return await service.create_device(
        session, principal, profile_id, body, idem, state.verifier,
        state.settings.bcrypt_rounds, base_url(request, state.settings),
    )


@router.get(
    "/profiles/{profile_id}/devices", response_model=Page[DevicePublic],
    summary="The profile's devices: last poll, version served, stale, behind, capacity",
)
async def list_devices(
    profile_id: PathId, request: Request, principal: Caller, session: SessionDep,
    state: AppStateDep, page: PageDep,
    include_revoked: Annotated[bool, Query(description="also deleted devices")] = False,
) -> Page[DevicePublic]:
    return await service.list_devices(
        session, principal, profile_id, page, base_url(request, state.settings),
        include_revoked,
    )


@router.get(
    "/profiles/{profile_id}/devices/{device_id}", response_model=DevicePublic,
    summary="One device's view",
)
async def get_device(
    profile_id: PathId, device_id: PathId, request: Request, principal: Caller,
    session: SessionDep, state: AppStateDep,
) -> DevicePublic:
    return await service.get_device(
        session, principal, profile_id, device_id, base_url(request, state.settings)
    )


@router.patch(
    "/profiles/{profile_id}/devices/{device_id}", response_model=DevicePublic,
    summary="Change a device (name, vendor, model, limits, feeds, expected poll interval)",
    responses=error_responses(409),  # `device_revoked`
)
async def update_device(
    profile_id: PathId, device_id: PathId, body: DeviceUpdate, request: Request,
    principal: Writer, session: SessionDep, state: AppStateDep,
) -> DevicePublic:
    return await service.update_device(
        session, principal, profile_id, device_id, body, base_url(request, state.settings)
    )


@router.delete(
    "/profiles/{profile_id}/devices/{device_id}", response_model=DevicePublic,
    summary="Delete a device: its credential stops working at once (polls stay readable)",
)
async def delete_device(
    profile_id: PathId, device_id: PathId, request: Request, principal: Writer,
    session: SessionDep, state: AppStateDep,
) -> DevicePublic:
    return await service.revoke_device(
        session, principal, profile_id, device_id, base_url(request, state.settings)
    )


@router.post(
    "/profiles/{profile_id}/devices/{device_id}/token", status_code=201,
    response_model=DeviceCreated,
    summary="Rotate a device's credential: a new one, shown once; the old one answers 401",
    responses=error_responses(409),  # `device_revoked`
)
async def rotate_device_token(
    profile_id: PathId, device_id: PathId, request: Request, principal: Writer,
    session: SessionDep, state: AppStateDep,
) -> DeviceCreated:
    return await service.rotate_token(
        session, principal, profile_id, device_id, state.verifier,
        state.settings.bcrypt_rounds, base_url(request, state.settings),
    )


@router.get(
    "/profiles/{profile_id}/devices/{device_id}/polls", response_model=Page[PollPublic],
    summary="A device's recent polls, newest first (aggregated per flush window)",
)
async def list_device_polls(
    profile_id: PathId, device_id: PathId, principal: Caller, session: SessionDep,
    page: PageDep,
) -> Page[PollPublic]:
    return await polls.list_polls(session, principal, profile_id, device_id, page)
