"""Two-tenant isolation: a foreign id is indistinguishable from a missing one."""

from __future__ import annotations

import httpx
import pytest

from tests.factories import MINIMAL_YAML, World, h

MISSING = 987654


def id_routes(pid: int, cid: int, pipe: int) -> list[tuple[str, str, dict | None]]:
    return [
        ("GET", f"/profiles/{pid}", None),
        ("GET", f"/profiles/{pid}/configs", None),
        ("POST", f"/profiles/{pid}/configs", {"name": "x", "yaml": MINIMAL_YAML}),
        ("GET", f"/profiles/{pid}/configs/{cid}", None),
        ("PATCH", f"/profiles/{pid}/configs/{cid}", {"name": "renamed"}),
        ("GET", f"/profiles/{pid}/configs/{cid}/versions", None),
        ("GET", f"/profiles/{pid}/configs/{cid}/versions/1", None),
        ("GET", f"/profiles/{pid}/pipelines", None),
        ("GET", f"/pipelines/{pipe}", None),
        ("PATCH", f"/pipelines/{pipe}", {"name": "renamed"}),
        ("PATCH", f"/pipelines/{pipe}/config", {"profile_config_id": cid}),
        ("DELETE", f"/pipelines/{pipe}", None),
        ("POST", "/pipelines", {"profile_config_id": cid, "name": "stolen"}),
    ]


@pytest.mark.parametrize("caller", ["profile_key", "operator_key", "reader_key"])
async def test_foreign_ids_look_missing(
    client: httpx.AsyncClient, world: World, caller: str
) -> None:
    key = getattr(world.a, caller)
    b = world.b
    foreign = id_routes(b.profile_id, b.config_id, b.pipeline_id)
    missing = id_routes(MISSING, MISSING, MISSING)
    for (method, url, body), (_, missing_url, missing_body) in zip(foreign, missing, strict=True):
        got = await client.request(method, url, json=body, headers=h(key))
        ref = await client.request(method, missing_url, json=missing_body, headers=h(key))
        assert got.status_code in (403, 404), f"{caller} {method} {url}: {got.status_code}"
        assert (got.status_code, got.json()) == (ref.status_code, ref.json()), (method, url)
    # Nothing of tenant B changed.
    pipeline = await client.get(f"/pipelines/{b.pipeline_id}", headers=h(b.profile_key))
    assert pipeline.json()["name"] == "pipe-b"
    assert pipeline.json()["deleted_at"] is None


async def test_cannot_bind_own_pipeline_to_foreign_config(
    client: httpx.AsyncClient, world: World
) -> None:
    a, b = world.a, world.b
    foreign = await client.patch(
        f"/pipelines/{a.pipeline_id}/config",
        json={"profile_config_id": b.config_id},
        headers=h(a.profile_key),
    )
    missing = await client.patch(
        f"/pipelines/{a.pipeline_id}/config",
        json={"profile_config_id": MISSING},
        headers=h(a.profile_key),
    )
    assert foreign.status_code == 404
    assert foreign.json() == missing.json()


@pytest.mark.parametrize("caller", ["profile_key", "operator_key", "reader_key"])
async def test_lists_hold_only_own_objects(
    client: httpx.AsyncClient, world: World, caller: str
) -> None:
    key = getattr(world.a, caller)
    pipelines = (await client.get("/pipelines", headers=h(key))).json()
    assert [p["id"] for p in pipelines["items"]] == [world.a.pipeline_id]
    assert pipelines["total"] == 1
    filtered = await client.get(f"/pipelines?profile_id={world.b.profile_id}", headers=h(key))
    assert filtered.json()["items"] == []
    assert filtered.json()["total"] == 0
    by_config = await client.get(
        f"/pipelines?profile_config_id={world.b.config_id}", headers=h(key)
    )
    assert by_config.json()["items"] == []
    configs = (await client.get(f"/profiles/{world.a.profile_id}/configs", headers=h(key))).json()
    assert [c["id"] for c in configs["items"]] == [world.a.config_id]
    if caller != "profile_key":
        profiles = (await client.get("/profiles", headers=h(key))).json()
        assert [p["id"] for p in profiles["items"]] == [world.a.profile_id]
        me = (await client.get("/me", headers=h(key))).json()
        assert me["profile_ids"] == [world.a.profile_id]
