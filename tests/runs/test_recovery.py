"""Recovery rules: which `running` rows belong to a dead owner, and queued runs of
deleted pipelines."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import update

from edl_api.models import Artifact, PipelineRun, utcnow
from edl_api.runs.recovery import STALE_AFTER_SECONDS, owner_is_dead, worker_identity
from edl_api.state import AppState
from tests.factories import make_pipeline, make_profile
from tests.helpers import expect, get_run, h
from tests.helpers import launch_run as launch
from tests.helpers import wait_run as wait_state


def test_owner_liveness_on_this_host() -> None:
    me = worker_identity()
    assert owner_is_dead(me) is False
    host, pid, start = me.rsplit(":", 2)
    assert owner_is_dead(f"{host}:{pid}:{int(start) - 1000}") is True  # pid reused
    assert owner_is_dead(f"{host}:{2**22 + 12345}:1") is True  # no such pid
    assert owner_is_dead(f"elsewhere-{socket.gethostname()}:{os.getpid()}:1") is None
    assert owner_is_dead(None) is True
    assert owner_is_dead("garbage") is True


async def _mark_running(app: Any, run_id: int, worker: str, heartbeat_age: float) -> None:
    async with AppState.of(app).sessionmaker() as session, session.begin():
        await session.execute(
            update(PipelineRun).where(PipelineRun.id == run_id).values(
                state="running", worker=worker, started_at=utcnow(),
                heartbeat_at=utcnow() - timedelta(seconds=heartbeat_age),
            )
        )


async def test_recover_interrupts_only_dead_owners(rc: httpx.AsyncClient, run_app: Any) -> None:
    dispatcher = AppState.of(run_app).dispatcher
    await dispatcher.stop()  # rows below are owned by imaginary workers
    profile_id, _ = await make_profile(rc)
    pipeline_id = await make_pipeline(rc, profile_id, concurrency_limit=4)
    ids = [(await launch(rc, pipeline_id))["id"] for _ in range(4)]
    me = worker_identity()
    host = me.rsplit(":", 2)[0]
    await _mark_running(run_app, ids[0], f"{host}:{2**22 + 12345}:1", 0)  # dead, this host
    await _mark_running(run_app, ids[1], "far-away:10:1", STALE_AFTER_SECONDS + 5)  # stale
    await _mark_running(run_app, ids[2], "far-away:10:1", 1)  # fresh heartbeat elsewhere
    await _mark_running(run_app, ids[3], me, STALE_AFTER_SECONDS + 5)  # a live local owner
    recovered = await dispatcher.recover()
    assert sorted(recovered) == sorted(ids[:2])
    states = [(await get_run(rc, run_id))["state"] for run_id in ids]
    assert states == ["interrupted", "interrupted", "running", "running"]
    assert (await get_run(rc, ids[0]))["errors"]


async def test_queued_run_of_deleted_pipeline_never_starts(
    rc: httpx.AsyncClient, run_app: Any
) -> None:
    dispatcher = AppState.of(run_app).dispatcher
    await dispatcher.stop()
    profile_id, _ = await make_profile(rc)
    pipeline_id = await make_pipeline(rc, profile_id)
    created = await launch(rc, pipeline_id)
    await expect(await rc.delete(f"/pipelines/{pipeline_id}", headers=h()), 200)
    await dispatcher.start()
    run = await wait_state(rc, created["id"], "cancelled", timeout=5)
    assert run["started_at"] is None
    assert "deleted" in run["errors"][0]


async def test_a_run_that_died_after_publishing_is_recovered_as_succeeded(
    rc: httpx.AsyncClient, run_app: Any
) -> None:
    """Its feeds are what firewalls get: it was not cut short, only its search rows were."""
    dispatcher = AppState.of(run_app).dispatcher
    await dispatcher.stop()
    profile_id, _ = await make_profile(rc)
    pipeline_id = await make_pipeline(rc, profile_id, concurrency_limit=2)
    published, unpublished = [(await launch(rc, pipeline_id))["id"] for _ in range(2)]
    host = worker_identity().rsplit(":", 2)[0]
    for run_id in (published, unpublished):
        await _mark_running(run_app, run_id, f"{host}:{2**22 + 12345}:1", 0)
    async with AppState.of(run_app).sessionmaker() as session, session.begin():
        for run_id, is_published in ((published, True), (unpublished, False)):
            session.add(Artifact(
                run_id=run_id, pipeline_id=pipeline_id, indicator_type="ipv4", sha256="0" * 64,
                count=0, size=0, content=b"", content_gzip=b"", published=is_published,
            ))
    assert sorted(await dispatcher.recover()) == sorted([published, unpublished])
    done = await get_run(rc, published)
    assert done["state"] == "succeeded"
    assert "indicator store" in done["errors"][0]
    assert (await get_run(rc, unpublished))["state"] == "interrupted"
