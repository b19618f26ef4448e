"""The refresh scheduler: each tick enqueues `schedule` runs for pipelines that are due.

A pipeline is scheduled when it is active, not deleted and its config has
`refresh_interval_minutes`. Time is cut into slots of that length (slot k starts at
k × interval after the epoch). A pipeline is due when no run of it was created in the
current slot and none is queued or running. The run carries the slot as
`schedule_slot`; the unique (pipeline_id, schedule_slot) constraint makes any number
of ticking schedulers produce one run per slot.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from edl_api import metrics
from edl_api.models import Pipeline, PipelineRun, ProfileConfig, utcnow
from edl_api.runs.service import new_run
from edl_api.runs.state import ACTIVE, RunState
from edl_api.settings import DEFAULT_MAX_QUEUED_RUNS_PER_PROFILE, Settings

logger = logging.getLogger("edl_api.scheduler")
JOB_ID = "edl-refresh"


@dataclass(frozen=True)
class Slot:
    key: str
    start: datetime
    end: datetime


def slot_for(interval_minutes: float, now: datetime) -> Slot:
    length = interval_minutes * 60.0
    index = math.floor(now.timestamp() / length)
    start = datetime.fromtimestamp(index * length, UTC)
    return Slot(f"{interval_minutes:g}m:{index}", start, start + timedelta(seconds=length))


async def _due(
    session: AsyncSession, now: datetime
) -> list[tuple[Pipeline, ProfileConfig, Slot]]:
    scheduled = (
        await session.execute(
            select(Pipeline, ProfileConfig)
            .join(ProfileConfig, col(ProfileConfig.id) == col(Pipeline.profile_config_id))
            .where(
                col(Pipeline.is_active).is_(True), col(Pipeline.deleted_at).is_(None),
                col(ProfileConfig.refresh_interval_minutes).is_not(None),
                col(ProfileConfig.refresh_interval_minutes) > 0,
            )
        )
    ).all()
    if not scheduled:
        return []
    ids = [p.id for p, _ in scheduled]
    busy = set(
        (
            await session.execute(
                select(col(PipelineRun.pipeline_id)).where(
                    col(PipelineRun.pipeline_id).in_(ids),
                    col(PipelineRun.state).in_(ACTIVE),
                ).distinct()
            )
        ).scalars()
    )
    latest: dict[int, datetime] = dict(
        (
            await session.execute(
                select(col(PipelineRun.pipeline_id), func.max(col(PipelineRun.created_at)))
                .where(col(PipelineRun.pipeline_id).in_(ids))
                .group_by(col(PipelineRun.pipeline_id))
            )
        ).all()
    )
    due = []
    for pipeline, config in scheduled:
        if pipeline.id in busy:
            continue
        assert config.refresh_interval_minutes is not None
        slot = slot_for(config.refresh_interval_minutes, now)
        last = latest.get(pipeline.id or 0)
        if last is not None and _aware(last) >= slot.start:
            continue
        due.append((pipeline, config, slot))
    return due


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def _queued_by_profile(session: AsyncSession, profile_ids: set[int]) -> dict[int, int]:
    rows = await session.execute(
        select(col(PipelineRun.profile_id), func.count())
        .where(col(PipelineRun.profile_id).in_(profile_ids),
               col(PipelineRun.state) == RunState.QUEUED)
        .group_by(col(PipelineRun.profile_id))
    )
    return {int(profile_id): int(count) for profile_id, count in rows.all()}


async def tick(
    sessionmaker: async_sessionmaker[AsyncSession], now: datetime | None = None, *,
    max_queued_per_profile: int = DEFAULT_MAX_QUEUED_RUNS_PER_PROFILE,
) -> list[int]:
    """One scheduler pass; returns the ids of the runs it created. A profile with
    `max_queued_per_profile` queued runs gets none (counted and logged): its due
    pipelines are due again next tick."""
    now = now or utcnow()
    async with sessionmaker() as session:
        due = await _due(session, now)
        queued = await _queued_by_profile(session, {p.profile_id for p, _, _ in due}) if due else {}
    created: list[int] = []
    skipped: dict[int, int] = {}
    for pipeline, config, slot in due:
        profile_id = pipeline.profile_id
        if queued.get(profile_id, 0) >= max_queued_per_profile:
            skipped[profile_id] = skipped.get(profile_id, 0) + 1
            continue
        run = new_run(pipeline, config, trigger="schedule", schedule_slot=slot.key,
                      reason=f"scheduled every {config.refresh_interval_minutes:g} min")
        # One short transaction per run: a conflict (another scheduler won the slot)
        # costs only that insert.
        async with sessionmaker() as session:
            session.add(run)
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
                continue
        assert run.id is not None
        created.append(run.id)
        queued[profile_id] = queued.get(profile_id, 0) + 1
    for profile_id, count in skipped.items():
        metrics.SCHEDULED_RUNS_SKIPPED.inc(count)
        logger.warning(
            "scheduler skipped %d due run(s) of profile %s: %d runs queued, the most "
            "EDL_MAX_QUEUED_RUNS_PER_PROFILE allows", count, profile_id, queued.get(profile_id, 0),
        )
    if created:
        logger.info("scheduler queued %d run(s): %s", len(created), created)
    return created


async def next_run_at(
    session: AsyncSession, pipeline: Pipeline, settings: Settings | None = None,
    now: datetime | None = None,
) -> datetime | None:
    """When the scheduler will next queue this pipeline, or None when it is not scheduled.

    Pass `settings` to get None while the scheduler is off (EDL_AUTO_REFRESH_MINUTES=0).
    """
    if settings is not None and settings.auto_refresh_minutes <= 0:
        return None
    if not pipeline.is_active or pipeline.deleted_at is not None:
        return None
    config = await session.get(ProfileConfig, pipeline.profile_config_id)
    if config is None or not config.refresh_interval_minutes:
        return None
    now = now or utcnow()
    slot = slot_for(config.refresh_interval_minutes, now)
    last = (
        await session.execute(
            select(func.max(col(PipelineRun.created_at)))
            .where(col(PipelineRun.pipeline_id) == pipeline.id)
        )
    ).scalar_one_or_none()
    if last is not None and _aware(last) >= slot.start:
        return slot.end
    return now  # due now: the next tick queues it


def refresh_status(settings: Settings) -> str:
    """The line `serve` logs at start: whether configs' refresh intervals are honoured."""
    if settings.auto_refresh_minutes <= 0:
        return (
            "scheduled refresh is OFF (EDL_AUTO_REFRESH_MINUTES=0): configs' "
            "refresh_interval_minutes are ignored; feeds change only when a run is launched "
            "(POST /runs). Unset it (default 1) to turn refresh on"
        )
    return (
        f"scheduled refresh is on: every {settings.auto_refresh_minutes:g} min the scheduler "
        "queues the pipelines whose config's refresh_interval_minutes is due "
        "(EDL_AUTO_REFRESH_MINUTES=0 turns it off)"
    )


def refresh_warnings(settings: Settings, refresh_interval_minutes: float | None) -> list[str]:
    """What a config write answers in `warnings` about its refresh interval: a config that
    asks to be refreshed while nothing will refresh it must say so, not fail silently."""
    if not refresh_interval_minutes or refresh_interval_minutes <= 0:
        return []
    tick = settings.auto_refresh_minutes
    if tick <= 0:
        return [
            f"refresh_interval_minutes is {refresh_interval_minutes:g} but the scheduler is "
            "off (EDL_AUTO_REFRESH_MINUTES=0 on the server): this config's pipelines are not "
            "refreshed; launch runs with POST /runs, or unset EDL_AUTO_REFRESH_MINUTES "
            "(default 1) and restart"
        ]
    if refresh_interval_minutes < tick:
        return [
            f"refresh_interval_minutes is {refresh_interval_minutes:g} but the scheduler looks "
            f"for due pipelines every {tick:g} min (EDL_AUTO_REFRESH_MINUTES): runs come at "
            f"most every {tick:g} min"
        ]
    return []


class RefreshScheduler:
    """APScheduler owns the timing (coalesce, one instance, misfire grace); `tick` the rules."""

    def __init__(
        self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession],
        on_enqueue: object = None,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.on_enqueue = on_enqueue
        self._scheduler = AsyncIOScheduler(timezone=UTC)

    def start(self) -> None:
        seconds = self.settings.auto_refresh_minutes * 60.0
        self._scheduler.add_job(
            self._run_tick, "interval", seconds=seconds, id=JOB_ID, coalesce=True,
            max_instances=1, misfire_grace_time=max(1, int(seconds)),
            next_run_time=datetime.now(UTC),
        )
        self._scheduler.start()

    async def _run_tick(self) -> None:
        try:
            created = await tick(
                self.sessionmaker,
                max_queued_per_profile=self.settings.max_queued_runs_per_profile,
            )
        except Exception:
            logger.exception("scheduler tick failed")
            return
        if created and callable(self.on_enqueue):
            self.on_enqueue()

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
