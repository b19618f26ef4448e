"""Admin accounts and their profile links (super-admin only, enforced by the router)."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api import idempotency, names
from edl_api.auth import keys
from edl_api.auth.principal import Principal
from edl_api.auth.schemas import (
    AdminAccountCreate,
    AdminAccountCreated,
    AdminAccountPublic,
    AdminProfileLinkPublic,
    Me,
)
from edl_api.errors import Conflict, NotFound
from edl_api.feeds.hooks import drop_key_after_commit, drop_unions_after_commit
from edl_api.models import AdminAccount, AdminProfileLink, Profile, utcnow
from edl_api.pagination import Page, PageParams, paginate


async def create_account(
    session: AsyncSession,
    body: AdminAccountCreate,
    idem: idempotency.IdempotencyRequest | None,
    rounds: int,
) -> AdminAccountCreated:
    async def create() -> AdminAccountCreated:
        new_key = keys.generate_key(keys.ADMIN_PREFIX, rounds)
        account = AdminAccount(
            name=body.name,
            role=body.role,
            is_super_admin=body.is_super_admin,
            key_id=new_key.key_id,
            key_hash=new_key.key_hash,
        )
        await names.add_unique(session, account, "GET /admin/accounts")
        public = AdminAccountPublic.model_validate(account).model_dump()
        return AdminAccountCreated.model_validate(public | {"api_key": new_key.plaintext})

    # The key itself is never stored: a replay returns the account without it.
    return await idempotency.replay_or_create(
        session, idem, AdminAccountCreated, create, secret="api_key"
    )


async def list_accounts(session: AsyncSession, page: PageParams) -> Page[AdminAccountPublic]:
    query = select(AdminAccount).order_by(col(AdminAccount.id).desc())
    return await paginate(session, query, page, AdminAccountPublic)


async def _get_account(session: AsyncSession, account_id: int) -> AdminAccount:
    account = await session.get(AdminAccount, account_id)
    if account is None:
        raise NotFound("not found")
    return account


async def revoke_account(session: AsyncSession, account_id: int) -> AdminAccountPublic:
    account = await _get_account(session, account_id)
    if account.revoked_at is None:
        account.revoked_at = account.scope_changed_at = utcnow()
        await session.flush()
    drop_key_after_commit(session, account.key_id)
    return AdminAccountPublic.model_validate(account)


async def set_link(
    session: AsyncSession,
    account_id: int,
    profile_id: int,
    linked: bool,
) -> AdminProfileLinkPublic:
    account = await _get_account(session, account_id)
    profile = await session.get(Profile, profile_id)
    if profile is None or profile.deleted_at is not None:
        raise NotFound("not found")
    if linked and account.revoked_at is not None:
        raise Conflict("the account is revoked", code="account_revoked")
    existing = await session.get(AdminProfileLink, (account_id, profile_id))
    if linked and existing is None:
        session.add(AdminProfileLink(admin_id=account_id, profile_id=profile_id))
    elif not linked and existing is not None:
        await session.execute(
            delete(AdminProfileLink).where(
                col(AdminProfileLink.admin_id) == account_id,
                col(AdminProfileLink.profile_id) == profile_id,
            )
        )
    account.scope_changed_at = utcnow()  # other processes drop their cached scope
    await session.flush()
    # A cached principal carries its profile scope: a link change must take effect now,
    # and so must the global feed members cached for the scopes it changes.
    drop_key_after_commit(session, account.key_id)
    drop_unions_after_commit(session)
    return AdminProfileLinkPublic(admin_id=account_id, profile_id=profile_id, linked=linked)


def describe(principal: Principal) -> Me:
    return Me(
        kind=principal.kind,
        id=principal.id,
        role=principal.role,
        is_super_admin=principal.is_super_admin,
        profile_ids=None if principal.profile_ids is None else sorted(principal.profile_ids),
    )
