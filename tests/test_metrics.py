from __future__ import annotations

import httpx

from tests.conftest import SUPER_KEY
from tests.factories import World
from tests.helpers import h, run_to_end


def _value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_report_runs_queue_and_feeds_in_scope(
    client: httpx.AsyncClient, world: World
) -> None:
    a, b = world.a, world.b
    finished = 'edl_runs_finished_total{state="succeeded",trigger="api"}'
    durations = 'edl_run_duration_seconds_count{state="succeeded"}'
    before = (await client.get("/metrics", headers=h(SUPER_KEY))).text
    a_run = await run_to_end(client, a.pipeline_id, a.profile_key, persist=True)
    assert a_run["state"] == "succeeded"
    b_run = await run_to_end(client, b.pipeline_id, b.profile_key, persist=True)
    assert b_run["state"] == "succeeded"
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
    # This process's counters moved by exactly the two runs it executed.
    assert _value(text, finished) - _value(before, finished) == 2
    assert _value(text, durations) - _value(before, durations) == 2
    # Feed polls are counted by status and format, whichever path answered them.
    feed = f"/pipelines/{a.pipeline_id}/edl/fqdn"
    ok_series = 'edl_feed_requests_total{format="plain",status="200"}'
    denied_series = 'edl_feed_requests_total{format="panos",status="401"}'
    for _ in range(3):
        assert (await client.get(feed, headers=h(a.profile_key))).status_code == 200
    assert (await client.get(f"{feed}?format=panos", auth=("fw", "wrong"))).status_code == 401
    after = (await client.get("/metrics", headers=h(SUPER_KEY))).text
    assert _value(after, ok_series) - _value(text, ok_series) == 3
    assert _value(after, denied_series) - _value(text, denied_series) == 1
    # An operator linked to tenant A sees only tenant A's figures.
    scoped = (await client.get("/metrics", headers=h(a.operator_key))).text
    assert 'edl_runs{state="succeeded",trigger="api"} 1.0' in scoped
    assert f'pipeline_id="{b.pipeline_id}"' not in scoped
    assert (await client.get("/metrics", headers=h(a.profile_key))).status_code == 403
    assert (await client.get("/metrics")).status_code == 401


PROCESS_SERIES = ("edl_feed_requests", "edl_runs_finished", "edl_run_duration_seconds",
                  "edl_source_fetch_failures")


def _families(text: str) -> set[str]:
    """Family names as declared (`# TYPE`), counters without the `_total` suffix."""
    return {line.split()[2].removesuffix("_total")
            for line in text.splitlines() if line.startswith("# TYPE ")}


async def test_process_wide_counters_are_only_for_callers_who_see_every_tenant(
    client: httpx.AsyncClient, world: World
) -> None:
    a, b = world.a, world.b
    assert (await run_to_end(client, b.pipeline_id, b.profile_key, persist=True))["state"] \
        == "succeeded"
    assert (await client.get(f"/pipelines/{b.pipeline_id}/edl/fqdn",
                             headers=h(b.profile_key))).status_code == 200
    everything = (await client.get("/metrics", headers=h(SUPER_KEY))).text
    assert set(PROCESS_SERIES) <= _families(everything)
    assert 'edl_feed_requests_total{format="plain",status="200"}' in everything
    # A's operator and reader: their scope's database figures, no process counter (those
    # count B's polls, runs and sources too).
    for key in (a.operator_key, a.reader_key):
        scoped = await client.get("/metrics", headers=h(key))
        assert scoped.status_code == 200
        assert _families(scoped.text) == {
            "edl_runs", "edl_queue_depth", "edl_published_entries", "edl_feed_age_seconds",
            "edl_device_last_poll_age_seconds", "edl_devices_stale", "edl_devices_behind",
            "edl_device_capacity_ratio", "edl_device_polls",
        }
        assert "edl_runs{" not in scoped.text  # A ran nothing: B's run is not counted
        assert f'pipeline_id="{b.pipeline_id}"' not in scoped.text
        assert "edl_feed_requests" not in scoped.text
