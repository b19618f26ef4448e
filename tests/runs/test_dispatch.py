"""Caps, cancel, timeout, follow and shutdown with real engine children."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx

from edl_api.app import create_app
from edl_api.settings import Settings
from tests.conftest import asgi_client, running_app
from tests.factories import make_pipeline, make_profile
from tests.helpers import get_run, h, pid_gone, slow_yaml, wait_pid, wait_pid_gone
from tests.helpers import launch_run as launch
from tests.helpers import wait_run as wait_state

FOREVER = 600


async def _running(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    jobs = (await client.get("/jobs", headers=h())).json()["items"]
    return [j for j in jobs if j["state"] == "running"]


async def test_caps_cancel_and_prompt_start(
    rc: httpx.AsyncClient, upstream_port: int, published: list[int]
) -> None:
    """total=3, per profile=2, pipeline A1 limit 1: the caps hold under concurrent launches."""
    yaml = slow_yaml(upstream_port, FOREVER)
    a, _ = await make_profile(rc, "a")
    b, _ = await make_profile(rc, "b")
    a1 = await make_pipeline(rc, a, yaml, name="a1", concurrency_limit=1)
    a2 = await make_pipeline(rc, a, yaml, name="a2", concurrency_limit=3)
    b1 = await make_pipeline(rc, b, yaml, name="b1", concurrency_limit=3)
    launches = [launch(rc, p) for p in (a1, a1, a1, a2, a2, b1, b1, b1)]
    runs = await asyncio.gather(*launches)
    ids = [r["id"] for r in runs]

    deadline = time.monotonic() + 10
    while len(running := await _running(rc)) < 3:
        assert time.monotonic() < deadline, running
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # more polls: nothing else may start
    running = await _running(rc)
    assert len(running) == 3
    per_profile = Counter(j["profile_id"] for j in running)
    per_pipeline = Counter(j["pipeline_id"] for j in running)
    assert max(per_profile.values()) <= 2
    assert per_pipeline[a1] <= 1
    assert all(j["worker"] for j in running)
    pids = {j["run_id"]: await wait_pid(rc, j["run_id"]) for j in running}

    # Cancel a queued run: at once, never started.
    queued = [i for i in ids if i not in pids]
    response = await rc.post(f"/runs/{queued[0]}/cancel", headers=h())
    assert response.status_code == 202
    assert response.json()["state"] == "cancelled"
    cancelled = await get_run(rc, queued[0])
    assert cancelled["state"] == "cancelled"
    assert cancelled["started_at"] is None

    # Cancel a running run: its child is gone within 5 s and a queued run takes the slot.
    victim = next(iter(pids))
    started = time.monotonic()
    response = await rc.post(f"/runs/{victim}/cancel", headers=h())
    assert response.status_code == 202
    assert response.json()["cancel_requested"] is True
    run = await wait_state(rc, victim, "cancelled", timeout=5)
    await wait_pid_gone(pids[victim], timeout=5 - (time.monotonic() - started))
    assert run["errors"] == [] or all("timed out" not in e for e in run["errors"])
    deadline = time.monotonic() + 1.5
    while len(await _running(rc)) < 3:
        assert time.monotonic() < deadline, "a queued run did not take the freed slot"
        await asyncio.sleep(0.05)

    for run_id in ids:
        await rc.post(f"/runs/{run_id}/cancel", headers=h())
    for run_id in ids:
        assert (await wait_state(rc, run_id, "cancelled", timeout=8))["finished_at"]
    for pid in pids.values():
        assert pid_gone(pid)
    assert published == []
    logs = (await rc.get(f"/runs/{victim}/logs", headers=h())).text
    assert "dispatcher: cancelled" in logs


async def test_timeout(rc: httpx.AsyncClient, upstream_port: int, published: list[int]) -> None:
    profile_id, _ = await make_profile(rc)
    pipeline_id = await make_pipeline(rc, profile_id, slow_yaml(upstream_port, FOREVER))
    created = await launch(rc, pipeline_id, timeout_seconds=1.5, persist=True)
    pid = await wait_pid(rc, created["id"])
    run = await wait_state(rc, created["id"], "timed_out", timeout=8)
    assert any("timed out after 1.5 s" in e for e in run["errors"])
    await wait_pid_gone(pid)
    assert published == []


async def test_follow_streams_until_the_run_ends(
    rc: httpx.AsyncClient, upstream_port: int
) -> None:
    profile_id, _ = await make_profile(rc)
    pipeline_id = await make_pipeline(rc, profile_id, slow_yaml(upstream_port, 1.5))
    created = await launch(rc, pipeline_id)
    await wait_pid(rc, created["id"])
    chunks: list[str] = []
    async with rc.stream("GET", f"/runs/{created['id']}/logs?follow=true",
                         headers=h()) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_text():
            chunks.append(chunk)
    text = "".join(chunks)
    assert "engine started" in text
    assert "source slow: ok" in text
    assert text.rstrip().endswith(" dispatcher: succeeded")
    assert (await get_run(rc, created["id"]))["state"] == "succeeded"


async def test_shutdown_interrupts_in_flight_runs(
    run_settings: Settings, upstream_port: int, published: list[int]
) -> None:
    async with running_app(run_settings) as app, asgi_client(app) as client:
        profile_id, _ = await make_profile(client)
        pipeline_id = await make_pipeline(client, profile_id, slow_yaml(upstream_port, FOREVER))
        created = await launch(client, pipeline_id, persist=True)
        pid = await wait_pid(client, created["id"])
        started = time.monotonic()
    # The lifespan ended: the child is gone, the run is interrupted, within the bound.
    assert time.monotonic() - started < 10
    assert pid_gone(pid)
    app = create_app(run_settings)  # the same database, read again by a new process
    async with app.router.lifespan_context(app), asgi_client(app) as client:
        run = await get_run(client, created["id"])
    assert run["state"] == "interrupted"
    assert run["errors"]
    assert published == []
