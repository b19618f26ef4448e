"""Re-queue runs interrupted because their process died (EDL_RETRY_INTERRUPTED).

The retry is a fresh queued row that names the run it retries (`retry_of_run_id`) and
repeats what it would have done: same pipeline, config version and snapshot, mode,
persist, timeout, reason and overrides. It gets no schedule slot (the interrupted run
holds it: unique per pipeline), and the scheduler's next slot comes as usual. A run whose
retry chain is already EDL_RETRY_INTERRUPTED long stays interrupted, as does one whose
pipeline is deleted or inactive, or that already has a retry.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from edl_api.models import Pipeline, PipelineRun
from edl_api.runs.state import RunState

logger = logging.getLogger("edl_api.runs")


async def chain_length(session: AsyncSession, run: PipelineRun) -> int:
    """How many retries led to `run` (0 for a run nobody retried into)."""
    length, seen, parent = 0, {run.id}, run.retry_of_run_id
    while parent is not None and parent not in seen:
        seen.add(parent)
        length += 1
        parent = (
            await session.execute(
                select(col(PipelineRun.retry_of_run_id)).where(col(PipelineRun.id) == parent)
            )
        ).scalar_one_or_none()
    return length


async def retry_interrupted(
    sessionmaker: async_sessionmaker[AsyncSession], run_ids: list[int], max_retries: int
) -> dict[int, int]:
    """Queue a retry of each interrupted run that may have one: {interrupted id: retry id}."""
    queued: dict[int, int] = {}
    if max_retries <= 0:
        return queued
    for run_id in run_ids:
        async with sessionmaker() as session, session.begin():
            run = await session.get(PipelineRun, run_id)
            if run is None or run.state != RunState.INTERRUPTED:
                continue  # e.g. `succeeded`: its feeds were published before the owner died
            already = (
                await session.execute(
                    select(col(PipelineRun.id)).where(col(PipelineRun.retry_of_run_id) == run_id)
                )
            ).first()
            if already is not None:
                continue
            if await chain_length(session, run) >= max_retries:
                logger.info("run %s: interrupted again; not retried (EDL_RETRY_INTERRUPTED=%d)",
                            run_id, max_retries)
                continue
            pipeline = await session.get(Pipeline, run.pipeline_id)
            if pipeline is None or pipeline.deleted_at is not None or not pipeline.is_active:
                continue
            retry = PipelineRun(
                pipeline_id=run.pipeline_id, profile_id=run.profile_id,
                profile_config_id=run.profile_config_id, config_version=run.config_version,
                config_snapshot=run.config_snapshot, state=RunState.QUEUED,
                trigger=run.trigger, mode=run.mode, persist=run.persist,
                timeout_seconds=run.timeout_seconds, reason=run.reason,
                overrides=dict(run.overrides), retry_of_run_id=run_id,
            )
            session.add(retry)
            await session.flush()
            assert retry.id is not None
            queued[run_id] = retry.id
    if queued:
        logger.warning("re-queued interrupted run(s) (retry of → new run): %s", queued)
    return queued
