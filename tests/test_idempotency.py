from __future__ import annotations

import asyncio

import httpx

from tests.conftest import SUPER_KEY
from tests.factories import World
from tests.helpers import h


async def test_replay_returns_same_object(client: httpx.AsyncClient, world: World) -> None:
    body = {"profile_config_id": world.a.config_id, "name": "idem"}
    headers = h(world.a.profile_key) | {"Idempotency-Key": "launch-1"}
    first = await client.post("/pipelines", json=body, headers=headers)
    second = await client.post("/pipelines", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    listing = await client.get("/pipelines", headers=h(world.a.profile_key))
    assert [p["name"] for p in listing.json()["items"]].count("idem") == 1


async def test_same_key_other_body_is_refused(client: httpx.AsyncClient, world: World) -> None:
    headers = h(world.a.profile_key) | {"Idempotency-Key": "k"}
    await client.post(
        "/pipelines", json={"profile_config_id": world.a.config_id, "name": "one"}, headers=headers
    )
    other = await client.post(
        "/pipelines", json={"profile_config_id": world.a.config_id, "name": "two"}, headers=headers
    )
    assert other.status_code == 422
    assert other.json()["error"] == "idempotency_key_reused"


async def test_body_field_and_header_are_the_same_key(
    client: httpx.AsyncClient, world: World
) -> None:
    body = {"profile_config_id": world.a.config_id, "name": "b", "idempotency_key": "x1"}
    first = await client.post("/pipelines", json=body, headers=h(world.a.profile_key))
    again = await client.post(
        "/pipelines",
        json={k: v for k, v in body.items() if k != "idempotency_key"},
        headers=h(world.a.profile_key) | {"Idempotency-Key": "x1"},
    )
    assert first.json()["id"] == again.json()["id"]


async def test_keys_are_scoped_per_caller(client: httpx.AsyncClient, world: World) -> None:
    body = {"profile_config_id": world.a.config_id, "name": "shared-key"}
    by_profile = await client.post(
        "/pipelines", json=body, headers=h(world.a.profile_key) | {"Idempotency-Key": "same"}
    )
    by_operator = await client.post(
        "/pipelines", json=body, headers=h(world.a.operator_key) | {"Idempotency-Key": "same"}
    )
    assert by_profile.status_code == by_operator.status_code == 201
    assert by_profile.json()["id"] != by_operator.json()["id"]


async def test_concurrent_replays_make_one_object(client: httpx.AsyncClient, world: World) -> None:
    body = {"name": "cfg-race", "yaml": "sources:\n  - name: a\n    values: [192.0.2.1]\n"}
    headers = h(world.a.profile_key) | {"Idempotency-Key": "race"}
    url = f"/profiles/{world.a.profile_id}/configs"
    responses = await asyncio.gather(
        *(client.post(url, json=body, headers=headers) for _ in range(4))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1


async def test_profile_replay_never_shows_the_key_again(client: httpx.AsyncClient) -> None:
    headers = h(SUPER_KEY) | {"Idempotency-Key": "p1"}
    first = await client.post("/profiles", json={"name": "p"}, headers=headers)
    second = await client.post("/profiles", json={"name": "p"}, headers=headers)
    assert first.json()["profile"] == second.json()["profile"]
    assert first.json()["api_key"].startswith("edlp_")
    assert second.json()["api_key"] is None


async def test_expired_keys_are_forgotten_by_housekeeping(
    app: object, client: httpx.AsyncClient, world: World
) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from edl_api.models import IdempotencyRecord, utcnow
    from edl_api.state import AppState

    url = f"/profiles/{world.a.profile_id}/feed-tokens"
    headers = h(world.a.profile_key) | {"Idempotency-Key": "token-1"}
    first = await client.post(url, json={"name": "fw"}, headers=headers)
    assert first.status_code == 201
    state = AppState.of(app)  # type: ignore[arg-type]
    assert await state.dispatcher.housekeeping() == 0  # still within its retention
    again = await client.post(url, json={"name": "fw"}, headers=headers)
    assert again.json()["id"] == first.json()["id"]
    async with state.sessionmaker() as session, session.begin():
        await session.execute(update(IdempotencyRecord).values(
            created_at=utcnow() - timedelta(hours=25)))
    assert await state.dispatcher.housekeeping() == 1  # EDL_IDEMPOTENCY_RETENTION_HOURS=24
    later = await client.post(url, json={"name": "fw"}, headers=headers)
    assert later.status_code == 201
    assert later.json()["id"] != first.json()["id"]  # a new token, as after any expiry
