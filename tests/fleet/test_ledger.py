"""The poll ledger: every poll with a device credential shows up in the device's view and
its polls page within the flush interval (route and fast-path answers, errors too), a
revoked device's polls stop at once, old polls are pruned, and a flush the database
refuses keeps its polls for the next one."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from edl_api.feeds import serving
from edl_api.fleet import ledger as ledger_module
from edl_api.fleet.ledger import PollLedger
from edl_api.metrics import PROCESS_REGISTRY
from edl_api.models import DeviceFeedState, DevicePoll, DevicePollCount, utcnow
from edl_api.settings import Settings
from edl_api.state import AppState
from tests.conftest import make_settings
from tests.feeds.conftest import make_tenant, publish
from tests.helpers import basic, expect, h

FLUSH = 0.2


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return make_settings(tmp_path, database_url, poll_flush_seconds=FLUSH)


def device_body(pipeline_id: int) -> dict[str, Any]:
    return {"name": "pa-edge-01", "vendor": "panos", "model": "PA-3260",
            "feeds": [{"pipeline_id": pipeline_id, "indicator_type": "ipv4",
                       "format": "panos"}]}


async def polls_page(client: httpx.AsyncClient, base: str, key: str) -> dict[str, Any]:
    return await expect(await client.get(f"{base}/polls", headers=h(key)))  # type: ignore[no-any-return]


async def wait_polls(
    client: httpx.AsyncClient, base: str, key: str, total: int, timeout: float = 5
) -> list[dict[str, Any]]:
    """The polls page once its rows add up to `total` polls (fails after `timeout` s)."""
    deadline = time.monotonic() + timeout
    while True:
        items = (await polls_page(client, base, key))["items"]
        counted = sum(item["polls"] for item in items)
        if counted >= total:
            assert counted == total, items
            return items  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"{counted} of {total} polls recorded: {items}"
        await asyncio.sleep(FLUSH / 2)


async def test_polls_show_in_the_view_and_the_polls_page(
    app: Any, client: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await make_tenant(client, "a")
    run = await publish(app, tmp_path, a.pipeline_id, {"ipv4": ["192.0.2.1", "192.0.2.2"]})
    devices = f"/profiles/{a.profile_id}/devices"
    made = await expect(await client.post(devices, json=device_body(a.pipeline_id),
                                          headers=h(a.key)), 201)
    base = f"{devices}/{made['id']}"
    auth = basic(made["token"])
    url = made["feeds"][0]["url"]

    first = await client.get(url, headers=auth)  # the route: verifies the key, fills caches
    assert first.status_code == 200, first.text
    etag = first.headers["etag"]
    # From now on only the fast path can answer: the route's feed lookup would fail.
    monkeypatch.setattr(serving, "feed_body", _route_must_not_run)
    for _ in range(3):
        assert (await client.get(url, headers=auth | {"If-None-Match": etag})).status_code == 304
    monkeypatch.undo()
    # Error answers are recorded all the same: a pipeline outside its scope, a format
    # that does not exist (refused before any feed is looked up).
    missing = await client.get("/pipelines/999999/edl/ipv4", headers=auth)
    assert missing.status_code == 404, missing.text
    wrong = await client.get(f"/pipelines/{a.pipeline_id}/edl/ipv4?format=nope", headers=auth)
    assert wrong.status_code == 422, wrong.text

    items = await wait_polls(client, base, a.key, total=6)
    by_status = {item["status"]: item for item in items}
    assert set(by_status) == {200, 304, 404, 422}
    assert by_status[304]["polls"] == 3
    assert by_status[304]["bytes"] == 0
    ok = by_status[200]
    assert ok["polls"] == 1
    assert ok["bytes"] == int(first.headers["content-length"])  # as sent (gzip here)
    assert ok["pipeline_id"] == a.pipeline_id
    assert ok["format"] == "panos"
    assert ok["etag"] == etag.strip('"')
    assert ok["run_ids"] == str(run.id)
    assert ok["entries"] == 2
    assert ok["truncated"] == 0
    assert ok["address"] == "127.0.0.1"
    assert by_status[404]["pipeline_id"] == 999999
    assert by_status[404]["etag"] is None
    assert by_status[422]["format"] == "nope"
    assert by_status[422]["pipeline_id"] == a.pipeline_id
    assert items[0]["last_at"] >= items[-1]["last_at"]  # newest first

    # The device view: what it holds is the 304's version, even after the 422.
    view = await expect(await client.get(base, headers=h(a.key)))
    assert view["last_seen_at"] is not None
    assert view["last_address"] == "127.0.0.1"
    (feed,) = view["feeds"]
    assert feed["served_run_id"] == run.id
    assert feed["last_status"] == 422
    assert feed["entries_served"] == 2
    async with AppState.of(app).sessionmaker() as session:
        counts = dict((await session.execute(
            select(DevicePollCount.status, DevicePollCount.polls)
            .where(DevicePollCount.device_id == made["id"])
        )).all())
        state = (await session.execute(
            select(DeviceFeedState).where(DeviceFeedState.device_id == made["id"],
                                          DeviceFeedState.pipeline_id == a.pipeline_id)
        )).scalar_one()
    assert counts == {200: 1, 304: 3, 404: 1, 422: 1}
    assert state.polls == 5
    assert state.served_etag == etag.strip('"')
    assert state.fmt == "nope"
    assert state.last_status == 422

    # Another profile's device is the same 404 as a missing one.
    b = await make_tenant(client, "b")
    foreign = await client.get(f"/profiles/{b.profile_id}/devices/{made['id']}/polls",
                               headers=h(b.key))
    assert foreign.status_code == 404
    assert (await client.get(f"{base}/polls", headers=h(b.key))).status_code == 404
    nothing = await client.get(f"{devices}/999999/polls", headers=h(a.key))
    assert nothing.status_code == 404
    assert nothing.json() == foreign.json()


async def _route_must_not_run(*_: Any, **__: Any) -> Any:
    raise AssertionError("the route answered a poll the fast path should have")


async def test_a_revoked_device_is_refused_at_once_and_no_longer_recorded(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    a = await make_tenant(client, "a")
    await publish(app, tmp_path, a.pipeline_id, {"ipv4": ["192.0.2.1"]})
    devices = f"/profiles/{a.profile_id}/devices"
    made = await expect(await client.post(devices, json=device_body(a.pipeline_id),
                                          headers=h(a.key)), 201)
    base = f"{devices}/{made['id']}"
    url, auth = made["feeds"][0]["url"], basic(made["token"])
    for _ in range(2):
        assert (await client.get(url, headers=auth)).status_code == 200
    await wait_polls(client, base, a.key, total=2)
    await expect(await client.delete(base, headers=h(a.key)))
    for _ in range(3):
        assert (await client.get(url, headers=auth)).status_code == 401
    await asyncio.sleep(FLUSH * 3)
    items = (await polls_page(client, base, a.key))["items"]  # still readable once deleted
    assert sum(item["polls"] for item in items) == 2
    assert AppState.of(app).ledger.pending_polls == 0


async def test_old_polls_are_pruned_and_deleted_devices_skipped(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    a = await make_tenant(client, "a")
    made = await expect(await client.post(f"/profiles/{a.profile_id}/devices",
                                          json={"name": "fw"}, headers=h(a.key)), 201)
    state = AppState.of(app)
    # A ledger of the test's own: the app's background flush cannot take its window.
    ledger = PollLedger(60, state.settings.poll_retention_days)
    ledger.attach(state.sessionmaker)
    # The app's ledger prunes on its first flush: let it do that now, not between the
    # insert below and this ledger's prune (it then waits PRUNE_EVERY_SECONDS).
    await state.ledger.flush()
    old = utcnow() - timedelta(days=state.settings.poll_retention_days, hours=1)
    recent = utcnow() - timedelta(days=state.settings.poll_retention_days - 1)
    async with state.sessionmaker() as session:
        for moment in (old, recent):
            session.add(DevicePoll(device_id=made["id"], indicator_type="ipv4", fmt="plain",
                                   status=200, first_at=moment, last_at=moment))
        await session.commit()
    assert await ledger.prune_old() == 1
    # A poll of a device that no longer exists does not hold up the others.
    ledger.record(made["id"], None, "ipv4", "plain", 200, "e", "1", 10, 1, 0, "192.0.2.9")
    ledger.record(987654, None, "ipv4", "plain", 200, "e", "1", 10, 1, 0, "192.0.2.9")
    assert await ledger.flush() == 1
    assert ledger.pending_polls == 0
    async with state.sessionmaker() as session:
        kept = (await session.execute(select(DevicePoll))).scalars().all()
    assert sorted((p.last_at > recent, p.address) for p in kept) == [
        (False, None), (True, "192.0.2.9")]


def _dropped_total() -> float:
    value = PROCESS_REGISTRY.get_sample_value("edl_device_polls_dropped_total")
    return value or 0.0


async def test_a_failed_flush_keeps_the_polls_for_the_next(tmp_path: Path) -> None:
    """SQLite that cannot open its file is a database outage: the window waits, bounded."""
    broken = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/missing/dir/edl.db")
    ledger = PollLedger(60, 14, max_keys=2)
    ledger.attach(async_sessionmaker(broken))
    ledger.record(1, 5, "ipv4", "plain", 200, "e1", "7", 100, 3, 0, "192.0.2.1")
    ledger.record(1, 5, "ipv4", "plain", 304, "e1", "7", 0, 3, 0, "192.0.2.1")
    assert await ledger.flush() == 0
    assert ledger.pending_polls == 2
    # Polled again meanwhile: merged with the kept window; a third key is over the cap.
    ledger.record(1, 5, "ipv4", "plain", 304, "e1", "7", 0, 3, 0, "192.0.2.1")
    before = _dropped_total()
    ledger.record(1, 5, "ipv4", "plain", 404, None, "", 0, None, 0, "192.0.2.1")
    assert ledger.dropped == 1
    assert _dropped_total() == before + 1
    assert await ledger.flush() == 0
    assert ledger.pending_polls == 3
    await broken.dispose()

    # The database is back: the kept polls are written once, with their counts.
    from edl_api.db import create_engine, ensure_schema

    settings = make_settings(tmp_path, None)
    engine = create_engine(settings)
    await ensure_schema(engine)
    maker = async_sessionmaker(engine, expire_on_commit=False)
    async with maker() as session:
        from edl_api.models import Device, Profile

        profile = Profile(name="p", key_id="k" * 12, key_hash="x")
        session.add(profile)
        await session.flush()
        session.add(Device(id=1, profile_id=profile.id, name="fw", key_id="d" * 12,
                           key_hash="x"))
        await session.commit()
    ledger.attach(maker)
    assert await ledger.flush() == 2
    assert ledger.pending_polls == 0
    async with maker() as session:
        rows = {p.status: p.polls for p in (await session.execute(select(DevicePoll))).scalars()}
        assert rows == {200: 1, 304: 2}
        served = (await session.execute(select(func.sum(DeviceFeedState.polls)))).scalar_one()
        assert served == 3
    await engine.dispose()


def test_recording_off_records_nothing() -> None:
    ledger = PollLedger(5, 14, enabled=False)
    ledger.record(1, 5, "ipv4", "plain", 200, "e", "1", 1, 1, 0, None)
    assert ledger.pending_polls == 0
    assert ledger_module.served(304, "panos")
    assert not ledger_module.served(200, "plain.md5")
