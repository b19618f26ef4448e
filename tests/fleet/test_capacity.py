"""Capacity figures and warnings: per kind used / published / limit, the 80 % warning, the
over-limit warning naming each cut, the list-count warning, and the run report's capacity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from edl_api.fleet.capacity import device_capacity, lists_warning
from edl_api.fleet.spec import DeviceFeed, DeviceSpec
from edl_api.models import Pipeline
from edl_api.state import AppState
from tests.feeds.conftest import make_tenant, publish
from tests.helpers import expect, h


def spec(feeds: list[DeviceFeed], *, ip: int | None = 150_000, name: str = "pa-edge-01",
         vendor: str = "panos", model: str | None = "PA-3260") -> DeviceSpec:
    return DeviceSpec(id=1, profile_id=1, name=name, vendor=vendor, model=model,
                      feeds=tuple(feeds), ip_limit=ip, fqdn_limit=4_000_000,
                      url_limit=250_000)


async def test_near_the_limit_warns_with_used_of_limit_across_lists(app: Any) -> None:
    device = spec([DeviceFeed(1, "ipv4"), DeviceFeed(2, "ipv4"), DeviceFeed(3, "cidr"),
                   DeviceFeed(1, "fqdn")])
    counts = {(1, "ipv4"): 100_000, (2, "ipv4"): 40_000, (3, "cidr"): 2_310, (1, "fqdn"): 10}
    async with AppState.of(app).sessionmaker() as session:
        ip, fqdn = await device_capacity(session, device, counts)
    assert (ip.kind, ip.used, ip.published, ip.limit, ip.lists) == ("ip", 142_310, 142_310,
                                                                      150_000, 3)
    assert ip.cut == {}
    assert ip.ratio == pytest.approx(142_310 / 150_000)
    assert ip.warning == (
        "firewall pa-edge-01: 142,310 of 150,000 IP entries (95 %) across 3 lists"
    )
    assert (fqdn.kind, fqdn.published, fqdn.lists, fqdn.warning) == ("fqdn", 10, 1, None)


async def test_thresholds_start_at_80_percent(app: Any) -> None:
    async with AppState.of(app).sessionmaker() as session:
        (below,) = await device_capacity(session, spec([DeviceFeed(1, "url")]),
                                         {(1, "url"): 199_999})
        (at,) = await device_capacity(session, spec([DeviceFeed(1, "url")]),
                                      {(1, "url"): 200_000})
        (unlimited,) = await device_capacity(
            session, spec([DeviceFeed(1, "ipv4")], ip=None, vendor="generic", model=None),
            {(1, "ipv4"): 10_000_000},
        )
    assert below.warning is None
    assert at.warning == "firewall pa-edge-01: 200,000 of 250,000 URL entries (80 %) across 1 list"
    assert (unlimited.limit, unlimited.ratio, unlimited.warning) == (None, None, None)
    assert unlimited.used == 10_000_000


async def test_over_the_limit_names_every_cut_feed_and_serves_only_the_limit(app: Any) -> None:
    # The priority feed is whole; the others share what is left (the serving budget).
    device = spec([DeviceFeed(1, "ipv4", priority=10), DeviceFeed(3, "ip"),
                   DeviceFeed(4, "ipv6")])
    counts = {(1, "ipv4"): 100_000, (3, "ip"): 70_000, (4, "ipv6"): 10_000}
    async with AppState.of(app).sessionmaker() as session:
        (ip,) = await device_capacity(session, device, counts)
    assert ip.published == 180_000
    assert ip.used == 150_000  # never more than the model loads
    assert ip.ratio == pytest.approx(1.2)
    assert ip.cut == {"3/ip": 30_000}
    assert ip.warning == ("firewall pa-edge-01: 180,000 IP entries published for a limit of "
                          "150,000 (120 %): cut pipeline 3 ip by 30,000")

    two_cut = spec([DeviceFeed(3, "ip"), DeviceFeed(4, "ipv6")], ip=100)
    async with AppState.of(app).sessionmaker() as session:
        (ip,) = await device_capacity(session, two_cut, {(3, "ip"): 90, (4, "ipv6"): 90})
    assert ip.used == 100
    assert ip.cut == {"3/ip": 40, "4/ipv6": 40}
    assert ip.warning == ("firewall pa-edge-01: 180 IP entries published for a limit of 100 "
                          "(180 %): cut pipeline 3 ip by 40, pipeline 4 ipv6 by 40")


def test_more_lists_than_the_vendor_takes_is_a_device_warning() -> None:
    # PAN-OS 11.1: 30 custom EDLs per firewall (fleet/limits.yaml).
    thirty = [DeviceFeed(pid, "ipv4") for pid in range(1, 31)]
    assert lists_warning(spec(thirty)) is None
    assert lists_warning(spec([*thirty, DeviceFeed(31, "url")])) == (
        "firewall pa-edge-01: 31 lists declared for a limit of 30 lists"
    )


async def _device(client: httpx.AsyncClient, profile_id: int, key: str,
                  feeds: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    body = {"name": "pa-edge-01", "vendor": "panos", "model": "PA-3260", "feeds": feeds,
            **extra}
    return await expect(  # type: ignore[no-any-return]
        await client.post(f"/profiles/{profile_id}/devices", json=body, headers=h(key)), 201
    )


async def test_published_counts_come_from_live_feeds(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    a = await make_tenant(client, "a")
    await publish(app, tmp_path, a.pipeline_id, {"ipv4": [f"192.0.2.{i}" for i in range(9)]})
    made = await _device(client, a.profile_id, a.key,
                         [{"pipeline_id": a.pipeline_id, "indicator_type": "ipv4"},
                          {"pipeline_id": a.pipeline_id, "indicator_type": "url"}],
                         limits={"ip": 10})
    (ip, url) = made["capacity"]
    assert (ip["published"], ip["used"], ip["limit"]) == (9, 9, 10)
    assert ip["warning"] == "firewall pa-edge-01: 9 of 10 IP entries (90 %) across 1 list"
    assert (url["published"], url["used"], url["warning"]) == (0, 0, None)  # not published
    assert made["warnings"] == [ip["warning"]]
    # An inactive pipeline serves nothing: nothing counts against the limit.
    async with AppState.of(app).sessionmaker() as session:
        pipeline = await session.get(Pipeline, a.pipeline_id)
        assert pipeline is not None
        pipeline.is_active = False
        await session.commit()
    view = await expect(await client.get(f"/profiles/{a.profile_id}/devices/{made['id']}",
                                         headers=h(a.key)))
    assert view["capacity"][0]["published"] == 0
    assert view["warnings"] == []


async def test_run_report_carries_the_capacity_of_the_pipelines_devices(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    a = await make_tenant(client, "a")
    b = await make_tenant(client, "b")
    feeds = [{"pipeline_id": a.pipeline_id, "indicator_type": "ipv4"}]
    near = await _device(client, a.profile_id, a.key, feeds, limits={"ip": 10})
    over = await _device(client, a.profile_id, a.key, feeds, name="pa-small", limits={"ip": 5})
    gone = await _device(client, a.profile_id, a.key, feeds, name="pa-gone")
    await expect(await client.delete(f"/profiles/{a.profile_id}/devices/{gone['id']}",
                                     headers=h(a.key)))
    await _device(client, b.profile_id, b.key,
                  [{"pipeline_id": b.pipeline_id, "indicator_type": "ipv4"}], name="b-fw")

    run = await publish(app, tmp_path, a.pipeline_id,
                        {"ipv4": [f"192.0.2.{i}" for i in range(9)]})
    assert run.state == "succeeded"
    report = run.counts["capacity"]
    rows = {row["device"]: row for row in report["devices"]}
    assert set(rows) == {"pa-edge-01", "pa-small"}  # no revoked device, no other tenant's
    assert rows["pa-edge-01"]["device_id"] == near["id"]
    assert (rows["pa-edge-01"]["used"], rows["pa-edge-01"]["limit"]) == (9, 10)
    assert rows["pa-small"]["device_id"] == over["id"]
    assert (rows["pa-small"]["used"], rows["pa-small"]["published"]) == (5, 9)
    assert report["warnings"] == [
        "firewall pa-edge-01: 9 of 10 IP entries (90 %) across 1 list",
        "firewall pa-small: 9 IP entries published for a limit of 5 (180 %): "
        f"cut pipeline {a.pipeline_id} ipv4 by 4",
    ]
    # The run as the API reports it.
    shown = await expect(await client.get(f"/runs/{run.id}", headers=h(a.key)))
    assert shown["counts"]["capacity"]["warnings"] == report["warnings"]


async def test_a_failing_capacity_report_never_fails_the_publish(
    app: Any, client: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(session: AsyncSession, pipeline_id: int) -> dict[str, Any]:
        # A failed statement: on PostgreSQL it would abort the publish's transaction.
        await session.execute(text("SELECT * FROM no_such_table"))
        raise AssertionError("unreachable")

    monkeypatch.setattr("edl_api.fleet.capacity.pipeline_capacity", broken)
    a = await make_tenant(client, "a")
    run = await publish(app, tmp_path, a.pipeline_id, {"ipv4": ["192.0.2.1", "192.0.2.2"]})
    assert run.state == "succeeded", run.errors
    assert "capacity" not in run.counts
    assert run.counts["feeds"]["ipv4"]["published"] is True
    served = await client.get(f"/pipelines/{a.pipeline_id}/edl/ipv4", headers=h(a.key))
    assert served.text.split() == ["192.0.2.1", "192.0.2.2"]
