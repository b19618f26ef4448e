"""Build data through the API, as a user would (no hand-built rows)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from tests.conftest import SUPER_KEY
from tests.helpers import expect, h

MINIMAL_YAML = """\
sources:
  - name: inline
    values: [203.0.113.7, evil.example]
"""
# The run-layer tests' config: four inline indicators (addresses, a network, a domain).
INLINE_YAML = """\
sources:
  - name: inline
    values: [203.0.113.7, evil.example, 198.51.100.0/24, 8.8.8.8]
"""


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


async def make_profile(client: httpx.AsyncClient, name: str = "tenant") -> tuple[int, str]:
    """A profile made by the super key: (its id, its profile key)."""
    created = await create_profile(client, SUPER_KEY, name)
    return created["profile"]["id"], created["api_key"]


async def make_pipeline(
    client: httpx.AsyncClient, profile_id: int, yaml: str = INLINE_YAML, *,
    name: str = "pipe", concurrency_limit: int = 1, **config_extra: Any,
) -> int:
    """A config and a pipeline bound to it, both named `name`: the pipeline's id."""
    config = await create_config(client, SUPER_KEY, profile_id, name, yaml, **config_extra)
    pipeline = await create_pipeline(
        client, SUPER_KEY, config["id"], name, concurrency_limit=concurrency_limit
    )
    return int(pipeline["id"])


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
