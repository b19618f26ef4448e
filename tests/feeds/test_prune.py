"""Old runs' artifact bytes are dropped; what is served, and its baseline, never are."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, update

from edl_api.feeds.prune import prune_artifacts, prune_explains
from edl_api.models import Artifact, RunExplain
from edl_api.settings import Settings
from edl_api.state import AppState
from tests.conftest import asgi_client, make_settings, running_app
from tests.feeds.conftest import make_tenant, publish
from tests.helpers import expect, h, launch_run, wait_run


async def _prune(app: Any, pipeline_id: int, keep: int) -> int:
    async with AppState.of(app).sessionmaker() as session, session.begin():
        return await prune_artifacts(session, pipeline_id, keep)


async def test_old_bytes_go_served_bytes_and_the_baseline_stay(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    t = await make_tenant(client, "a")
    served = await publish(app, tmp_path, t.pipeline_id, {"ipv4": ["9.9.9.1", "9.9.9.2"]})
    dry = [await publish(app, tmp_path, t.pipeline_id, {"ipv4": [f"9.9.9.{i}"]},
                         mode="dry_run") for i in (3, 4, 5)]
    assert await _prune(app, t.pipeline_id, keep=2) == 1  # dry[0]: older than the newest 2
    assert await _prune(app, t.pipeline_id, keep=2) == 0

    detail = await expect(await client.get(f"/runs/{dry[0].id}", headers=h(t.key)))
    [artifact] = detail["artifacts"]
    assert artifact["pruned"] is True
    assert artifact["count"] == 1  # the metadata stays
    gone = await client.get(f"/runs/{dry[0].id}/artifacts/ipv4", headers=h(t.key))
    assert gone.status_code == 410
    assert gone.json()["error"] == "artifact_pruned"
    for run in (served, dry[1], dry[2]):
        r = await client.get(f"/runs/{run.id}/artifacts/ipv4", headers=h(t.key))
        assert r.status_code == 200, r.text
    # the served feed (older than every kept run) and its provenance baseline stay
    feed = await client.get(f"/pipelines/{t.pipeline_id}/edl/ipv4", headers=h(t.key))
    assert feed.text == "9.9.9.1\n9.9.9.2\n"
    again = await publish(app, tmp_path, t.pipeline_id, {"ipv4": ["9.9.9.1", "9.9.9.9"]})
    assert again.counts["indicators"]["method"] == "delta"


async def test_a_feed_whose_bytes_vanished_is_never_served_empty(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    t = await make_tenant(client, "a")
    await publish(app, tmp_path, t.pipeline_id, {"ipv4": ["9.9.9.1"]})
    # as if a stale pointer named an artifact another process has just pruned
    async with AppState.of(app).sessionmaker() as session, session.begin():
        await session.execute(update(Artifact).values(content=b"", content_gzip=b"",
                                                      pruned_at=Artifact.created_at))
    r = await client.get(f"/pipelines/{t.pipeline_id}/edl/ipv4", headers=h(t.key))
    assert r.status_code == 503
    assert r.headers["retry-after"] == "2"
    assert r.json()["error"] == "feed_changed"
    assert (await client.get("/edl/ipv4", headers=h(t.key))).status_code == 503


async def test_the_dispatcher_prunes_after_each_run(tmp_path: Path, database_url: str | None
                                                    ) -> None:
    settings: Settings = make_settings(tmp_path, database_url, artifact_keep_runs=2)
    async with running_app(settings) as app:
        async with asgi_client(app) as client:
            t = await make_tenant(client, "a")
            ids = []
            for _ in range(3):
                run = await launch_run(client, t.pipeline_id, t.key, persist=True)
                ids.append(run["id"])
                await wait_run(client, run["id"], key=t.key)
            deadline = time.monotonic() + 10
            while True:  # the prune follows the run's final commit
                first = await expect(await client.get(f"/runs/{ids[0]}", headers=h(t.key)))
                if first["artifacts"] and all(a["pruned"] for a in first["artifacts"]):
                    break
                assert time.monotonic() < deadline, first["artifacts"]
                await asyncio.sleep(0.05)
            last = await expect(await client.get(f"/runs/{ids[-1]}", headers=h(t.key)))
            assert last["artifacts"]
            assert not any(a["pruned"] for a in last["artifacts"])
            feed = await client.get(f"/pipelines/{t.pipeline_id}/edl/ipv4", headers=h(t.key))
            assert feed.status_code == 200  # the served run's bytes are never dropped
            assert feed.headers["x-edl-run-id"] == str(ids[-1])


async def test_old_explain_records_go(app: Any, client: httpx.AsyncClient, tmp_path: Path) -> None:
    """Only the newest `keep` runs of a pipeline keep their explain records."""
    t = await make_tenant(client, "a")
    runs = [await publish(app, tmp_path, t.pipeline_id, {"ipv4": [f"9.9.9.{i}"]},
                          mode="dry_run") for i in (1, 2, 3, 4)]
    maker = AppState.of(app).sessionmaker
    async with maker() as session, session.begin():
        for run in runs:
            session.add(RunExplain(run_id=run.id, pipeline_id=t.pipeline_id,
                                   content_gzip=b"x"))
    async with maker() as session, session.begin():
        assert await prune_explains(session, t.pipeline_id, 2) == 2
        assert await prune_explains(session, t.pipeline_id, 2) == 0
    async with maker() as session:
        left = (await session.execute(select(RunExplain.run_id))).scalars().all()
    assert sorted(left) == [runs[2].id, runs[3].id]
