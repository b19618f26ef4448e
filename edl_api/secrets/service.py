"""A profile's secrets: put, list, delete, and the checks configs and runs rely on.

Every lookup is by (profile, name) inside the caller's scope: another profile's secret of
the same name is never read, and a config's reference to a name its profile lacks gets
the same answer whether or not another profile has it.
"""

from __future__ import annotations

import os
import re

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api.auth.principal import Principal
from edl_api.engine.config import PipelineConfig
from edl_api.engine.document import problem
from edl_api.errors import Conflict, Forbidden, NotFound, Unprocessable
from edl_api.models import Profile, ProfileConfig, ProfileSecret, utcnow
from edl_api.pagination import Page, PageParams
from edl_api.secrets.crypto import keyring
from edl_api.secrets.schemas import SecretPublic, SecretPut
from edl_api.settings import Settings

MAX_SECRETS_PER_PROFILE = 256


class SecretInUse(Conflict):
    code = "secret_in_use"


async def _profile_in_scope(
    session: AsyncSession, principal: Principal, profile_id: int, *, write: bool
) -> None:
    """404 for a profile outside the caller's scope (same as missing), 403 read-only."""
    found = (
        await session.execute(
            select(col(Profile.id)).where(
                col(Profile.id) == profile_id, principal.scope_filter(col(Profile.id))
            )
        )
    ).scalar_one_or_none()
    if found is None:
        raise NotFound("not found")
    principal.require_profile(profile_id, write=write)


async def _get(session: AsyncSession, profile_id: int, name: str) -> ProfileSecret | None:
    return (
        await session.execute(
            select(ProfileSecret).where(
                col(ProfileSecret.profile_id) == profile_id, col(ProfileSecret.name) == name
            )
        )
    ).scalar_one_or_none()


def public(secret: ProfileSecret) -> SecretPublic:
    return SecretPublic(
        name=secret.name, source="env" if secret.from_env else "value",
        from_env=secret.from_env, created_at=secret.created_at, updated_at=secret.updated_at,
    )


async def put_secret(
    session: AsyncSession, principal: Principal, settings: Settings, profile_id: int,
    name: str, body: SecretPut,
) -> None:
    await _profile_in_scope(session, principal, profile_id, write=True)
    if body.from_env is not None:
        if not principal.is_super_admin:
            raise Forbidden("only a super-admin may grant an environment variable")
        if body.from_env not in os.environ:
            raise Unprocessable(
                f"{body.from_env} is not set in the service's environment", code="unknown_env"
            )
    ciphertext = None if body.value is None else keyring(settings).encrypt(body.value)
    secret = await _get(session, profile_id, name)
    if secret is None:
        count = (
            await session.execute(
                select(func.count()).where(col(ProfileSecret.profile_id) == profile_id)
            )
        ).scalar_one()
        if count >= MAX_SECRETS_PER_PROFILE:
            raise Unprocessable(
                f"a profile may have at most {MAX_SECRETS_PER_PROFILE} secrets",
                code="too_many_secrets",
            )
        try:
            async with session.begin_nested():  # a concurrent PUT of the same name may win
                session.add(ProfileSecret(
                    profile_id=profile_id, name=name, ciphertext=ciphertext,
                    from_env=body.from_env,
                ))
            return
        except IntegrityError:
            secret = await _get(session, profile_id, name)
            if secret is None:
                raise
    secret.ciphertext, secret.from_env = ciphertext, body.from_env
    secret.updated_at = utcnow()
    await session.flush()


async def list_secrets(
    session: AsyncSession, principal: Principal, profile_id: int, page: PageParams
) -> Page[SecretPublic]:
    await _profile_in_scope(session, principal, profile_id, write=False)
    query = (
        select(ProfileSecret)
        .where(col(ProfileSecret.profile_id) == profile_id)
        .order_by(col(ProfileSecret.name))
    )
    total = (
        await session.execute(
            select(func.count()).where(col(ProfileSecret.profile_id) == profile_id)
        )
    ).scalar_one()
    rows = (await session.execute(query.limit(page.limit).offset(page.offset))).scalars()
    return Page(
        items=[public(row) for row in rows], total=int(total),
        limit=page.limit, offset=page.offset,
    )


def referencing(yaml_text: str, name: str) -> bool:
    return re.search(r"\$\{secret:" + re.escape(name) + r"\}", yaml_text) is not None


async def delete_secret(
    session: AsyncSession, principal: Principal, profile_id: int, name: str
) -> None:
    """Refused (409, naming them) while a config of the profile still references it: the
    next run of that config would fail."""
    await _profile_in_scope(session, principal, profile_id, write=True)
    if await _get(session, profile_id, name) is None:
        raise NotFound("no such secret")
    configs = (
        await session.execute(
            select(col(ProfileConfig.id), col(ProfileConfig.name), col(ProfileConfig.yaml))
            .where(col(ProfileConfig.profile_id) == profile_id)
            .order_by(col(ProfileConfig.id))
        )
    ).all()
    users = [f"{cid} ({cname})" for cid, cname, text in configs if referencing(text, name)]
    if users:
        raise SecretInUse(
            f"configs still reference ${{secret:{name}}}: {', '.join(users[:20])}; "
            "remove the references first"
        )
    await session.execute(
        delete(ProfileSecret).where(
            col(ProfileSecret.profile_id) == profile_id, col(ProfileSecret.name) == name
        )
    )


async def missing_references(
    session: AsyncSession, profile_id: int, config: PipelineConfig
) -> list[dict[str, object]]:
    """Config problems (the `invalid_config` shape) for each `${secret:NAME}` that the
    profile does not have. Only this profile's names are looked at."""
    refs = config.secret_references()
    if not refs:
        return []
    have = set(
        (
            await session.execute(
                select(col(ProfileSecret.name)).where(
                    col(ProfileSecret.profile_id) == profile_id,
                    col(ProfileSecret.name).in_(list(refs)),
                )
            )
        ).scalars()
    )
    return [
        problem(
            None, field,
            f"${{secret:{name}}} is not a secret of this profile "
            f"(create it with PUT /profiles/{profile_id}/secrets/{name})",
        ).model_dump()
        for name, fields in refs.items() if name not in have
        for field in fields
    ]
