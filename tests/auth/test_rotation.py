"""Profile key rotation and revocation: who may, what stops working, and when another
process notices."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from edl_api.app import create_app
from edl_api.settings import Settings
from tests.conftest import SUPER_KEY, asgi_client, make_settings
from tests.factories import World
from tests.helpers import expect, h


async def _rotate(client: httpx.AsyncClient, profile_id: int, key: str) -> dict:
    return await expect(await client.post(f"/profiles/{profile_id}/key", headers=h(key)), 201)


async def test_rotation_replaces_the_key_at_once(
    client: httpx.AsyncClient, world: World
) -> None:
    a = world.a
    url = f"/profiles/{a.profile_id}"
    before = await expect(await client.get(url, headers=h(a.profile_key)))  # now cached
    assert before["key_rotated_at"] is None
    rotated = await _rotate(client, a.profile_id, a.profile_key)  # the key rotates itself
    new_key = rotated["api_key"]
    assert new_key.startswith("edlp_")
    assert new_key != a.profile_key
    assert rotated["profile_id"] == a.profile_id
    # the old key was cached: it must still answer 401 on its very next request
    old = await client.get(url, headers=h(a.profile_key))
    assert (old.status_code, old.json()["error"]) == (401, "unauthorized")
    after = await expect(await client.get(url, headers=h(new_key)))
    assert after["key_rotated_at"] == rotated["key_rotated_at"]
    # the key is shown once: nothing else answers it
    listed = await expect(await client.get("/profiles", headers=h(SUPER_KEY)))
    assert new_key not in str(listed)
    assert new_key not in str(after)
    # the other tenant is untouched
    assert (await client.get(f"/profiles/{world.b.profile_id}",
                             headers=h(world.b.profile_key))).status_code == 200


@pytest.mark.parametrize("who", ["super", "operator", "operator_b", "reader", "profile_b"])
async def test_who_may_rotate(client: httpx.AsyncClient, world: World, who: str) -> None:
    keys = {
        "super": SUPER_KEY, "operator": world.a.operator_key, "operator_b": world.b.operator_key,
        "reader": world.a.reader_key, "profile_b": world.b.profile_key,
    }
    expected = {"super": 201, "operator": 201, "operator_b": 404, "reader": 403,
                "profile_b": 404}[who]
    for method in ("POST", "DELETE"):
        r = await client.request(method, f"/profiles/{world.a.profile_id}/key",
                                 headers=h(keys[who]))
        want = 204 if method == "DELETE" and expected == 201 else expected
        assert r.status_code == want, r.text
        if want >= 400:
            assert r.json()["error"] in ("forbidden", "not_found")
    # a refused caller changed nothing: the profile key still works
    still = await client.get(f"/profiles/{world.a.profile_id}", headers=h(world.a.profile_key))
    assert still.status_code == (401 if expected == 201 else 200)


async def test_a_feed_token_may_not_rotate(client: httpx.AsyncClient, world: World) -> None:
    token = await expect(await client.post(
        f"/profiles/{world.a.profile_id}/feed-tokens", json={"name": "fw"},
        headers=h(world.a.profile_key),
    ), 201)
    r = await client.post(f"/profiles/{world.a.profile_id}/key", headers=h(token["token"]))
    assert r.status_code == 403


async def test_revocation_leaves_no_working_profile_key(
    client: httpx.AsyncClient, world: World
) -> None:
    a = world.a
    url = f"/profiles/{a.profile_id}"
    await expect(await client.get(url, headers=h(a.profile_key)))
    r = await client.delete(f"{url}/key", headers=h(a.operator_key))
    assert (r.status_code, r.content) == (204, b"")
    assert (await client.get(url, headers=h(a.profile_key))).status_code == 401
    # the profile works on through admin keys, and shows when its key went
    shown = await expect(await client.get(url, headers=h(a.operator_key)))
    assert shown["key_rotated_at"] is not None
    # revoking again changes nothing
    assert (await client.delete(f"{url}/key", headers=h(SUPER_KEY))).status_code == 204
    again = await expect(await client.get(url, headers=h(SUPER_KEY)))
    assert again["key_rotated_at"] == shown["key_rotated_at"]
    # a rotation after a revocation issues a working key
    new_key = (await _rotate(client, a.profile_id, a.operator_key))["api_key"]
    assert (await client.get(url, headers=h(new_key))).status_code == 200
    assert (await client.get(url, headers=h(a.profile_key))).status_code == 401


async def test_unknown_profile_is_404(client: httpx.AsyncClient) -> None:
    for method in ("POST", "DELETE"):
        r = await client.request(method, "/profiles/999999/key", headers=h(SUPER_KEY))
        assert (r.status_code, r.json()["error"]) == (404, "not_found")


async def test_rotation_in_another_process_is_seen(
    client: httpx.AsyncClient, world: World, tmp_path: Path, settings: Settings
) -> None:
    # A second app on the same database stands for a second `edl-api serve` process; its
    # poll is slow enough that two rotations land between two of its polls.
    other = create_app(make_settings(
        tmp_path / "other", settings.resolved_database_url, key_revocation_poll_seconds=0.5
    ))
    async with other.router.lifespan_context(other), asgi_client(other) as second:
        a, b = world.a, world.b
        url = f"/profiles/{a.profile_id}"
        assert (await second.get(url, headers=h(a.profile_key))).status_code == 200  # cached
        assert (await second.get(f"/profiles/{b.profile_id}",
                                 headers=h(b.profile_key))).status_code == 200
        first_new = (await _rotate(client, a.profile_id, SUPER_KEY))["api_key"]
        assert (await second.get(url, headers=h(first_new))).status_code == 200  # cached
        # Twice before the other process polls: the row now names only `first_new` as the
        # previous key, yet the original key must stop working there too.
        latest = (await _rotate(client, a.profile_id, SUPER_KEY))["api_key"]
        await client.delete(f"/profiles/{b.profile_id}/key", headers=h(SUPER_KEY))
        codes: tuple[int, ...] = ()
        for _ in range(40):
            codes = (
                (await second.get(url, headers=h(a.profile_key))).status_code,
                (await second.get(url, headers=h(first_new))).status_code,
                (await second.get(f"/profiles/{b.profile_id}",
                                  headers=h(b.profile_key))).status_code,
            )
            if codes == (401, 401, 401):
                break
            await asyncio.sleep(0.1)
        assert codes == (401, 401, 401)
        assert (await second.get(url, headers=h(latest))).status_code == 200
