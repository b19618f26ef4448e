"""The device view: stale, behind and up to date from real polls (recorded by the poll
ledger), what a device without declared feeds polled, and a page's constant query cost."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event, select
from sqlmodel import col

from edl_api.fleet.view import device_views
from edl_api.models import Device, DeviceFeedState, utcnow
from edl_api.state import AppState
from tests.feeds.conftest import make_tenant, publish
from tests.helpers import basic, expect, h


async def _device(client: httpx.AsyncClient, profile_id: int, key: str,
                  **body: Any) -> dict[str, Any]:
    return await expect(  # type: ignore[no-any-return]
        await client.post(f"/profiles/{profile_id}/devices", json=body, headers=h(key)), 201
    )


def _panos(pipeline_id: int, **extra: Any) -> dict[str, Any]:
    return {"name": "pa-edge-01", "vendor": "panos", "model": "PA-3260",
            "feeds": [{"pipeline_id": pipeline_id, "indicator_type": "ipv4",
                       "format": "panos"}],
            "expected_poll_minutes": 5, **extra}


async def _views_at(app: Any, device_id: int, minutes: float) -> Any:
    """The device's view as it will be `minutes` from now."""
    async with AppState.of(app).sessionmaker() as session:
        device = await session.get(Device, device_id)
        assert device is not None
        (shown,) = await device_views(session, [device], "https://edl.example.net",
                                      utcnow() + timedelta(minutes=minutes))
        return shown


async def _poll(app: Any, client: httpx.AsyncClient, url: str, token: str) -> httpx.Response:
    answer = await client.get(url, headers=basic(token))
    await AppState.of(app).ledger.flush()  # what the lifespan does every few seconds
    return answer


async def test_up_to_date_after_a_poll_then_behind_until_it_polls_the_new_version(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    a = await make_tenant(client, "a")
    first = await publish(app, tmp_path, a.pipeline_id, {"ipv4": ["192.0.2.1"]})
    made = await _device(client, a.profile_id, a.key, **_panos(a.pipeline_id))
    (feed,) = made["feeds"]
    assert feed["latest_run_id"] == first.id
    assert (feed["served_run_id"], feed["up_to_date"], made["up_to_date"]) == (None, False, False)
    assert made["last_seen_at"] is None

    assert (await _poll(app, client, feed["url"], made["token"])).status_code == 200
    shown = await expect(await client.get(f"/profiles/{a.profile_id}/devices/{made['id']}",
                                          headers=h(a.key)))
    (feed,) = shown["feeds"]
    assert (feed["served_run_id"], feed["up_to_date"], feed["last_status"]) == (
        first.id, True, 200)
    assert feed["entries_served"] == 1
    assert shown["up_to_date"] is True
    assert shown["stale"] is False
    assert shown["behind"] is False
    assert shown["last_seen_at"] is not None
    assert shown["last_address"]

    second = await publish(app, tmp_path, a.pipeline_id, {"ipv4": ["192.0.2.1", "192.0.2.2"]})
    now = await _views_at(app, made["id"], 0)
    assert (now.feeds[0].latest_run_id, now.feeds[0].served_run_id) == (second.id, first.id)
    assert now.up_to_date is False
    assert now.behind is False  # just published: the firewall has not had time to poll
    later = await _views_at(app, made["id"], 6)  # past expected_poll_minutes (5)
    assert later.behind is True
    assert later.stale is True
    assert any(w.startswith(f"behind: pipeline {a.pipeline_id} ipv4 served run {first.id}; "
                            f"the latest is run {second.id}") for w in later.warnings)
    assert any(w.startswith("stale: no poll since ") for w in later.warnings)

    assert (await _poll(app, client, feed["url"], made["token"])).status_code == 200
    caught_up = await _views_at(app, made["id"], 0)
    assert caught_up.up_to_date is True
    assert caught_up.behind is False
    assert caught_up.feeds[0].entries_served == 2


async def test_a_device_that_stops_polling_becomes_stale(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    a = await make_tenant(client, "a")
    run = await publish(app, tmp_path, a.pipeline_id, {"ipv4": ["192.0.2.1"]})
    made = await _device(client, a.profile_id, a.key, **_panos(a.pipeline_id))
    # Never polled: not stale until expected_poll_minutes have passed since it was added.
    assert (await _views_at(app, made["id"], 4)).stale is False
    never = await _views_at(app, made["id"], 6)
    assert never.stale is True
    assert any(w.startswith("stale: never polled since it was added") for w in never.warnings)

    # Its last poll was 10 minutes ago (as a flush from any process would have written it).
    async with AppState.of(app).sessionmaker() as session:
        session.add(DeviceFeedState(
            device_id=made["id"], pipeline_id=a.pipeline_id, indicator_type="ipv4",
            fmt="panos", last_seen_at=utcnow() - timedelta(minutes=10),
            last_address="198.51.100.9", last_status=200, served_run_id=run.id,
            entries_served=1, polls=3,
        ))
        await session.commit()
    shown = await expect(await client.get(f"/profiles/{a.profile_id}/devices/{made['id']}",
                                          headers=h(a.key)))
    assert shown["stale"] is True
    assert shown["last_address"] == "198.51.100.9"
    assert shown["up_to_date"] is True  # it holds the latest version, it just stopped asking
    assert [w for w in shown["warnings"] if w.startswith("stale: no poll since ")]
    listed = await expect(await client.get(f"/profiles/{a.profile_id}/devices",
                                           headers=h(a.key)))
    assert listed["items"][0]["stale"] is True

    # A deleted device is not expected to poll: shown, not stale.
    await expect(await client.delete(f"/profiles/{a.profile_id}/devices/{made['id']}",
                                     headers=h(a.key)))
    gone = await _views_at(app, made["id"], 60)
    assert gone.revoked_at is not None
    assert gone.stale is False
    assert not [w for w in gone.warnings if w.startswith("stale")]


async def test_a_device_without_declared_feeds_shows_what_it_polled(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    a = await make_tenant(client, "a")
    run = await publish(app, tmp_path, a.pipeline_id, {"ipv4": ["192.0.2.1"]})
    made = await _device(client, a.profile_id, a.key, name="siem", vendor="generic")
    assert made["feeds"] == []
    assert made["capacity"] == []
    base = "http://edl.test"
    assert (await _poll(app, client, f"{base}/edl/ipv4", made["token"])).status_code == 200
    assert (await _poll(app, client, f"{base}/pipelines/{a.pipeline_id}/edl/ipv4?format=panos",
                        made["token"])).status_code == 200
    shown = await expect(await client.get(f"/profiles/{a.profile_id}/devices/{made['id']}",
                                          headers=h(a.key)))
    feeds = {(f["pipeline_id"], f["indicator_type"]): f for f in shown["feeds"]}
    assert set(feeds) == {(0, "ipv4"), (a.pipeline_id, "ipv4")}
    assert feeds[(0, "ipv4")]["url"] == f"{base}/edl/ipv4"
    pipeline_feed = feeds[(a.pipeline_id, "ipv4")]
    assert pipeline_feed["url"] == f"{base}/pipelines/{a.pipeline_id}/edl/ipv4?format=panos"
    assert (pipeline_feed["served_run_id"], pipeline_feed["up_to_date"]) == (run.id, True)
    assert pipeline_feed["allocated"] is None  # nothing budgeted
    assert shown["up_to_date"] is True
    assert shown["last_seen_at"] is not None
    assert shown["limits"] == {"ip": None, "fqdn": None, "url": None}
    assert shown["warnings"] == []


async def test_an_unknown_model_says_which_limits_it_gets(
    app: Any, client: httpx.AsyncClient
) -> None:
    a = await make_tenant(client, "a")
    made = await _device(client, a.profile_id, a.key,
                         **_panos(a.pipeline_id, model="PA-99999-imaginary"))
    # The vendor's most conservative row (fleet/limits.yaml).
    assert made["family"] == "PA-220-class"
    assert made["warnings"] == [
        "model PA-99999-imaginary not in the capacity table; using PA-220-class limits"
    ]


async def test_a_page_of_devices_costs_a_constant_number_of_queries(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    a = await make_tenant(client, "a")
    await publish(app, tmp_path, a.pipeline_id, {"ipv4": ["192.0.2.1"], "url": ["a.example/x"]})
    feeds = [{"pipeline_id": a.pipeline_id, "indicator_type": "ipv4"},
             {"pipeline_id": a.pipeline_id, "indicator_type": "url"}]
    for index in range(20):
        made = await _device(client, a.profile_id, a.key, name=f"fw-{index}", vendor="panos",
                             model="PA-3260", feeds=feeds)
        if index % 2:
            await _poll(app, client, f"http://edl.test/pipelines/{a.pipeline_id}/edl/ipv4",
                        made["token"])
    running = AppState.of(app).running
    assert running is not None
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    async def cost(limit: int) -> int:
        async with AppState.of(app).sessionmaker() as session:
            devices = (await session.execute(
                select(Device).order_by(col(Device.id)).limit(limit)
            )).scalars().all()
            statements.clear()
            # This session's connection only: the poll ledger's flush or the dispatcher's
            # heartbeat may run on the same engine meanwhile.
            connection = (await session.connection()).sync_connection
            assert connection is not None
            event.listen(connection, "before_cursor_execute", count)
            try:
                views = await device_views(session, devices, "http://edl.test")
            finally:
                event.remove(connection, "before_cursor_execute", count)
            assert len(views) == limit
            assert sum(v.last_seen_at is not None for v in views) == limit // 2
            return len(statements)

    assert await cost(20) == await cost(2) == 2  # the listener saw them: not 0
