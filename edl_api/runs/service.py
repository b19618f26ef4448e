"""Runs: launch, cancel and read; every query is filtered by the caller's scope."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api import idempotency
from edl_api.auth.principal import Principal
from edl_api.errors import Conflict, NotFound, TooManyRequests, Unprocessable
from edl_api.feeds.provenance import PROVENANCE
from edl_api.models import Artifact, Pipeline, PipelineRun, Profile, ProfileConfig, utcnow
from edl_api.pagination import Page, PageParams, paginate
from edl_api.pipelines.service import get_pipeline
from edl_api.profiles.service import validate_for_profile
from edl_api.runs.schemas import (
    ArtifactInfo,
    Job,
    JobList,
    RunCancelled,
    RunCreate,
    RunCreated,
    RunDetail,
    RunMetadata,
    RunSummary,
    SourceReport,
)
from edl_api.runs.state import ACTIVE, RunState, check_transition

JOBS_LIMIT = 500
# A full queue drains at the pace of runs; a client should not retry every second.
QUEUE_FULL_RETRY_SECONDS = 30


class PipelineNotLaunchable(Conflict):
    code = "pipeline_inactive"


class RunFinished(Conflict):
    code = "run_finished"


class InlineNeedsDryRun(Unprocessable):
    code = "inline_config_needs_dry_run"


def worker_name(worker: str | None, principal: Principal) -> str | None:
    """What a caller is shown of the process that runs a run.

    Callers that see every profile (super-admins, legacy global keys) get its identity
    (`host:pid:start`, what recovery and the logs use); a tenant gets `worker-<8 hex>`,
    the same for every run of that process and nothing of the host, pid or start time (32
    bits of a hash: far too few to recover them from)."""
    if worker is None or principal.profile_ids is None:
        return worker
    return public_worker_name(worker)


def public_worker_name(worker: str) -> str:
    """`worker-<8 hex>`: how tenants (run detail, /jobs, run logs) name a worker."""
    return "worker-" + hashlib.sha256(worker.encode()).hexdigest()[:8]


class QueueFull(TooManyRequests):
    code = "queue_full"


def new_run(
    pipeline: Pipeline, config: ProfileConfig, *, trigger: str, mode: str = "full",
    persist: bool = True, timeout_seconds: float | None = None, reason: str | None = None,
    overrides: dict[str, Any] | None = None, schedule_slot: str | None = None,
) -> PipelineRun:
    """A queued run that remembers the exact config version and YAML it will run."""
    assert pipeline.id is not None
    assert config.id is not None
    return PipelineRun(
        pipeline_id=pipeline.id, profile_id=pipeline.profile_id, profile_config_id=config.id,
        config_version=config.version, config_snapshot=config.yaml, state=RunState.QUEUED,
        trigger=trigger, mode=mode, persist=persist, timeout_seconds=timeout_seconds,
        reason=reason, overrides=overrides or {}, schedule_slot=schedule_slot,
    )


async def queued_runs(session: AsyncSession, profile_id: int) -> int:
    """How many runs of the profile wait for a slot (running ones do not count)."""
    count = await session.execute(
        select(func.count()).select_from(PipelineRun)
        .where(col(PipelineRun.profile_id) == profile_id,
               col(PipelineRun.state) == RunState.QUEUED)
    )
    return int(count.scalar_one())


async def refuse_full_queue(session: AsyncSession, profile_id: int, max_queued: int) -> None:
    """Call after flushing the new run: it counts itself. PostgreSQL: the profile row is
    locked first, so concurrent launches of one profile count one at a time; SQLite: the
    flush took the database's one write lock."""
    queued = await queued_runs(session, profile_id)
    if queued > max_queued:
        raise QueueFull(
            f"profile {profile_id} already has {queued - 1} queued runs, the most it may "
            f"have (EDL_MAX_QUEUED_RUNS_PER_PROFILE={max_queued}); retry once some started",
            retry_after=QUEUE_FULL_RETRY_SECONDS,
        )


def refuse_unlaunchable(pipeline: Pipeline) -> None:
    if pipeline.deleted_at is not None:
        raise PipelineNotLaunchable("the pipeline is deleted", code="pipeline_deleted")
    if not pipeline.is_active:
        raise PipelineNotLaunchable("the pipeline is inactive; activate it first")


async def create_run(
    session: AsyncSession, principal: Principal, body: RunCreate,
    idem: idempotency.IdempotencyRequest | None, *, max_queued: int,
    max_run_bytes: int | None = None,
) -> RunCreated:
    assert body.pipeline_id is not None  # RunCreate requires it
    pipeline = await get_pipeline(session, principal, body.pipeline_id, write=True)
    if body.profile_id is not None and body.profile_id != pipeline.profile_id:
        raise Unprocessable(
            f"pipeline {pipeline.id} belongs to profile {pipeline.profile_id}, not "
            f"{body.profile_id}", code="pipeline_profile_mismatch",
        )
    if body.config is not None:
        if body.mode != "dry_run":
            raise InlineNeedsDryRun(
                'an inline config only runs as a dry run: add "mode": "dry_run" (to publish '
                "it, save it with POST /profiles/{id}/configs and bind the pipeline to it)"
            )
        await validate_for_profile(session, pipeline.profile_id, body.config, max_run_bytes)

    async def launch() -> RunCreated:
        refuse_unlaunchable(pipeline)
        config = await session.get(ProfileConfig, pipeline.profile_config_id)
        if config is None:  # pragma: no cover - the foreign key keeps it
            raise NotFound("the pipeline's config is gone")
        overrides = body.model_dump(
            mode="json", exclude_unset=True,
            exclude={"pipeline_id", "profile_id", "idempotency_key", "config"},
        )
        if body.config is not None:
            overrides["inline_config"] = True  # the snapshot is the caller's YAML
        run = new_run(
            pipeline, config, trigger="api", mode=body.mode, persist=body.persist,
            timeout_seconds=body.timeout_seconds, reason=body.reason, overrides=overrides,
        )
        if body.config is not None:
            run.config_snapshot = body.config
        await session.execute(
            select(col(Profile.id)).where(col(Profile.id) == pipeline.profile_id)
            .with_for_update(key_share=True)  # FOR NO KEY UPDATE: foreign-key checks go on
        )
        session.add(run)
        await session.flush()
        await refuse_full_queue(session, pipeline.profile_id, max_queued)
        return RunCreated.model_validate(run)

    # A replay answers even if the pipeline was deactivated since: the run exists.
    return await idempotency.replay_or_create(session, idem, RunCreated, launch)


async def get_run(session: AsyncSession, principal: Principal, run_id: int) -> PipelineRun:
    query = select(PipelineRun).where(
        col(PipelineRun.id) == run_id,
        principal.scope_filter(col(PipelineRun.profile_id), col(PipelineRun.pipeline_id)),
    )
    run = (await session.execute(query)).scalar_one_or_none()
    if run is None:
        raise NotFound("not found")
    return run


async def cancel_run(session: AsyncSession, principal: Principal, run_id: int) -> RunCancelled:
    run = await get_run(session, principal, run_id)
    principal.require_profile(run.profile_id, write=True)
    # A queued run is cancelled at once; the conditional update loses cleanly to a
    # dispatcher that claims it in the same instant (then the flag below stops it).
    result = await session.execute(
        update(PipelineRun)
        .where(col(PipelineRun.id) == run_id, col(PipelineRun.state) == RunState.QUEUED)
        .values(state=RunState.CANCELLED, cancel_requested=True, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount:  # type: ignore[attr-defined]
        check_transition(run_id, RunState.QUEUED, RunState.CANCELLED)
    else:
        result = await session.execute(
            update(PipelineRun)
            .where(col(PipelineRun.id) == run_id, col(PipelineRun.state) == RunState.RUNNING)
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        )
    await session.refresh(run)
    if not result.rowcount:  # type: ignore[attr-defined]
        raise RunFinished(f"run {run_id} already finished ({run.state})")
    return RunCancelled(id=run_id, state=run.state, cancel_requested=run.cancel_requested)


async def list_runs(
    session: AsyncSession, principal: Principal, page: PageParams, *,
    state: str | None = None, profile_id: int | None = None, pipeline_id: int | None = None,
    trigger: str | None = None,
) -> Page[RunSummary]:
    filters: list[Any] = [
        principal.scope_filter(col(PipelineRun.profile_id), col(PipelineRun.pipeline_id))
    ]
    if state is not None:
        filters.append(col(PipelineRun.state).in_(state.split(",")))
    if profile_id is not None:
        filters.append(col(PipelineRun.profile_id) == profile_id)
    if pipeline_id is not None:
        filters.append(col(PipelineRun.pipeline_id) == pipeline_id)
    if trigger is not None:
        filters.append(col(PipelineRun.trigger) == trigger)
    query = select(PipelineRun).where(*filters).order_by(col(PipelineRun.id).desc())
    return await paginate(session, query, page, RunSummary)


def _sources(report: dict[str, Any]) -> list[SourceReport]:
    sources = report.get("sources")
    if not isinstance(sources, list):
        return []
    return [SourceReport.model_validate(s) for s in sources if isinstance(s, dict)]


async def run_detail(session: AsyncSession, principal: Principal, run_id: int) -> RunDetail:
    run = await get_run(session, principal, run_id)
    artifacts = (
        await session.execute(
            select(
                col(Artifact.indicator_type), col(Artifact.count), col(Artifact.sha256),
                col(Artifact.size), col(Artifact.published), col(Artifact.reason),
                col(Artifact.pruned_at),
            )
            # The provenance snapshot is internal bookkeeping, not a feed: listed runs show
            # feeds only (it stays downloadable at /runs/{id}/artifacts/provenance).
            .where(col(Artifact.run_id) == run_id, col(Artifact.indicator_type) != PROVENANCE)
            .order_by(col(Artifact.indicator_type))
        )
    ).all()
    summary = RunSummary.model_validate(run).model_dump()
    retried_by = (
        await session.execute(
            select(col(PipelineRun.id)).where(col(PipelineRun.retry_of_run_id) == run_id)
            .order_by(col(PipelineRun.id)).limit(1)
        )
    ).scalar_one_or_none()
    feeds, options = run.report.get("feeds"), run.report.get("options")
    # Publishing stores them with the counts; the detail shows them with the feeds.
    render_drops = summary["counts"].pop("render_drops", None)
    return RunDetail(
        **summary,
        artifacts=[
            ArtifactInfo(
                indicator_type=a.indicator_type, count=a.count, sha256=a.sha256, bytes=a.size,
                published=a.published, reason=a.reason, pruned=a.pruned_at is not None,
            )
            for a in artifacts
        ],
        metadata=RunMetadata(
            config_snapshot=run.config_snapshot, overrides=run.overrides,
            sources=_sources(run.report), feeds=feeds if isinstance(feeds, dict) else {},
            options=options if isinstance(options, dict) else {},
            render_drops=render_drops if isinstance(render_drops, dict) else {},
        ),
        diff=run.diff, progress=run.progress, worker=worker_name(run.worker, principal),
        retried_by_run_id=retried_by,
    )


async def list_jobs(
    session: AsyncSession, principal: Principal, *, profile_id: int | None = None
) -> JobList:
    filters: list[Any] = [
        principal.scope_filter(col(PipelineRun.profile_id), col(PipelineRun.pipeline_id)),
        col(PipelineRun.state).in_(ACTIVE),
    ]
    if profile_id is not None:
        filters.append(col(PipelineRun.profile_id) == profile_id)
    rows = (
        await session.execute(
            select(PipelineRun).where(*filters).order_by(col(PipelineRun.id).desc())
            .limit(JOBS_LIMIT)
        )
    ).scalars()
    return JobList(
        items=[
            Job(
                run_id=r.id, pipeline_id=r.pipeline_id, profile_id=r.profile_id,  # type: ignore[arg-type]
                state=r.state, trigger=r.trigger, created_at=r.created_at,
                started_at=r.started_at, cancel_requested=r.cancel_requested,
                worker=worker_name(r.worker, principal),
                pid=r.pid if principal.profile_ids is None else None, progress=r.progress,
            )
            for r in rows
        ]
    )


async def run_state(session: AsyncSession, run_id: int) -> str | None:
    return (
        await session.execute(select(col(PipelineRun.state)).where(col(PipelineRun.id) == run_id))
    ).scalar_one_or_none()
