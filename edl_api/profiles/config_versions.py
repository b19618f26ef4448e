"""A config's lifecycle past creation: PATCH by section, replace (PUT), diff two versions,
restore one, delete; and the `warnings` every config write answers with."""

from __future__ import annotations

import difflib
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api.auth.principal import Principal
from edl_api.engine import config as engine_config
from edl_api.errors import Conflict, Unprocessable
from edl_api.models import Pipeline, ProfileConfig, utcnow
from edl_api.profiles import service, yamledit
from edl_api.profiles.schemas import (
    ConfigDiff,
    ConfigPatch,
    ConfigPublic,
    ConfigReplace,
    ConfigWritten,
)
from edl_api.runs.scheduler import refresh_warnings
from edl_api.settings import Settings

# Pipelines named in a 409 `config_in_use` (the count is always given).
NAMED_PIPELINES = 20


def written(config: ConfigPublic | ProfileConfig, settings: Settings) -> ConfigWritten:
    """A write's answer: the config and its warnings (e.g. an interval nothing honours)."""
    public = ConfigPublic.model_validate(config)
    return ConfigWritten(
        **public.model_dump(),
        warnings=refresh_warnings(settings, public.refresh_interval_minutes),
    )


async def patch_config(
    session: AsyncSession,
    principal: Principal,
    profile_id: int,
    config_id: int,
    body: ConfigPatch,
    max_run_bytes: int | None = None,
) -> ConfigPublic:
    config = await service.get_config(session, principal, profile_id, config_id)
    principal.require_profile(profile_id, write=True)
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        raise Unprocessable("nothing to change", code="validation_error")
    if "name" in changes and changes["name"] is None:
        raise Unprocessable("name may not be null", code="validation_error")
    if "yaml" in changes and changes["yaml"] is None:
        raise Unprocessable("yaml may not be null", code="validation_error")
    text = changes.get("yaml", config.yaml)
    sections = {k: changes[k] for k in engine_config.SECTIONS if k in changes}
    if sections:
        try:
            # Round-trip: comments, order and every untouched line stay as stored.
            text = yamledit.patch_sections(text, sections)
        except engine_config.ConfigError as exc:
            raise service.InvalidConfig([p.model_dump() for p in exc.problems]) from exc
    if "yaml" in changes or sections:
        try:
            await service.validate_for_profile(session, profile_id, text, max_run_bytes)
        except service.InvalidConfig as exc:
            if sections:
                # Lines are those of the document the PATCH would have stored: quote each.
                exc.detail = [
                    quote_line(p, text) if isinstance(p, dict) else p for p in exc.detail
                ]
            raise
    await service.record_version(
        session, config, text,
        changes.get("name", config.name),
        changes.get("refresh_interval_minutes", config.refresh_interval_minutes),
    )
    return ConfigPublic.model_validate(config)


def quote_line(problem: dict[str, Any], text: str) -> dict[str, Any]:
    """A problem with the text of its line (`text`), for a document the caller never saw."""
    line = problem.get("line")
    lines = text.splitlines()
    if isinstance(line, int) and 1 <= line <= len(lines):
        return {**problem, "text": lines[line - 1]}
    return problem


async def replace_config(
    session: AsyncSession,
    principal: Principal,
    profile_id: int,
    config_id: int,
    body: ConfigReplace,
    max_run_bytes: int | None = None,
) -> ProfileConfig:
    config = await service.get_config(session, principal, profile_id, config_id)
    principal.require_profile(profile_id, write=True)
    await service.validate_for_profile(session, profile_id, body.yaml, max_run_bytes)
    given = body.model_fields_set
    await service.record_version(
        session, config, body.yaml,
        body.name if "name" in given and body.name is not None else config.name,
        body.refresh_interval_minutes if "refresh_interval_minutes" in given
        else config.refresh_interval_minutes,
    )
    return config


async def restore_version(
    session: AsyncSession,
    principal: Principal,
    profile_id: int,
    config_id: int,
    version: int,
    max_run_bytes: int | None = None,
) -> ProfileConfig:
    """A new version equal to `version` (name, YAML, interval). It is validated again: a
    secret it names may be gone, or a limit lower than when it was written."""
    old = await service.get_version(session, principal, profile_id, config_id, version)
    config = await service.get_config(session, principal, profile_id, config_id)
    principal.require_profile(profile_id, write=True)
    await service.validate_for_profile(session, profile_id, old.yaml, max_run_bytes)
    await service.record_version(
        session, config, old.yaml, old.name, old.refresh_interval_minutes
    )
    return config


async def diff_versions(
    session: AsyncSession,
    principal: Principal,
    profile_id: int,
    config_id: int,
    a: int,
    b: int,
) -> ConfigDiff:
    first = await service.get_version(session, principal, profile_id, config_id, a)
    second = await service.get_version(session, principal, profile_id, config_id, b)
    diff = "".join(
        difflib.unified_diff(
            _lines(first.yaml), _lines(second.yaml),
            fromfile=f"version {a}", tofile=f"version {b}",
        )
    )
    changes: dict[str, list[object]] = {}
    for name in ("name", "refresh_interval_minutes"):
        before, after = getattr(first, name), getattr(second, name)
        if before != after:
            changes[name] = [before, after]
    return ConfigDiff(config_id=config_id, from_version=a, to_version=b, diff=diff,
                      changes=changes)


def _lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


async def delete_config(
    session: AsyncSession, principal: Principal, profile_id: int, config_id: int
) -> None:
    """Gone for the API (404 from now on). Refused while a live pipeline uses it: those
    would have nothing to run. The row stays for past runs' and deleted pipelines' history."""
    config = await service.get_config(session, principal, profile_id, config_id)
    principal.require_profile(profile_id, write=True)
    users = (
        await session.execute(
            select(col(Pipeline.id), col(Pipeline.name))
            .where(col(Pipeline.profile_config_id) == config_id, col(Pipeline.deleted_at).is_(None))
            .order_by(col(Pipeline.id))
        )
    ).all()
    if users:
        named = ", ".join(f"{name!r} (id {pid})" for pid, name in users[:NAMED_PIPELINES])
        more = f" and {len(users) - NAMED_PIPELINES} more" if len(users) > NAMED_PIPELINES else ""
        raise Conflict(
            {
                "message": f"config {config.name!r} is used by {len(users)} live pipeline(s): "
                f"{named}{more}; point them at another config (PATCH /pipelines/{{id}} "
                "profile_config_id) or delete them first",
                "pipeline_count": len(users),
                "pipelines": [{"id": pid, "name": name} for pid, name in users[:100]],
            },
            code="config_in_use",
        )
    config.deleted_at = utcnow()
    await session.flush()
