"""Claiming queued runs: the database is the queue.

One short transaction counts the running runs and flips chosen queued rows to
`running` with a conditional update (`WHERE state = 'queued'`), so a run cancelled
in the same instant is never started. On PostgreSQL a transaction-scoped advisory
lock serialises claim decisions across processes (the total, per-profile and
per-pipeline caps hold between API and worker processes) and candidates are read
`FOR UPDATE SKIP LOCKED` (a row another transaction is touching is skipped, never
waited on). SQLite is one process: its dispatcher is the only claimer.
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from edl_api.db import serialize_claims
from edl_api.models import Pipeline, PipelineRun, utcnow
from edl_api.runs.state import RunState, check_transition
from edl_api.settings import Settings

CLAIM_BATCH = 200


async def claim_runs(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], identity: str
) -> list[int]:
    """Flip as many queued runs to running as the caps allow; return their ids."""
    async with sessionmaker() as session, session.begin():
        await serialize_claims(session)
        running = (
            await session.execute(
                select(col(PipelineRun.profile_id), col(PipelineRun.pipeline_id), func.count())
                .where(col(PipelineRun.state) == RunState.RUNNING)
                .group_by(col(PipelineRun.profile_id), col(PipelineRun.pipeline_id))
            )
        ).all()
        total = sum(int(n) for _, _, n in running)
        if total >= settings.max_concurrent_runs_total:
            return []
        per_profile: dict[int, int] = {}
        per_pipeline: dict[int, int] = {}
        for profile_id, pipeline_id, count in running:
            per_profile[profile_id] = per_profile.get(profile_id, 0) + int(count)
            per_pipeline[pipeline_id] = per_pipeline.get(pipeline_id, 0) + int(count)
        candidates = (
            await session.execute(
                select(
                    col(PipelineRun.id), col(PipelineRun.profile_id),
                    col(PipelineRun.pipeline_id), col(Pipeline.concurrency_limit),
                    col(Pipeline.deleted_at),
                )
                .join(Pipeline, col(Pipeline.id) == col(PipelineRun.pipeline_id))
                .where(col(PipelineRun.state) == RunState.QUEUED)
                .order_by(col(PipelineRun.created_at), col(PipelineRun.id))
                .limit(CLAIM_BATCH)
                .with_for_update(skip_locked=True, of=PipelineRun)  # type: ignore[arg-type]
            )
        ).all()
        chosen: list[int] = []
        orphaned: list[int] = []
        for row_id, profile_id, pipeline_id, limit, deleted_at in candidates:
            run_id = int(row_id or 0)
            if deleted_at is not None:
                orphaned.append(run_id)
                continue
            if total >= settings.max_concurrent_runs_total:
                break
            if per_profile.get(profile_id, 0) >= settings.max_concurrent_runs_per_profile:
                continue
            if per_pipeline.get(pipeline_id, 0) >= max(1, limit):
                continue
            chosen.append(run_id)
            total += 1
            per_profile[profile_id] = per_profile.get(profile_id, 0) + 1
            per_pipeline[pipeline_id] = per_pipeline.get(pipeline_id, 0) + 1
        now = utcnow()
        if orphaned:
            await session.execute(
                update(PipelineRun)
                .where(col(PipelineRun.id).in_(orphaned),
                       col(PipelineRun.state) == RunState.QUEUED)
                .values(state=RunState.CANCELLED, finished_at=now,
                        errors=["the pipeline was deleted before the run started"])
            )
        if not chosen:
            return []
        claimed = (
            await session.execute(
                update(PipelineRun)
                .where(col(PipelineRun.id).in_(chosen), col(PipelineRun.state) == RunState.QUEUED)
                .values(state=RunState.RUNNING, started_at=now, heartbeat_at=now,
                        worker=identity, progress={"stage": "claimed"})
                .returning(col(PipelineRun.id))
            )
        ).scalars().all()
    ids = sorted(int(run_id) for run_id in claimed if run_id is not None)
    for claimed_id in ids:
        check_transition(claimed_id, RunState.QUEUED, RunState.RUNNING)
    return ids


async def owned_run(session: AsyncSession, run_id: int, owner: str) -> PipelineRun | None:
    """The run's row, locked, while it is `running` and `owner` still holds it (recovery
    on another process, or a cancel of a deleted pipeline, may have taken it since)."""
    run = (
        await session.execute(
            select(PipelineRun).where(col(PipelineRun.id) == run_id).with_for_update()
        )
    ).scalar_one_or_none()
    if run is None or run.state != RunState.RUNNING or run.worker != owner:
        return None
    return run
