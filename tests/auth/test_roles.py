"""The role × action matrix of API.md (403 where a cell is "–")."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import OPERATOR_LEGACY_KEY, READER_LEGACY_KEY, SUPER_KEY
from tests.factories import MINIMAL_YAML, World
from tests.helpers import h


def caller_key(world: World, who: str) -> str:
    return {
        "super": SUPER_KEY,
        "operator": world.a.operator_key,
        "reader": world.a.reader_key,
        "profile": world.a.profile_key,
        "legacy_operator": OPERATOR_LEGACY_KEY,
        "legacy_reader": READER_LEGACY_KEY,
    }[who]


ADMIN_ALLOWED = {"super"}
CREATE_PROFILE_ALLOWED = {"super", "operator", "legacy_operator"}
LIST_PROFILES_ALLOWED = {"super", "operator", "reader", "legacy_operator", "legacy_reader"}
WRITE_ALLOWED = {"super", "operator", "profile", "legacy_operator"}
ALL = ["super", "operator", "reader", "profile", "legacy_operator", "legacy_reader"]


@pytest.mark.parametrize("who", ALL)
async def test_admin_accounts_are_super_only(
    client: httpx.AsyncClient, world: World, who: str
) -> None:
    key = caller_key(world, who)
    ok = who in ADMIN_ALLOWED
    create = await client.post(
        "/admin/accounts", json={"name": "x", "role": "reader"}, headers=h(key)
    )
    assert create.status_code == (201 if ok else 403), create.text
    assert (await client.get("/admin/accounts", headers=h(key))).status_code == (200 if ok else 403)
    link = await client.post(
        f"/admin/accounts/{world.b.reader_id}/profiles/{world.a.profile_id}", headers=h(key)
    )
    assert link.status_code == (200 if ok else 403)
    if not ok:
        assert create.json()["error"] == "forbidden"
        revoke = await client.delete(f"/admin/accounts/{world.b.reader_id}", headers=h(key))
        assert revoke.status_code == 403


@pytest.mark.parametrize("who", ALL)
async def test_create_and_list_profiles(client: httpx.AsyncClient, world: World, who: str) -> None:
    key = caller_key(world, who)
    created = await client.post("/profiles", json={"name": f"new-{who}"}, headers=h(key))
    assert created.status_code == (201 if who in CREATE_PROFILE_ALLOWED else 403), created.text
    listing = await client.get("/profiles", headers=h(key))
    assert listing.status_code == (200 if who in LIST_PROFILES_ALLOWED else 403)
    if who == "operator":
        # Auto-linked: the operator sees its new profile at once (cache refreshed).
        ids = {p["id"] for p in listing.json()["items"]}
        assert ids == {world.a.profile_id, created.json()["profile"]["id"]}
    if who in ("super", "legacy_operator", "legacy_reader"):
        assert listing.json()["total"] == 2 + (1 if who in CREATE_PROFILE_ALLOWED else 0)


@pytest.mark.parametrize("who", ALL)
async def test_write_actions(client: httpx.AsyncClient, world: World, who: str) -> None:
    key, a = caller_key(world, who), world.a
    allowed = who in WRITE_ALLOWED
    expected = 201 if allowed else 403
    config = await client.post(
        f"/profiles/{a.profile_id}/configs",
        json={"name": "c", "yaml": MINIMAL_YAML},
        headers=h(key),
    )
    assert config.status_code == expected, config.text
    patch = await client.patch(
        f"/profiles/{a.profile_id}/configs/{a.config_id}", json={"name": "n"}, headers=h(key)
    )
    assert patch.status_code == (200 if allowed else 403)
    pipeline = await client.post(
        "/pipelines", json={"profile_config_id": a.config_id, "name": "p"}, headers=h(key)
    )
    assert pipeline.status_code == expected
    rebind = await client.patch(
        f"/pipelines/{a.pipeline_id}/config",
        json={"profile_config_id": a.config_id},
        headers=h(key),
    )
    assert rebind.status_code == (200 if allowed else 403)
    delete = await client.delete(f"/pipelines/{a.pipeline_id}", headers=h(key))
    assert delete.status_code == (200 if allowed else 403)


@pytest.mark.parametrize("who", ALL)
async def test_reads_for_everyone_in_scope(
    client: httpx.AsyncClient, world: World, who: str
) -> None:
    key, a = caller_key(world, who), world.a
    for url in (
        f"/profiles/{a.profile_id}",
        f"/profiles/{a.profile_id}/configs",
        f"/profiles/{a.profile_id}/configs/{a.config_id}",
        f"/profiles/{a.profile_id}/configs/{a.config_id}/versions",
        f"/profiles/{a.profile_id}/pipelines",
        f"/pipelines/{a.pipeline_id}",
        "/pipelines",
        "/me",
    ):
        response = await client.get(url, headers=h(key))
        assert response.status_code == 200, (who, url, response.text)


async def test_operator_cannot_create_profile_for_another_admin(
    client: httpx.AsyncClient, world: World
) -> None:
    r = await client.post(
        f"/profiles?owner_admin_id={world.b.operator_id}",
        json={"name": "x"},
        headers=h(world.a.operator_key),
    )
    assert r.status_code == 403
    r = await client.post(
        f"/profiles?owner_admin_id={world.b.operator_id}",
        json={"name": "for-b"},
        headers=h(SUPER_KEY),
    )
    assert r.status_code == 201
    profiles = (await client.get("/profiles", headers=h(world.b.operator_key))).json()
    assert "for-b" in {p["name"] for p in profiles["items"]}
    bad = await client.post(
        "/profiles?owner_admin_id=999999", json={"name": "x"}, headers=h(SUPER_KEY)
    )
    assert bad.status_code == 422
    assert bad.json()["error"] == "unknown_owner_admin"


async def test_unlink_removes_scope_at_once(client: httpx.AsyncClient, world: World) -> None:
    url = f"/profiles/{world.a.profile_id}"
    assert (await client.get(url, headers=h(world.a.reader_key))).status_code == 200
    await client.delete(
        f"/admin/accounts/{world.a.reader_id}/profiles/{world.a.profile_id}", headers=h(SUPER_KEY)
    )
    assert (await client.get(url, headers=h(world.a.reader_key))).status_code == 404
