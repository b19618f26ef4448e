"""DELETE /profiles/{id}: refused while in use, forced it takes pipelines, keys and device
credentials with it; afterwards the profile is missing for everyone, its name is free, and
its rows are purged after EDL_DELETED_RETENTION_DAYS."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select
from sqlmodel import col

from edl_api.models import Device, Pipeline, PipelineRun, Profile, ProfileConfig
from edl_api.profiles import lifecycle
from edl_api.state import AppState
from tests.conftest import SUPER_KEY
from tests.factories import World, create_profile, make_pipeline
from tests.helpers import basic, expect, h, run_to_end


async def _device(client: httpx.AsyncClient, profile_id: int, key: str) -> str:
    made = await expect(await client.post(
        f"/profiles/{profile_id}/devices", json={"name": "siem"}, headers=h(key)
    ), 201)
    return str(made["token"])


async def test_delete_refused_in_use_then_forced(client: httpx.AsyncClient, world: World) -> None:
    a, b = world.a, world.b
    served = await make_pipeline(client, a.profile_id, name="served")
    run = await run_to_end(client, served, a.profile_key, persist=True)
    assert run["state"] == "succeeded"
    token = await _device(client, a.profile_id, a.profile_key)
    feed = f"/pipelines/{served}/edl/ip"
    assert (await client.get(feed, headers=basic(token))).status_code == 200
    url = f"/profiles/{a.profile_id}"

    # Who may not: a reader (403), the profile key (403), another tenant's operator (404).
    assert (await client.delete(url, headers=h(a.reader_key))).status_code == 403
    assert (await client.delete(url, headers=h(a.profile_key))).status_code == 403
    foreign = await client.delete(url, headers=h(b.operator_key))
    missing = await client.delete("/profiles/999999", headers=h(b.operator_key))
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["detail"] == missing.json()["detail"]

    refused = await client.delete(url, headers=h(a.operator_key))
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["error"] == "profile_in_use"
    assert f"{a.pipeline_id} ('pipe-a')" in body["detail"]
    assert "force=true" in body["detail"]
    assert (await client.get(url, headers=h(a.profile_key))).status_code == 200  # unchanged

    deleted = await expect(await client.delete(f"{url}?force=true", headers=h(a.operator_key)))
    assert deleted["pipelines_deleted"] == [a.pipeline_id, served]
    assert deleted["devices_revoked"] == 1
    assert deleted["purge_after"] > deleted["deleted_at"]

    # Missing for every caller, super-admin included, and every credential of it is dead.
    for key in (SUPER_KEY, a.operator_key, a.reader_key):
        assert (await client.get(url, headers=h(key))).status_code == 404
        assert (await client.get(f"/pipelines/{a.pipeline_id}", headers=h(key))).status_code == 404
        assert (await client.get(f"/runs/{run['id']}", headers=h(key))).status_code == 404
        assert (
            await client.get(f"{url}/configs/{a.config_id}", headers=h(key))
        ).status_code == 404
        listed = await expect(await client.get("/profiles", headers=h(key)))
        assert a.profile_id not in [p["id"] for p in listed["items"]]
        runs = await expect(await client.get("/runs", headers=h(key)))
        assert run["id"] not in [r["id"] for r in runs["items"]]
    assert (await client.get("/me", headers=h(a.profile_key))).status_code == 401
    assert (await client.get(feed, headers=basic(token))).status_code == 401
    assert (await client.delete(url, headers=h(SUPER_KEY))).status_code == 404
    linked = await client.post(
        f"/admin/accounts/{a.reader_id}/profiles/{a.profile_id}", headers=h(SUPER_KEY)
    )
    assert linked.status_code == 404

    # The other tenant is untouched, and the name is free again.
    other = await client.get(f"/profiles/{b.profile_id}", headers=h(b.profile_key))
    assert other.status_code == 200
    again = await create_profile(client, a.operator_key, "tenant-a")
    assert again["profile"]["id"] != a.profile_id


async def test_delete_without_pipelines_needs_no_force(
    client: httpx.AsyncClient, world: World
) -> None:
    created = await create_profile(client, world.a.operator_key, "empty")
    deleted = await expect(
        await client.delete(f"/profiles/{created['profile']['id']}", headers=h(SUPER_KEY))
    )
    assert deleted["pipelines_deleted"] == []
    assert deleted["devices_revoked"] == 0


async def _count(app: Any, model: Any, column: Any, value: int) -> int:
    async with AppState.of(app).sessionmaker() as session:
        found = await session.execute(
            select(func.count()).select_from(model).where(column == value)
        )
        return int(found.scalar_one())


async def test_purge_after_retention(app: Any, client: httpx.AsyncClient, world: World) -> None:
    a = world.a
    await run_to_end(client, a.pipeline_id, a.profile_key, persist=True)
    await _device(client, a.profile_id, a.profile_key)
    await expect(await client.delete(f"/profiles/{a.profile_id}?force=true", headers=h()))
    maker = AppState.of(app).sessionmaker
    # Kept for the retention: the rows are still there, only hidden.
    async with maker() as session, session.begin():
        assert await lifecycle.purge_deleted(session, 30) == []
    assert await _count(app, Pipeline, col(Pipeline.profile_id), a.profile_id) == 1
    async with maker() as session, session.begin():
        assert await lifecycle.purge_deleted(session, 0) == [a.profile_id]
    for model, column in (
        (Profile, col(Profile.id)), (ProfileConfig, col(ProfileConfig.profile_id)),
        (Pipeline, col(Pipeline.profile_id)), (PipelineRun, col(PipelineRun.profile_id)),
        (Device, col(Device.profile_id)),
    ):
        assert await _count(app, model, column, a.profile_id) == 0, model
    # The other tenant keeps everything.
    assert await _count(app, Pipeline, col(Pipeline.profile_id), world.b.profile_id) == 1
    assert (
        await client.get(f"/pipelines/{world.b.pipeline_id}", headers=h(world.b.profile_key))
    ).status_code == 200
