"""Authentication and the permission dependencies every route declares.

Each permission dependency carries `edl_permission`; a test walks `app.routes` and
fails on any route without one (deny by default).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api.auth import keys
from edl_api.auth.principal import Principal, Role
from edl_api.auth.verifier import Attempt, Refused
from edl_api.errors import Forbidden, Unauthorized, database_unavailable
from edl_api.fleet.spec import spec_of
from edl_api.models import AdminAccount, AdminProfileLink, Device, Profile
from edl_api.settings import Settings
from edl_api.state import AppState

F = TypeVar("F", bound=Callable[..., Any])


def permission(name: str) -> Callable[[F], F]:
    def mark(func: F) -> F:
        setattr(func, "edl_permission", name)  # noqa: B010  (read by the route-walk test)
        return func

    return mark


def _admin_role(role: str) -> Role:
    return "operator" if role == "operator" else "reader"


def _legacy_role(role: str) -> Role:
    return "super" if role == "super" else _admin_role(role)


def legacy_principals(settings: Settings) -> list[tuple[str, Principal]]:
    """(secret, principal) of every legacy key, in `Settings.legacy_keys` order."""
    principals = []
    for secret, role in settings.legacy_keys():
        scope = "legacy:" + hashlib.sha256(secret.encode()).hexdigest()[:16]
        principals.append((secret, Principal(
            "legacy", _legacy_role(role), is_super_admin=role == "super",
            profile_ids=None, scope_key=scope,
        )))
    return principals


class _Hashed(Protocol):
    key_hash: str


H = TypeVar("H", bound=_Hashed)


async def _checked(attempt: Attempt, secret: str, row: H | None) -> H | None:
    """`row` if `secret` matches its hash. A missing row (unknown or revoked id) costs the
    same one bcrypt, against a dummy hash, so timing does not tell which ids exist."""
    return row if await attempt.check(secret, None if row is None else row.key_hash) else None


async def _load_principal(
    session: AsyncSession, parsed: keys.ParsedKey, attempt: Attempt
) -> Principal | None:
    """Who the key is, or None; every outcome costs one bcrypt (`_checked`)."""
    if parsed.prefix == keys.ADMIN_PREFIX:
        account = (
            await session.execute(
                select(AdminAccount).where(
                    col(AdminAccount.key_id) == parsed.key_id,
                    col(AdminAccount.revoked_at).is_(None),
                )
            )
        ).scalar_one_or_none()
        account = await _checked(attempt, parsed.secret, account)
        if account is None:
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
        profile = await _checked(attempt, parsed.secret, profile)
        if profile is None:
            return None
        assert profile.id is not None
        return Principal(
            "profile",
            "profile",
            id=profile.id,
            profile_ids=frozenset({profile.id}),
            scope_key=f"profile:{profile.id}",
        )
    device = (
        await session.execute(
            select(Device).where(
                col(Device.key_id) == parsed.key_id, col(Device.revoked_at).is_(None)
            )
        )
    ).scalar_one_or_none()
    device = await _checked(attempt, parsed.secret, device)
    if device is None:
        return None
    spec = spec_of(device)
    if spec.budgeted:  # it reads exactly its declared feeds
        pipeline_ids: frozenset[int] | None = frozenset(f.pipeline_id for f in spec.feeds)
    else:
        pipeline_ids = None if device.pipeline_ids is None else frozenset(device.pipeline_ids)
    return Principal(
        "feed_token",
        "feed",
        id=device.id,
        profile_ids=frozenset({device.profile_id}),
        pipeline_ids=pipeline_ids,
        scope_key=f"feed_token:{device.id}",
        device=spec,
    )


async def authenticate(request: Request, *, allow_basic: bool = False) -> Principal:
    key = keys.extract_key(request.headers, allow_basic)
    if not key or len(key) > keys.MAX_KEY_LENGTH:
        raise Unauthorized(basic=allow_basic)
    state = AppState.of(request.app)
    principal = state.principals.get(key)  # the feed fast path asks the same
    if principal is not None:
        return principal
    parsed = keys.parse_key(key)
    if parsed is None or state.rejected_keys.rejected(key):
        raise Unauthorized(basic=allow_basic)
    # One verification per key at a time: when a key's cache entry expires, the polls that
    # arrive together with it wait for that one bcrypt instead of each queueing their own
    # (past `bcrypt_max_pending` they would be refused).
    digest = state.key_cache.digest(key)
    pending = state.verifying.get(digest)
    if pending is None:
        pending = asyncio.ensure_future(_verify(state, key, parsed, digest))
        state.verifying[digest] = pending
        pending.add_done_callback(lambda done: _forget(state, digest, done))
    principal = await asyncio.shield(pending)  # a caller that goes away leaves it running
    if principal is None:
        raise Unauthorized(basic=allow_basic)
    return principal


def _forget(state: AppState, digest: bytes, done: asyncio.Future[Principal | None]) -> None:
    state.verifying.pop(digest, None)
    if not done.cancelled():
        done.exception()  # retrieved: no "never retrieved" warning when every caller left


async def _verify(
    state: AppState, key: str, parsed: keys.ParsedKey, digest: bytes
) -> Principal | None:
    """Who `key` is (cached), None when it is refused."""
    try:
        attempt = state.verifier.admit(f"{parsed.prefix}_{parsed.key_id}", digest)
    except Refused:  # cooling down or queue full: not remembered as rejected (may be right)
        return None
    try:
        with attempt:
            async with state.sessionmaker() as session:
                principal = await _load_principal(session, parsed, attempt)
    except Exception as exc:
        # The database is down: a key this process verified before keeps its last answer.
        stale = state.key_cache.get_stale(key) if database_unavailable(exc) else None
        if stale is None:
            raise
        return stale
    if principal is None:
        state.rejected_keys.reject(key)
        return None
    state.key_cache.put(key, parsed.key_id, principal)
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
