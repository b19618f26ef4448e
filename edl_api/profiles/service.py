"""Profiles (tenants) and their versioned pipeline configs."""

from __future__ import annotations

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api import idempotency, names
from edl_api.auth import keys
from edl_api.auth.principal import Principal
from edl_api.engine import config as engine_config
from edl_api.errors import Forbidden, NotFound, Unprocessable
from edl_api.feeds.hooks import drop_key_after_commit
from edl_api.models import (
    AdminAccount,
    AdminProfileLink,
    Indicator,
    Pipeline,
    PipelineRun,
    Profile,
    ProfileConfig,
    ProfileConfigVersion,
    utcnow,
)
from edl_api.pagination import Page, PageParams, paginate
from edl_api.profiles.schemas import (
    ConfigCreate,
    ConfigPublic,
    ConfigUsage,
    ConfigVersionPublic,
    ConfigWithUsage,
    ProfileBootstrapResponse,
    ProfileCreate,
    ProfilePublic,
    ProfileSummary,
)
from edl_api.profiles.yamlbody import sync_header
from edl_api.secrets import service as secrets_service


class InvalidConfig(Unprocessable):
    code = "invalid_config"


def validate_yaml(text: str, max_run_bytes: int | None = None) -> engine_config.PipelineConfig:
    """The engine's own model validates what the API stores: one language, one checker.
    `max_run_bytes` (EDL_RUN_MAX_BYTES): no source's max_bytes may exceed it."""
    try:
        return engine_config.load_config(text, max_run_bytes=max_run_bytes)
    except engine_config.ConfigError as exc:
        raise InvalidConfig([p.model_dump() for p in exc.problems]) from exc


async def validate_for_profile(
    session: AsyncSession, profile_id: int, text: str, max_run_bytes: int | None = None
) -> engine_config.PipelineConfig:
    """`validate_yaml`, and every `${secret:NAME}` must be a secret of this profile."""
    config = validate_yaml(text, max_run_bytes)
    problems = await secrets_service.missing_references(session, profile_id, config)
    if problems:
        raise InvalidConfig(problems)
    return config


# --- profiles -------------------------------------------------------------------------


async def create_profile(
    session: AsyncSession,
    principal: Principal,
    body: ProfileCreate,
    owner_admin_id: int | None,
    idem: idempotency.IdempotencyRequest | None,
    rounds: int,
) -> ProfileBootstrapResponse:
    async def create() -> ProfileBootstrapResponse:
        owner: int | None = None
        if owner_admin_id is not None:
            if principal.kind == "admin" and not principal.is_super_admin:
                if owner_admin_id != principal.id:
                    raise Forbidden("only a super-admin may create a profile for another admin")
            account = await session.get(AdminAccount, owner_admin_id)
            if account is None or account.revoked_at is not None:
                raise Unprocessable(
                    "owner_admin_id is not an active admin account", code="unknown_owner_admin"
                )
            owner = owner_admin_id
        elif principal.kind == "admin" and not principal.is_super_admin:
            owner = principal.id  # an operator's new profile is linked to it at once
        new_key = keys.generate_key(keys.PROFILE_PREFIX, rounds)
        profile = Profile(
            name=body.name,
            description=body.description,
            key_id=new_key.key_id,
            key_hash=new_key.key_hash,
            created_by_admin_id=principal.id if principal.kind == "admin" else None,
        )
        await names.add_unique(session, profile, "GET /profiles")
        assert profile.id is not None
        if owner is not None:
            session.add(AdminProfileLink(admin_id=owner, profile_id=profile.id))
            owner_account = await session.get(AdminAccount, owner)
            if owner_account is not None:
                owner_account.scope_changed_at = utcnow()  # other processes refresh its scope
                # The owner's cached scope must include the new profile now.
                drop_key_after_commit(session, owner_account.key_id)
            await session.flush()
        return ProfileBootstrapResponse(
            profile=ProfilePublic.model_validate(profile), api_key=new_key.plaintext
        )

    # The key itself is never stored: a replay returns the profile without it.
    return await idempotency.replay_or_create(
        session, idem, ProfileBootstrapResponse, create, secret="api_key"
    )


async def list_profiles(
    session: AsyncSession, principal: Principal, page: PageParams
) -> Page[ProfileSummary]:
    query = select(Profile).where(principal.scope_filter(col(Profile.id)))
    profiles = await paginate(session, query.order_by(col(Profile.id).desc()), page, ProfilePublic)
    ids = [p.id for p in profiles.items]
    live = col(Pipeline.deleted_at).is_(None)
    pipelines = dict(
        (
            await session.execute(
                select(col(Pipeline.profile_id), func.count())
                .where(col(Pipeline.profile_id).in_(ids), live)
                .group_by(col(Pipeline.profile_id))
            )
        ).all()
    )
    active = dict(
        (
            await session.execute(
                select(col(Pipeline.profile_id), func.count())
                .where(col(Pipeline.profile_id).in_(ids), live, col(Pipeline.is_active).is_(True))
                .group_by(col(Pipeline.profile_id))
            )
        ).all()
    )
    configs = dict(
        (
            await session.execute(
                select(col(ProfileConfig.profile_id), func.count())
                .where(
                    col(ProfileConfig.profile_id).in_(ids), col(ProfileConfig.deleted_at).is_(None)
                )
                .group_by(col(ProfileConfig.profile_id))
            )
        ).all()
    )
    last_runs = dict(
        (
            await session.execute(
                select(col(PipelineRun.profile_id), func.max(col(PipelineRun.created_at)))
                .where(col(PipelineRun.profile_id).in_(ids))
                .group_by(col(PipelineRun.profile_id))
            )
        ).all()
    )
    return profiles.with_items([
        ProfileSummary(
            **p.model_dump(),
            pipelines=pipelines.get(p.id, 0),
            active_pipelines=active.get(p.id, 0),
            configs=configs.get(p.id, 0),
            last_run_at=last_runs.get(p.id),
        )
        for p in profiles.items
    ])


async def get_profile(session: AsyncSession, principal: Principal, profile_id: int) -> Profile:
    query = select(Profile).where(
        col(Profile.id) == profile_id, principal.scope_filter(col(Profile.id))
    )
    profile = (await session.execute(query)).scalar_one_or_none()
    if profile is None:
        raise NotFound("not found")
    return profile



# --- configs --------------------------------------------------------------------------


def _version_row(config: ProfileConfig) -> ProfileConfigVersion:
    assert config.id is not None
    return ProfileConfigVersion(
        config_id=config.id,
        version=config.version,
        name=config.name,
        yaml=config.yaml,
        refresh_interval_minutes=config.refresh_interval_minutes,
        created_at=config.updated_at,
    )


async def create_config(
    session: AsyncSession,
    principal: Principal,
    profile_id: int,
    body: ConfigCreate,
    idem: idempotency.IdempotencyRequest | None,
    max_run_bytes: int | None = None,
) -> ConfigPublic:
    await get_profile(session, principal, profile_id)
    principal.require_profile(profile_id, write=True)

    async def create() -> ConfigPublic:
        await validate_for_profile(session, profile_id, body.yaml, max_run_bytes)
        config = ProfileConfig(
            profile_id=profile_id,
            name=body.name,
            # A `# edl:` comment is kept true to the name and interval in force.
            yaml=sync_header(body.yaml, body.name, body.refresh_interval_minutes),
            refresh_interval_minutes=body.refresh_interval_minutes,
        )
        session.add(config)
        await session.flush()
        session.add(_version_row(config))
        await session.flush()
        return ConfigPublic.model_validate(config)

    return await idempotency.replay_or_create(session, idem, ConfigPublic, create)


async def get_config(
    session: AsyncSession, principal: Principal, profile_id: int, config_id: int
) -> ProfileConfig:
    query = select(ProfileConfig).where(
        col(ProfileConfig.id) == config_id,
        col(ProfileConfig.profile_id) == profile_id,
        col(ProfileConfig.deleted_at).is_(None),
        principal.scope_filter(col(ProfileConfig.profile_id)),
    )
    config = (await session.execute(query)).scalar_one_or_none()
    if config is None:
        raise NotFound("not found")
    return config


async def get_config_in_scope(
    session: AsyncSession, principal: Principal, config_id: int
) -> ProfileConfig:
    """A config by id alone, as long as the caller may see its profile (else 404)."""
    query = select(ProfileConfig).where(
        col(ProfileConfig.id) == config_id,
        col(ProfileConfig.deleted_at).is_(None),
        principal.scope_filter(col(ProfileConfig.profile_id)),
    )
    config = (await session.execute(query)).scalar_one_or_none()
    if config is None:
        raise NotFound("profile config not found")
    return config


async def record_version(
    session: AsyncSession, config: ProfileConfig, text: str, name: str, interval: float | None
) -> None:
    """The config's next version (every write makes one; the old ones stay)."""
    config.yaml = sync_header(text, name, interval)
    config.name = name
    config.refresh_interval_minutes = interval
    config.version += 1
    config.updated_at = utcnow()
    session.add(_version_row(config))
    await session.flush()


async def config_usage(session: AsyncSession, config_ids: list[int]) -> dict[int, ConfigUsage]:
    usage = {cid: ConfigUsage() for cid in config_ids}
    if not config_ids:
        return usage
    live = col(Pipeline.deleted_at).is_(None)
    in_ids = col(Pipeline.profile_config_id).in_(config_ids)
    for cid, total, active in await session.execute(
        select(
            col(Pipeline.profile_config_id),
            func.count(),
            func.sum(case((col(Pipeline.is_active).is_(True), 1), else_=0)),
        )
        .where(in_ids, live)
        .group_by(col(Pipeline.profile_config_id))
    ):
        usage[cid].pipelines = total
        usage[cid].active_pipelines = int(active or 0)
    run_in = col(PipelineRun.profile_config_id).in_(config_ids)
    last_ids: list[int | None] = []
    for cid, runs, last_id in await session.execute(
        select(col(PipelineRun.profile_config_id), func.count(), func.max(col(PipelineRun.id)))
        .where(run_in)
        .group_by(col(PipelineRun.profile_config_id))
    ):
        usage[cid].runs = runs
        last_ids.append(last_id)
    # One query for every config's latest run, and only the columns shown (a run row also
    # carries its config snapshot and report).
    for cid, state, finished, started, created in await session.execute(
        select(
            col(PipelineRun.profile_config_id), col(PipelineRun.state),
            col(PipelineRun.finished_at), col(PipelineRun.started_at),
            col(PipelineRun.created_at),
        ).where(col(PipelineRun.id).in_(last_ids))
    ):
        usage[cid].last_run_at = finished or started or created
        usage[cid].last_run_state = state
    for cid, count in await session.execute(
        select(col(Pipeline.profile_config_id), func.count())
        .join(Indicator, col(Indicator.pipeline_id) == col(Pipeline.id))
        .where(in_ids, live, col(Pipeline.is_active).is_(True))
        .group_by(col(Pipeline.profile_config_id))
    ):
        usage[cid].indicators = count
    return usage


async def list_configs(
    session: AsyncSession, principal: Principal, profile_id: int, page: PageParams
) -> Page[ConfigWithUsage]:
    await get_profile(session, principal, profile_id)
    query = select(ProfileConfig).where(
        col(ProfileConfig.profile_id) == profile_id, col(ProfileConfig.deleted_at).is_(None)
    )
    configs = await paginate(
        session, query.order_by(col(ProfileConfig.id).desc()), page, ConfigPublic
    )
    usage = await config_usage(session, [c.id for c in configs.items])
    return configs.with_items(
        [ConfigWithUsage(**c.model_dump(), usage=usage[c.id]) for c in configs.items]
    )


async def list_versions(
    session: AsyncSession, principal: Principal, profile_id: int, config_id: int, page: PageParams
) -> Page[ConfigVersionPublic]:
    await get_config(session, principal, profile_id, config_id)
    query = select(ProfileConfigVersion).where(col(ProfileConfigVersion.config_id) == config_id)
    return await paginate(
        session,
        query.order_by(col(ProfileConfigVersion.version).desc()),
        page,
        ConfigVersionPublic,
    )


async def get_version(
    session: AsyncSession, principal: Principal, profile_id: int, config_id: int, version: int
) -> ConfigVersionPublic:
    await get_config(session, principal, profile_id, config_id)
    row = (
        await session.execute(
            select(ProfileConfigVersion).where(
                col(ProfileConfigVersion.config_id) == config_id,
                col(ProfileConfigVersion.version) == version,
            )
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFound("not found")
    return ConfigVersionPublic.model_validate(row)
