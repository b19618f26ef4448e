from __future__ import annotations

import asyncio

import httpx

from tests.conftest import SUPER_KEY
from tests.factories import World, h


async def _run_to_end(client: httpx.AsyncClient, key: str, pipeline_id: int) -> dict:
    launched = await client.post("/runs", json={"pipeline_id": pipeline_id}, headers=h(key))
    assert launched.status_code == 202, launched.text
    for _ in range(300):
        run = (await client.get(f"/runs/{launched.json()['id']}", headers=h(key))).json()
        if run["state"] not in ("queued", "running"):
            return run  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    raise AssertionError("run did not finish")


async def test_metrics_report_runs_queue_and_feeds_in_scope(
    client: httpx.AsyncClient, world: World
) -> None:
    a, b = world.a, world.b
    assert (await _run_to_end(client, a.profile_key, a.pipeline_id))["state"] == "succeeded"
    assert (await _run_to_end(client, b.profile_key, b.pipeline_id))["state"] == "succeeded"
    everything = await client.get("/metrics", headers=h(SUPER_KEY))
    assert everything.status_code == 200
    assert everything.headers["content-type"].startswith("text/plain")
    text = everything.text
    assert 'edl_runs{state="succeeded",trigger="api"} 2.0' in text
    assert "edl_queue_depth 0.0" in text
    for pipeline_id in (a.pipeline_id, b.pipeline_id):
        assert (
            f'edl_published_entries{{indicator_type="fqdn",pipeline_id="{pipeline_id}"}} 1.0'
            in text
        )
    assert "edl_feed_requests_total" in text or "# TYPE edl_feed_requests counter" in text
    # An operator linked to tenant A sees only tenant A's figures.
    scoped = (await client.get("/metrics", headers=h(a.operator_key))).text
    assert 'edl_runs{state="succeeded",trigger="api"} 1.0' in scoped
    assert f'pipeline_id="{b.pipeline_id}"' not in scoped
    assert (await client.get("/metrics", headers=h(a.profile_key))).status_code == 403
    assert (await client.get("/metrics")).status_code == 401
