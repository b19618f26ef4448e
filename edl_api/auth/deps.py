"""Authentication and the permission dependencies every route declares.

Each permission dependency carries `edl_permission`; a test walks `app.routes` and
fails on any route without one (deny by default).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from edl_api.auth import keys
from edl_api.auth.principal import Principal, Role
from edl_api.errors import Forbidden, Unauthorized
from edl_api.models import AdminAccount, AdminProfileLink, FeedToken, Profile
from edl_api.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def permission(name: str) -> Callable[[F], F]:
    def mark(func: F) -> F:
        setattr(func, "edl_permission", name)  # noqa: B010  (read by the route-walk test)
        return func

    return mark


def _extract_key(request: Request, *, allow_basic: bool) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = request.headers.get("authorization")
    if not auth:
        return None
    scheme, _, value = auth.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip()
    if scheme == "basic" and allow_basic:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        # Firewalls can only send user:password; the key is the password.
        return decoded.partition(":")[2].strip() or None
    return None


def _admin_role(role: str) -> Role:
    return "operator" if role == "operator" else "reader"


def _legacy_role(role: str) -> Role:
    return "super" if role == "super" else _admin_role(role)


def _legacy_principal(settings: Settings, key: str) -> Principal | None:
    """Constant-time comparison against every legacy key (no early exit)."""
    found: Principal | None = None
    scope = "legacy:" + hashlib.sha256(key.encode()).hexdigest()[:16]
    for candidate, role in settings.legacy_keys():
        if hmac.compare_digest(candidate.encode(), key.encode()) and found is None:
            found = Principal(
                "legacy", _legacy_role(role), is_super_admin=role == "super",
                profile_ids=None, scope_key=scope,
            )
    return found


async def _load_principal(session: AsyncSession, parsed: keys.ParsedKey) -> Principal | None:
    if parsed.prefix == keys.ADMIN_PREFIX:
        account = (
            await session.execute(
                select(AdminAccount).where(
                    col(AdminAccount.key_id) == parsed.key_id,
                    col(AdminAccount.revoked_at).is_(None),
                )
            )
        ).scalar_one_or_none()
        if account is None or not await asyncio.to_thread(
            keys.verify_secret, parsed.secret, account.key_hash
        ):
            return None
        if account.is_super_admin:
            profile_ids: frozenset[int] | None = None
        else:
            rows = await session.execute(
                select(col(AdminProfileLink.profile_id)).where(
                    col(AdminProfileLink.admin_id) == account.id
                )
            )
            profile_ids = frozenset(rows.scalars())
        role: Role = "super" if account.is_super_admin else _admin_role(account.role)
        return Principal(
            "admin",
            role,
            id=account.id,
            is_super_admin=account.is_super_admin,
            profile_ids=profile_ids,
            scope_key=f"admin:{account.id}",
        )
    if parsed.prefix == keys.PROFILE_PREFIX:
        profile = (
            await session.execute(select(Profile).where(col(Profile.key_id) == parsed.key_id))
        ).scalar_one_or_none()
        if (
            profile is None
            or profile.id is None
            or not await asyncio.to_thread(keys.verify_secret, parsed.secret, profile.key_hash)
        ):
            return None
        return Principal(
            "profile",
            "profile",
            id=profile.id,
            profile_ids=frozenset({profile.id}),
            scope_key=f"profile:{profile.id}",
        )
    token = (
        await session.execute(
            select(FeedToken).where(
                col(FeedToken.key_id) == parsed.key_id, col(FeedToken.revoked_at).is_(None)
            )
        )
    ).scalar_one_or_none()
    if token is None or not await asyncio.to_thread(
        keys.verify_secret, parsed.secret, token.key_hash
    ):
        return None
    return Principal(
        "feed_token",
        "feed",
        id=token.id,
        profile_ids=frozenset({token.profile_id}),
        pipeline_ids=None if token.pipeline_ids is None else frozenset(token.pipeline_ids),
        scope_key=f"feed_token:{token.id}",
    )


async def authenticate(request: Request, *, allow_basic: bool = False) -> Principal:
    key = _extract_key(request, allow_basic=allow_basic)
    if not key:
        raise Unauthorized(basic=allow_basic)
    if len(key) > 256:
        raise Unauthorized(basic=allow_basic)
    state = request.app.state
    legacy = _legacy_principal(state.settings, key)
    if legacy is not None:
        return legacy
    parsed = keys.parse_key(key)
    if parsed is None:
        raise Unauthorized(basic=allow_basic)
    cache: keys.VerifiedKeyCache[Principal] = state.key_cache
    principal = cache.get(key)
    if principal is not None:
        return principal
    rejected: keys.RejectedKeyCache = state.rejected_keys
    if rejected.rejected(key):
        raise Unauthorized(basic=allow_basic)
    maker: async_sessionmaker[AsyncSession] = state.sessionmaker
    async with maker() as session:
        principal = await _load_principal(session, parsed)
    if principal is None:
        rejected.reject(key)
        raise Unauthorized(basic=allow_basic)
    cache.put(key, parsed.key_id, principal)
    return principal


@permission("public")
async def public() -> None:
    """Explicitly open route (health checks, docs)."""


@permission("any_api_caller")
async def any_api_caller(request: Request) -> Principal:
    principal = await authenticate(request)
    if principal.kind == "feed_token":
        raise Forbidden("a feed token may only read feeds")
    return principal


@permission("writer")
async def writer(request: Request) -> Principal:
    principal = await any_api_caller(request)
    if not principal.can_write:
        raise Forbidden("this key may not change anything")
    return principal


@permission("admin")
async def admin_caller(request: Request) -> Principal:
    principal = await any_api_caller(request)
    if not principal.is_admin:
        raise Forbidden("admin key required")
    return principal


@permission("profile_creator")
async def profile_creator(request: Request) -> Principal:
    principal = await admin_caller(request)
    if principal.role not in ("super", "operator"):
        raise Forbidden("operator or super-admin key required")
    return principal


@permission("super_admin")
async def super_admin(request: Request) -> Principal:
    principal = await admin_caller(request)
    if not principal.is_super_admin:
        raise Forbidden("super-admin key required")
    return principal


@permission("feed_reader")
async def feed_reader(request: Request) -> Principal:
    return await authenticate(request, allow_basic=True)


Caller = Annotated[Principal, Depends(any_api_caller)]
Writer = Annotated[Principal, Depends(writer)]
AdminCaller = Annotated[Principal, Depends(admin_caller)]
ProfileCreator = Annotated[Principal, Depends(profile_creator)]
SuperAdmin = Annotated[Principal, Depends(super_admin)]
FeedReader = Annotated[Principal, Depends(feed_reader)]
