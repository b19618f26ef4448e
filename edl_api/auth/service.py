"""Admin accounts and their profile links (super-admin only, enforced by the router)."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api import idempotency
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
from edl_api.models import AdminAccount, AdminProfileLink, Profile, utcnow
from edl_api.pagination import Page, PageParams, paginate


async def create_account(
    session: AsyncSession,
    body: AdminAccountCreate,
    idem: idempotency.IdempotencyRequest | None,
    rounds: int,
) -> AdminAccountCreated:
    if idem is not None and (stored := await idempotency.replay(session, idem)) is not None:
        return AdminAccountCreated.model_validate(stored)
    new_key = keys.generate_key(keys.ADMIN_PREFIX, rounds)
    account = AdminAccount(
        name=body.name,
        role=body.role,
        is_super_admin=body.is_super_admin,
        key_id=new_key.key_id,
        key_hash=new_key.key_hash,
    )
    session.add(account)
    await session.flush()
    created = AdminAccountCreated.model_validate(
        {**AdminAccountPublic.model_validate(account).model_dump(), "api_key": new_key.plaintext}
    )
    if idem is not None:
        # The key itself is never stored: a replay returns the account without it.
        stored = await idempotency.remember(
            session, idem, created.model_dump(mode="json") | {"api_key": None}
        )
        if stored["id"] != created.id:
            return AdminAccountCreated.model_validate(stored)
    return created


async def list_accounts(session: AsyncSession, page: PageParams) -> Page[AdminAccountPublic]:
    rows, total = await paginate(
        session, select(AdminAccount).order_by(col(AdminAccount.id).desc()), page
    )
    return Page(
        items=[AdminAccountPublic.model_validate(a) for a in rows],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


async def _get_account(session: AsyncSession, account_id: int) -> AdminAccount:
    account = await session.get(AdminAccount, account_id)
    if account is None:
        raise NotFound("not found")
    return account


async def revoke_account(
    session: AsyncSession, account_id: int, cache: keys.VerifiedKeyCache[Principal]
) -> AdminAccountPublic:
    account = await _get_account(session, account_id)
    if account.revoked_at is None:
        account.revoked_at = account.scope_changed_at = utcnow()
        await session.flush()
    cache.drop_key_id(account.key_id)
    return AdminAccountPublic.model_validate(account)


async def set_link(
    session: AsyncSession,
    account_id: int,
    profile_id: int,
    linked: bool,
    cache: keys.VerifiedKeyCache[Principal],
) -> AdminProfileLinkPublic:
    account = await _get_account(session, account_id)
    if await session.get(Profile, profile_id) is None:
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
    # Cached principals carry their profile scope: a link change must take effect now.
    cache.clear()
    return AdminProfileLinkPublic(admin_id=account_id, profile_id=profile_id, linked=linked)


def describe(principal: Principal) -> Me:
    return Me(
        kind=principal.kind,
        id=principal.id,
        role=principal.role,
        is_super_admin=principal.is_super_admin,
        profile_ids=None if principal.profile_ids is None else sorted(principal.profile_ids),
    )
