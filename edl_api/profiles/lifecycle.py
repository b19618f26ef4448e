"""Deleting a profile: soft at once (every scope treats it as missing), purged later.

`DELETE /profiles/{id}` refuses while the profile has live pipelines unless forced; forced,
it soft-deletes them, cancels their runs, and revokes the profile key and its devices'
credentials (here at commit, in other processes on their revocation poll). The rows stay
for EDL_DELETED_RETENTION_DAYS, then `purge_deleted` (the dispatcher's housekeeping)
deletes them, the foreign keys cascading to everything the profile owned.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api.auth.principal import Principal
from edl_api.errors import Conflict, Forbidden
from edl_api.feeds.hooks import drop_key_after_commit, drop_unions_after_commit, mark_changed
from edl_api.models import Device, Indicator, Pipeline, PipelineRun, Profile, utcnow
from edl_api.profiles import keys as profile_keys
from edl_api.profiles.schemas import ProfileDeleted
from edl_api.profiles.service import get_profile
from edl_api.runs.state import RunState

NAMED_PIPELINES = 20  # a 409 names this many live pipelines, then counts the rest


class ProfileInUse(Conflict):
    code = "profile_in_use"


def _in_use(profile_id: int, live: list[tuple[int, str]]) -> ProfileInUse:
    named = ", ".join(f"{pid} ({name!r})" for pid, name in live[:NAMED_PIPELINES])
    more = f" and {len(live) - NAMED_PIPELINES} more" if len(live) > NAMED_PIPELINES else ""
    return ProfileInUse(
        f"profile {profile_id} has {len(live)} live pipeline(s): {named}{more}; delete them "
        "first (DELETE /pipelines/{id}) or pass ?force=true to delete them with the profile"
    )


async def delete_profile(
    session: AsyncSession, principal: Principal, profile_id: int, *, force: bool,
    retention_days: float,
) -> ProfileDeleted:
    profile = await get_profile(session, principal, profile_id)  # 404 outside the scope
    if not (principal.is_admin and principal.can_write):
        raise Forbidden("only a super-admin or an operator linked to the profile may delete it")
    live: list[tuple[int, str]] = [
        (pid, name) for pid, name in await session.execute(
            select(col(Pipeline.id), col(Pipeline.name))
            .where(col(Pipeline.profile_id) == profile_id, col(Pipeline.deleted_at).is_(None))
            .order_by(col(Pipeline.id))
        ) if pid is not None
    ]
    if live and not force:
        raise _in_use(profile_id, live)
    now = utcnow()
    for pid, _ in live:
        mark_changed(session, pid)  # this process stops serving its cached feed at commit
    if live:
        await session.execute(
            update(Pipeline)
            .where(col(Pipeline.id).in_([pid for pid, _ in live]))
            .values(deleted_at=now, is_active=False)
            .execution_options(synchronize_session=False)
        )
    cancelled = await _cancel_runs(session, profile_id)
    await profile_keys.revoke_key(session, principal, profile_id)
    devices = (
        await session.execute(
            select(Device).where(
                col(Device.profile_id) == profile_id, col(Device.revoked_at).is_(None)
            )
        )
    ).scalars().all()
    for device in devices:
        device.revoked_at = device.updated_at = device.scope_changed_at = now
        drop_key_after_commit(session, device.key_id)
    profile.deleted_at = now
    await session.flush()
    drop_unions_after_commit(session)  # the global feeds of linked admins lose its pipelines
    assert profile.id is not None
    return ProfileDeleted(
        id=profile.id, name=profile.name, deleted_at=now,
        purge_after=now + timedelta(days=retention_days),
        pipelines_deleted=[pid for pid, _ in live], devices_revoked=len(devices),
        runs_cancelled=cancelled,
    )


async def _cancel_runs(session: AsyncSession, profile_id: int) -> int:
    """Queued runs end now; running ones are told to stop (their dispatcher sees the flag
    within seconds, and publishing refuses a deleted pipeline anyway)."""
    queued = await session.execute(
        update(PipelineRun)
        .where(col(PipelineRun.profile_id) == profile_id,
               col(PipelineRun.state) == RunState.QUEUED)
        .values(state=RunState.CANCELLED, cancel_requested=True, finished_at=utcnow(),
                errors=["the profile was deleted before the run started"])
        .execution_options(synchronize_session=False)
    )
    running = await session.execute(
        update(PipelineRun)
        .where(col(PipelineRun.profile_id) == profile_id,
               col(PipelineRun.state) == RunState.RUNNING)
        .values(cancel_requested=True)
        .execution_options(synchronize_session=False)
    )
    return int(queued.rowcount or 0) + int(running.rowcount or 0)  # type: ignore[attr-defined]


async def purge_deleted(session: AsyncSession, retention_days: float) -> list[int]:
    """Delete the profiles deleted more than `retention_days` ago, and (by the foreign
    keys' cascades) all they owned; returns their ids."""
    cutoff = utcnow() - timedelta(days=retention_days)
    ids = [
        pid for pid in (
            await session.execute(
                select(col(Profile.id)).where(
                    col(Profile.deleted_at).is_not(None), col(Profile.deleted_at) <= cutoff
                )
            )
        ).scalars() if pid is not None
    ]
    if ids:
        # The indicator store has no foreign key (migration 0015): its rows go explicitly.
        pipelines = select(col(Pipeline.id)).where(col(Pipeline.profile_id).in_(ids))
        await session.execute(
            delete(Indicator).where(col(Indicator.pipeline_id).in_(pipelines))
        )
        await session.execute(delete(Profile).where(col(Profile.id).in_(ids)))
    return ids
