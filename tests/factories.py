"""Build data through the API, as a user would (no hand-built rows)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from tests.conftest import SUPER_KEY

MINIMAL_YAML = """\
sources:
  - name: inline
    values: [203.0.113.7, evil.example]
"""


def h(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def expect(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    return response.json()  # type: ignore[no-any-return]


async def create_admin(client: httpx.AsyncClient, name: str, role: str, **extra: object) -> dict:
    body = {"name": name, "role": role, **extra}
    return await expect(await client.post("/admin/accounts", json=body, headers=h(SUPER_KEY)), 201)


async def create_profile(client: httpx.AsyncClient, key: str, name: str) -> dict:
    return await expect(await client.post("/profiles", json={"name": name}, headers=h(key)), 201)


async def create_config(
    client: httpx.AsyncClient,
    key: str,
    profile_id: int,
    name: str = "cfg",
    yaml: str = MINIMAL_YAML,
    **extra: object,
) -> dict:
    body = {"name": name, "yaml": yaml, **extra}
    return await expect(
        await client.post(f"/profiles/{profile_id}/configs", json=body, headers=h(key)), 201
    )


async def create_pipeline(
    client: httpx.AsyncClient, key: str, config_id: int, name: str = "pipe", **extra: object
) -> dict:
    body = {"profile_config_id": config_id, "name": name, **extra}
    return await expect(await client.post("/pipelines", json=body, headers=h(key)), 201)


@dataclass
class Tenant:
    profile_id: int
    profile_key: str
    operator_id: int
    operator_key: str
    reader_id: int
    reader_key: str
    config_id: int
    pipeline_id: int


@dataclass
class World:
    a: Tenant
    b: Tenant


async def build_tenant(client: httpx.AsyncClient, label: str) -> Tenant:
    operator = await create_admin(client, f"operator-{label}", "operator")
    reader = await create_admin(client, f"reader-{label}", "reader")
    created = await create_profile(client, operator["api_key"], f"tenant-{label}")
    profile_id = created["profile"]["id"]
    await expect(
        await client.post(
            f"/admin/accounts/{reader['id']}/profiles/{profile_id}", headers=h(SUPER_KEY)
        ),
        200,
    )
    config = await create_config(client, created["api_key"], profile_id, f"cfg-{label}")
    pipeline = await create_pipeline(client, created["api_key"], config["id"], f"pipe-{label}")
    return Tenant(
        profile_id=profile_id,
        profile_key=created["api_key"],
        operator_id=operator["id"],
        operator_key=operator["api_key"],
        reader_id=reader["id"],
        reader_key=reader["api_key"],
        config_id=config["id"],
        pipeline_id=pipeline["id"],
    )


async def build_world(client: httpx.AsyncClient) -> World:
    return World(a=await build_tenant(client, "a"), b=await build_tenant(client, "b"))


async def run_to_end(client: httpx.AsyncClient, key: str, pipeline_id: int) -> dict:
    launched = await client.post("/runs", json={"pipeline_id": pipeline_id}, headers=h(key))
    assert launched.status_code == 202, launched.text
    for _ in range(300):
        run = (await client.get(f"/runs/{launched.json()['id']}", headers=h(key))).json()
        if run["state"] not in ("queued", "running"):
            return run  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    raise AssertionError("run did not finish")
