"""Claiming queued runs: the database is the queue.

One short transaction counts the running runs and flips chosen queued rows to
`running` with a conditional update (`WHERE state = 'queued'`), so a run cancelled
in the same instant is never started. On PostgreSQL a transaction-scoped advisory
lock serialises claim decisions across processes (the total, per-profile and
per-pipeline caps hold between API and worker processes) and candidates are locked
`FOR UPDATE SKIP LOCKED` (a row another transaction is touching is skipped, never
waited on). SQLite is one process: its dispatcher is the only claimer.

Fair across profiles: the candidates are only runs that fit the caps — per pipeline its
oldest queued runs up to its free slots, then per profile the oldest of those up to the
profile's free slots — taken round-robin (every profile's first, then every second…),
oldest first within a round. However many runs one profile queues, they fill only that
profile's slots, never the window another profile's run is looked for in.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, Subquery, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from edl_api.db import serialize_claims
from edl_api.models import Pipeline, PipelineRun, utcnow
from edl_api.runs.state import RunState, check_transition
from edl_api.settings import Settings

# Queued runs of deleted pipelines cancelled per claim (the rest on the next ones).
ORPHAN_BATCH = 200


def _running_by(column: Any) -> Subquery:
    return (
        select(column.label("key"), func.count().label("running"))
        .where(col(PipelineRun.state) == RunState.RUNNING)
        .group_by(column)
        .subquery()
    )


def _candidates(settings: Settings, free_total: int) -> Select[Any]:
    """Queued runs that fit the per-pipeline and per-profile caps, in claim order."""
    by_pipeline = _running_by(col(PipelineRun.pipeline_id))
    by_profile = _running_by(col(PipelineRun.profile_id))
    age = (col(PipelineRun.created_at), col(PipelineRun.id))
    limit = col(Pipeline.concurrency_limit)
    in_pipeline = (
        select(
            col(PipelineRun.id).label("id"), col(PipelineRun.profile_id).label("profile_id"),
            col(PipelineRun.created_at).label("created_at"),
            func.row_number().over(
                partition_by=col(PipelineRun.pipeline_id), order_by=age
            ).label("rank"),
            (case((limit < 1, 1), else_=limit) - func.coalesce(by_pipeline.c.running, 0))
            .label("free"),
        )
        .join(Pipeline, col(Pipeline.id) == col(PipelineRun.pipeline_id))
        .outerjoin(by_pipeline, by_pipeline.c.key == col(PipelineRun.pipeline_id))
        .where(col(PipelineRun.state) == RunState.QUEUED, col(Pipeline.deleted_at).is_(None))
        .subquery()
    )
    in_profile = (
        select(
            in_pipeline.c.id, in_pipeline.c.profile_id, in_pipeline.c.created_at,
            func.row_number().over(
                partition_by=in_pipeline.c.profile_id,
                order_by=(in_pipeline.c.created_at, in_pipeline.c.id),
            ).label("rank"),
        )
        .where(in_pipeline.c.rank <= in_pipeline.c.free)
        .subquery()
    )
    return (
        select(in_profile.c.id)
        .outerjoin(by_profile, by_profile.c.key == in_profile.c.profile_id)
        .where(in_profile.c.rank <= settings.max_concurrent_runs_per_profile
               - func.coalesce(by_profile.c.running, 0))
        .order_by(in_profile.c.rank, in_profile.c.created_at, in_profile.c.id)
        .limit(free_total)
    )


async def _cancel_orphans(session: AsyncSession) -> None:
    """Queued runs of a deleted pipeline never start: cancel them."""
    orphaned = (
        await session.execute(
            select(col(PipelineRun.id))
            .join(Pipeline, col(Pipeline.id) == col(PipelineRun.pipeline_id))
            .where(col(PipelineRun.state) == RunState.QUEUED, col(Pipeline.deleted_at).is_not(None))
            .limit(ORPHAN_BATCH)
            .with_for_update(skip_locked=True, of=PipelineRun)  # type: ignore[arg-type]
        )
    ).scalars().all()
    if orphaned:
        await session.execute(
            update(PipelineRun)
            .where(col(PipelineRun.id).in_(orphaned), col(PipelineRun.state) == RunState.QUEUED)
            .values(state=RunState.CANCELLED, finished_at=utcnow(),
                    errors=["the pipeline was deleted before the run started"])
        )


async def claim_runs(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], identity: str
) -> list[int]:
    """Flip as many queued runs to running as the caps allow; return their ids."""
    async with sessionmaker() as session, session.begin():
        await serialize_claims(session)
        await _cancel_orphans(session)
        running = (
            await session.execute(
                select(func.count()).select_from(PipelineRun)
                .where(col(PipelineRun.state) == RunState.RUNNING)
            )
        ).scalar_one()
        free_total = settings.max_concurrent_runs_total - int(running)
        if free_total <= 0:
            return []
        ranked = (await session.execute(_candidates(settings, free_total))).scalars().all()
        if not ranked:
            return []
        # PostgreSQL takes no row locks in a query with window functions: lock here.
        lockable = set(
            (
                await session.execute(
                    select(col(PipelineRun.id))
                    .where(col(PipelineRun.id).in_(ranked),
                           col(PipelineRun.state) == RunState.QUEUED)
                    .with_for_update(skip_locked=True)
                )
            ).scalars()
        )
        chosen = [run_id for run_id in ranked if run_id in lockable]
        if not chosen:
            return []
        now = utcnow()
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
