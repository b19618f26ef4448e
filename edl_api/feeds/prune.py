"""Artifact bytes and explain records do not pile up: only the newest runs of a pipeline
keep theirs."""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api.models import Artifact, HostedFeed, RunExplain, utcnow


async def prune_artifacts(session: AsyncSession, pipeline_id: int, keep_runs: int) -> int:
    """Drop the bytes of artifacts older than the pipeline's `keep_runs` newest runs that
    stored any, keeping their metadata (count, sha, published, reason). Never the bytes
    a hosted feed serves, nor the provenance of a run a hosted feed comes from (the next
    publish's baseline). Returns how many artifacts were pruned."""
    run_ids = (await session.execute(
        select(col(Artifact.run_id)).where(col(Artifact.pipeline_id) == pipeline_id)
        .distinct().order_by(col(Artifact.run_id).desc()).limit(keep_runs + 1)
    )).scalars().all()
    if len(run_ids) <= keep_runs:
        return 0
    oldest_kept = run_ids[keep_runs - 1]
    served = (await session.execute(
        select(col(HostedFeed.artifact_id), col(HostedFeed.run_id))
        .where(col(HostedFeed.pipeline_id) == pipeline_id)
    )).all()
    table = Artifact.__table__  # type: ignore[attr-defined]
    query = (
        update(table)
        .where(table.c.pipeline_id == pipeline_id, table.c.run_id < oldest_kept,
               table.c.pruned_at.is_(None))
        .values(content=b"", content_gzip=b"", pruned_at=utcnow())
    )
    if served:
        query = query.where(table.c.id.not_in([a for a, _ in served]),
                            table.c.run_id.not_in([r for _, r in served]))
    result = await session.execute(query)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]




async def prune_explains(session: AsyncSession, pipeline_id: int, keep_runs: int) -> int:
    """Drop the explain records of all but the pipeline's `keep_runs` newest runs that have
    one (explain answers from the latest; a 1M-entry run's record is ~1-10 MB)."""
    kept = (await session.execute(
        select(col(RunExplain.run_id)).where(col(RunExplain.pipeline_id) == pipeline_id)
        .order_by(col(RunExplain.run_id).desc()).limit(keep_runs)
    )).scalars().all()
    if len(kept) < keep_runs:
        return 0
    result = await session.execute(
        delete(RunExplain).where(col(RunExplain.pipeline_id) == pipeline_id,
                                 col(RunExplain.run_id) < min(kept))
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
