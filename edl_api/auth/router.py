from __future__ import annotations

from fastapi import APIRouter

from edl_api import idempotency
from edl_api.auth import service
from edl_api.auth.deps import Caller, SuperAdmin
from edl_api.auth.schemas import (
    AdminAccountCreate,
    AdminAccountCreated,
    AdminAccountPublic,
    AdminProfileLinkPublic,
    Me,
)
from edl_api.db import SessionDep
from edl_api.deps import SettingsDep
from edl_api.errors import API_ERRORS, error_responses
from edl_api.idempotency import IdempotencyHeader
from edl_api.pagination import Page, PageDep
from edl_api.schemas import PathId

router = APIRouter(tags=["admin"], responses=API_ERRORS)


@router.post(
    "/admin/accounts",
    status_code=201,
    response_model=AdminAccountCreated,
    summary="Create an admin account (super-admin); the key is shown only here",
    responses=error_responses(409),  # `name_taken`
)
async def create_account(
    body: AdminAccountCreate,
    principal: SuperAdmin,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyHeader = None,
) -> AdminAccountCreated:
    idem = idempotency.make_request(principal, "admin.create", idempotency_key, body)
    return await service.create_account(session, body, idem, settings.bcrypt_rounds)


@router.get(
    "/admin/accounts", response_model=Page[AdminAccountPublic], summary="List admin accounts"
)
async def list_accounts(
    _: SuperAdmin, session: SessionDep, page: PageDep
) -> Page[AdminAccountPublic]:
    return await service.list_accounts(session, page)


@router.delete(
    "/admin/accounts/{account_id}",
    response_model=AdminAccountPublic,
    summary="Revoke an admin account; its key stops working at once",
)
async def revoke_account(
    account_id: PathId, _: SuperAdmin, session: SessionDep
) -> AdminAccountPublic:
    return await service.revoke_account(session, account_id)


@router.post(
    "/admin/accounts/{account_id}/profiles/{profile_id}",
    response_model=AdminProfileLinkPublic,
    summary="Link an admin account to a profile",
    responses=error_responses(409),  # `account_revoked`
)
async def link_profile(
    account_id: PathId, profile_id: PathId, _: SuperAdmin, session: SessionDep
) -> AdminProfileLinkPublic:
    return await service.set_link(session, account_id, profile_id, True)


@router.delete(
    "/admin/accounts/{account_id}/profiles/{profile_id}",
    response_model=AdminProfileLinkPublic,
    summary="Unlink an admin account from a profile",
)
async def unlink_profile(
    account_id: PathId, profile_id: PathId, _: SuperAdmin, session: SessionDep
) -> AdminProfileLinkPublic:
    return await service.set_link(session, account_id, profile_id, False)


@router.get("/me", response_model=Me, summary="Who the caller is", tags=["auth"])
async def me(principal: Caller) -> Me:
    return service.describe(principal)
