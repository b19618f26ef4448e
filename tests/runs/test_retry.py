"""Interrupted runs (their process died) are re-queued once, as a run naming the one it
retries; a retry interrupted in turn stays interrupted (EDL_RETRY_INTERRUPTED=1)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import update
from sqlmodel import col

from edl_api.models import PipelineRun, utcnow
from edl_api.runs.recovery import STALE_AFTER_SECONDS, interrupt_dead_runs
from edl_api.settings import Settings
from edl_api.state import AppState
from tests.factories import make_pipeline, make_profile
from tests.helpers import get_run, h
from tests.helpers import launch_run as launch

GONE = "far-away:10:1"  # another host whose heartbeat is stale: its owner is dead


async def _die_while_running(app: Any, run_id: int) -> None:
    async with AppState.of(app).sessionmaker() as session, session.begin():
        await session.execute(
            update(PipelineRun).where(col(PipelineRun.id) == run_id).values(
                state="running", worker=GONE, started_at=utcnow(),
                heartbeat_at=utcnow() - timedelta(seconds=STALE_AFTER_SECONDS + 5),
            )
        )


async def _recover(app: Any, settings: Settings) -> list[int]:
    return await interrupt_dead_runs(settings, AppState.of(app).sessionmaker, "me:1:1")


async def _runs_of(rc: httpx.AsyncClient, pipeline_id: int) -> list[dict[str, Any]]:
    page = await rc.get(f"/runs?pipeline_id={pipeline_id}", headers=h())
    return list(page.json()["items"])


async def test_an_interrupted_run_is_retried_once(
    rc: httpx.AsyncClient, run_app: Any, run_settings: Settings
) -> None:
    await AppState.of(run_app).dispatcher.stop()  # the rows below belong to a dead host
    profile_id, _ = await make_profile(rc)
    pipeline_id = await make_pipeline(rc, profile_id)
    first = await launch(rc, pipeline_id, persist=False, reason="nightly", timeout_seconds=90)
    await _die_while_running(run_app, first["id"])

    assert await _recover(run_app, run_settings) == [first["id"]]
    original = await get_run(rc, first["id"])
    assert original["state"] == "interrupted"
    (retry,) = [r for r in await _runs_of(rc, pipeline_id) if r["id"] != first["id"]]
    assert retry["state"] == "queued"
    assert retry["retry_of_run_id"] == first["id"]
    assert original["retried_by_run_id"] == retry["id"]
    # It repeats what the interrupted run would have done, without its schedule slot.
    for field in ("trigger", "mode", "persist", "reason", "timeout_seconds", "config_version"):
        assert retry[field] == original[field], field
    detail = await get_run(rc, retry["id"])
    assert detail["metadata"]["config_snapshot"] == original["metadata"]["config_snapshot"]
    assert detail["metadata"]["overrides"] == original["metadata"]["overrides"]
    assert detail["schedule_slot"] is None
    log = (await rc.get(f"/runs/{first['id']}/logs", headers=h())).text
    assert f"retried as run {retry['id']}" in log

    # Recovery running again (every process, every few seconds) queues nothing more.
    assert await _recover(run_app, run_settings) == []
    assert len(await _runs_of(rc, pipeline_id)) == 2

    # The retry dies too: it stays interrupted, no third run.
    await _die_while_running(run_app, retry["id"])
    assert await _recover(run_app, run_settings) == [retry["id"]]
    assert (await get_run(rc, retry["id"]))["state"] == "interrupted"
    assert (await get_run(rc, retry["id"]))["retried_by_run_id"] is None
    assert len(await _runs_of(rc, pipeline_id)) == 2


async def test_retry_off_and_inactive_pipeline(
    rc: httpx.AsyncClient, run_app: Any, run_settings: Settings
) -> None:
    await AppState.of(run_app).dispatcher.stop()
    profile_id, _ = await make_profile(rc)
    pipeline_id = await make_pipeline(rc, profile_id)
    off = await launch(rc, pipeline_id)
    await _die_while_running(run_app, off["id"])
    settings = run_settings.model_copy(update={"retry_interrupted": 0})
    assert await _recover(run_app, settings) == [off["id"]]
    assert len(await _runs_of(rc, pipeline_id)) == 1

    inactive = await launch(rc, pipeline_id)
    await _die_while_running(run_app, inactive["id"])
    response = await rc.patch(f"/pipelines/{pipeline_id}", headers=h(), json={"is_active": False})
    assert response.status_code == 200, response.text
    assert await _recover(run_app, run_settings) == [inactive["id"]]
    assert len(await _runs_of(rc, pipeline_id)) == 2  # the two interrupted ones, no retry
