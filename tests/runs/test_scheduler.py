"""The refresh scheduler: one run per (pipeline, slot), however many schedulers tick."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from edl_api.db import create_engine, create_sessionmaker
from edl_api.models import Pipeline, PipelineRun, utcnow
from edl_api.runs import scheduler
from edl_api.settings import Settings
from edl_api.state import AppState
from tests.conftest import asgi_client, make_settings, running_app
from tests.factories import make_pipeline, make_profile
from tests.helpers import expect, h, wait_run


async def _schedule_runs(client: httpx.AsyncClient, pipeline_id: int) -> list[dict[str, Any]]:
    page = await expect(
        await client.get(f"/runs?pipeline_id={pipeline_id}&trigger=schedule", headers=h()), 200
    )
    return page["items"]  # type: ignore[no-any-return]


async def test_two_schedulers_make_one_run_per_slot(
    rc: httpx.AsyncClient, run_app: Any, run_settings: Settings
) -> None:
    profile_id, _ = await make_profile(rc)
    hourly = await make_pipeline(rc, profile_id, name="hourly", refresh_interval_minutes=60)
    fast = await make_pipeline(rc, profile_id, name="fast", refresh_interval_minutes=0.5)
    manual = await make_pipeline(rc, profile_id, name="manual")
    idle = await make_pipeline(rc, profile_id, name="idle", refresh_interval_minutes=1)
    await expect(await rc.patch(f"/pipelines/{idle}", json={"is_active": False}, headers=h()), 200)

    # A second "process": its own engine and sessions on the same database.
    other_engine = create_engine(run_settings)
    try:
        now = utcnow()
        first, second = await asyncio.gather(
            scheduler.tick(AppState.of(run_app).sessionmaker, now),
            scheduler.tick(create_sessionmaker(other_engine), now),
        )
        assert len(first) + len(second) == 2
        assert set(first).isdisjoint(second)
        for pipeline_id in (hourly, fast):
            (run,) = await _schedule_runs(rc, pipeline_id)
            assert run["trigger"] == "schedule"
            await wait_run(rc, run["id"], "succeeded")
        assert await _schedule_runs(rc, manual) == []
        assert await _schedule_runs(rc, idle) == []

        # Same slot again (the same instant: no slot boundary can fall in between):
        # nothing new, even though the runs finished.
        assert await scheduler.tick(AppState.of(run_app).sessionmaker, now) == []

        # Two hours on, both pipelines are due again: one run each, not two.
        later = now + timedelta(hours=2)
        again = await asyncio.gather(
            scheduler.tick(AppState.of(run_app).sessionmaker, later),
            scheduler.tick(create_sessionmaker(other_engine), later),
        )
        assert sum(len(ids) for ids in again) == 2
        for pipeline_id in (hourly, fast):
            runs = await _schedule_runs(rc, pipeline_id)
            assert len(runs) == 2
            assert runs[0]["schedule_slot"] != runs[1]["schedule_slot"]
            await wait_run(rc, runs[0]["id"], "succeeded")

        # next_run_at: the end of the current slot once this slot has a run.
        async with AppState.of(run_app).sessionmaker() as session:
            pipeline = await session.get(Pipeline, hourly)
            assert pipeline is not None
            next_at = await scheduler.next_run_at(session, pipeline, now=now)
            assert next_at is not None
            assert next_at == scheduler.slot_for(60, now).end
            assert await scheduler.next_run_at(session, pipeline, run_settings) is None  # off
            manual_pipeline = await session.get(Pipeline, manual)
            assert manual_pipeline is not None
            assert await scheduler.next_run_at(session, manual_pipeline, now=now) is None
    finally:
        await other_engine.dispose()


async def test_busy_pipeline_is_not_scheduled_twice(rc: httpx.AsyncClient, run_app: Any) -> None:
    profile_id, _ = await make_profile(rc)
    pipeline_id = await make_pipeline(rc, profile_id, refresh_interval_minutes=0.5)
    await AppState.of(run_app).dispatcher.stop()  # keep the run queued
    now = utcnow()
    assert len(await scheduler.tick(AppState.of(run_app).sessionmaker, now)) == 1
    later = now + timedelta(minutes=5)
    assert await scheduler.tick(AppState.of(run_app).sessionmaker, later) == []
    async with AppState.of(run_app).sessionmaker() as session:
        states = (await session.execute(
            select(PipelineRun.state).where(PipelineRun.pipeline_id == pipeline_id)
        )).scalars().all()
    assert states == ["queued"]


async def test_lifespan_scheduler_ticks(tmp_path: Path, database_url: str | None,
                                        published: list[int]) -> None:
    settings = make_settings(tmp_path, database_url, auto_refresh_minutes=1 / 60)
    async with running_app(settings) as app:
        assert AppState.of(app).scheduler is not None
        async with asgi_client(app) as client:
            profile_id, _ = await make_profile(client)
            pipeline_id = await make_pipeline(client, profile_id, refresh_interval_minutes=60)
            for _ in range(60):
                runs = await _schedule_runs(client, pipeline_id)
                if runs:
                    break
                await asyncio.sleep(0.1)
            (run,) = runs
            await wait_run(client, run["id"], "succeeded")
            assert published == [run["id"]]
    assert AppState.of(app).scheduler is None
