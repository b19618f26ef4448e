from __future__ import annotations

import httpx

from tests.conftest import SUPER_KEY
from tests.factories import World, create_config, create_pipeline
from tests.helpers import expect, h


async def test_soft_delete(client: httpx.AsyncClient, world: World) -> None:
    a = world.a
    deleted = await expect(
        await client.delete(f"/pipelines/{a.pipeline_id}", headers=h(a.profile_key)), 200
    )
    assert deleted["deleted_at"] is not None
    assert deleted["is_active"] is False
    again = await expect(
        await client.delete(f"/pipelines/{a.pipeline_id}", headers=h(a.profile_key)), 200
    )
    assert again["deleted_at"] == deleted["deleted_at"]
    # Still readable by id, gone from default lists, back with include_deleted.
    assert (
        await client.get(f"/pipelines/{a.pipeline_id}", headers=h(a.profile_key))
    ).status_code == 200
    listed = (await client.get("/pipelines", headers=h(a.profile_key))).json()
    assert listed["items"] == []
    with_deleted = (
        await client.get("/pipelines?include_deleted=true", headers=h(a.profile_key))
    ).json()
    assert [p["id"] for p in with_deleted["items"]] == [a.pipeline_id]
    rebind = await client.patch(
        f"/pipelines/{a.pipeline_id}/config",
        json={"profile_config_id": a.config_id},
        headers=h(a.profile_key),
    )
    assert rebind.status_code == 409
    assert rebind.json()["error"] == "pipeline_deleted"


async def test_rebind_within_profile_only(client: httpx.AsyncClient, world: World) -> None:
    a, b = world.a, world.b
    other = await create_config(client, a.profile_key, a.profile_id, "other")
    moved = await expect(
        await client.patch(
            f"/pipelines/{a.pipeline_id}/config",
            json={"profile_config_id": other["id"]},
            headers=h(a.profile_key),
        ),
        200,
    )
    assert moved["profile_config_id"] == other["id"]
    # A super-admin sees both profiles, and still may not cross them.
    cross = await client.patch(
        f"/pipelines/{a.pipeline_id}/config",
        json={"profile_config_id": b.config_id},
        headers=h(SUPER_KEY),
    )
    assert cross.status_code == 422
    assert cross.json()["error"] == "config_profile_mismatch"


async def test_filters_and_active_only(client: httpx.AsyncClient, world: World) -> None:
    a = world.a
    other = await create_config(client, a.profile_key, a.profile_id, "other")
    idle = await create_pipeline(client, a.profile_key, other["id"], "idle", is_active=False)
    key = h(SUPER_KEY)
    by_config = (
        await client.get(f"/pipelines?profile_config_id={other['id']}", headers=key)
    ).json()
    assert [p["id"] for p in by_config["items"]] == [idle["id"]]
    active = (
        await client.get(f"/pipelines?profile_id={a.profile_id}&active_only=true", headers=key)
    ).json()
    assert [p["id"] for p in active["items"]] == [a.pipeline_id]
    scoped = (await client.get(f"/profiles/{a.profile_id}/pipelines", headers=key)).json()
    assert {p["id"] for p in scoped["items"]} == {a.pipeline_id, idle["id"]}
    patched = await expect(
        await client.patch(
            f"/pipelines/{idle['id']}",
            json={"is_active": True, "concurrency_limit": 3},
            headers=h(a.operator_key),
        ),
        200,
    )
    assert patched["is_active"] is True
    assert patched["concurrency_limit"] == 3


async def test_concurrency_limit_bounds(client: httpx.AsyncClient, world: World) -> None:
    for bad in (0, -1, 1000):
        r = await client.post(
            "/pipelines",
            json={"profile_config_id": world.a.config_id, "name": "x", "concurrency_limit": bad},
            headers=h(world.a.profile_key),
        )
        assert r.status_code == 422
    created = await create_pipeline(
        client, world.a.profile_key, world.a.config_id, "c", concurrency_limit=4
    )
    assert created["concurrency_limit"] == 4
    assert created["profile_id"] == world.a.profile_id
