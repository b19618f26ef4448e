"""Names of profiles and admin accounts are unique among live ones (409 `name_taken`);
migration 0011 renames the duplicates an earlier install may hold, deterministically."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from edl_api.db import create_engine, ensure_schema
from tests.conftest import SUPER_KEY, fresh_pg_database, make_settings
from tests.factories import create_admin, create_profile
from tests.helpers import expect, h


async def test_profile_name_taken(client: httpx.AsyncClient) -> None:
    first = await create_profile(client, SUPER_KEY, "acme")
    again = await client.post("/profiles", json={"name": " acme "}, headers=h())
    assert again.status_code == 409, again.text
    body = again.json()
    assert body["error"] == "name_taken"
    assert "'acme'" in body["detail"]
    assert "GET /profiles" in body["detail"]
    listed = await expect(await client.get("/profiles", headers=h()))
    assert [p["name"] for p in listed["items"]] == ["acme"]
    # Another name is fine; a deleted profile frees its name.
    await create_profile(client, SUPER_KEY, "acme-2")
    await expect(await client.delete(f"/profiles/{first['profile']['id']}", headers=h()))
    await create_profile(client, SUPER_KEY, "acme")


async def test_idempotent_replay_is_not_a_taken_name(client: httpx.AsyncClient) -> None:
    headers = h() | {"Idempotency-Key": "make-acme"}
    one = await expect(await client.post("/profiles", json={"name": "acme"}, headers=headers), 201)
    two = await expect(await client.post("/profiles", json={"name": "acme"}, headers=headers), 201)
    assert one["profile"]["id"] == two["profile"]["id"]


async def test_admin_name_taken_until_revoked(client: httpx.AsyncClient) -> None:
    ops = await create_admin(client, "ops", "operator")
    again = await client.post(
        "/admin/accounts", json={"name": "ops", "role": "reader"}, headers=h()
    )
    assert again.status_code == 409, again.text
    assert again.json()["error"] == "name_taken"
    assert "GET /admin/accounts" in again.json()["detail"]
    await expect(await client.delete(f"/admin/accounts/{ops['id']}", headers=h()))
    await create_admin(client, "ops", "reader")


async def test_concurrent_creates_one_wins(client: httpx.AsyncClient) -> None:
    answers = await asyncio.gather(*[
        client.post("/profiles", json={"name": "race"}, headers=h()) for _ in range(4)
    ])
    assert sorted(r.status_code for r in answers) == [201, 409, 409, 409]


async def _dedupe(url: str | None, tmp_path: Path) -> None:
    engine = create_engine(make_settings(tmp_path, url))
    try:
        await ensure_schema(engine, "0010_webhooks")
        async with engine.begin() as conn:
            for pid, name in [(1, "acme"), (2, "acme"), (3, "acme (2)"), (4, "acme"),
                              (5, "x" * 200), (6, "x" * 200)]:
                await conn.execute(text(
                    "INSERT INTO profiles (id, name, key_id, key_hash, created_at, "
                    "ssrf_allow_cidrs, ssrf_allow_hosts) "
                    "VALUES (:id, :name, :kid, 'h', CURRENT_TIMESTAMP, '[]', '[]')"
                ), {"id": pid, "name": name, "kid": f"kid{pid}"})
            for aid, name, revoked in [(1, "ops", True), (2, "ops", False), (3, "ops", False)]:
                await conn.execute(text(
                    "INSERT INTO admin_accounts (id, name, role, is_super_admin, key_id, "
                    "key_hash, created_at, revoked_at) VALUES (:id, :name, 'operator', false, "
                    ":kid, 'h', CURRENT_TIMESTAMP, "
                    + ("CURRENT_TIMESTAMP" if revoked else "NULL") + ")"
                ), {"id": aid, "name": name, "kid": f"akid{aid}"})
        await ensure_schema(engine)
        async with engine.begin() as conn:
            profiles = dict((await conn.execute(text("SELECT id, name FROM profiles"))).all())
            accounts = dict(
                (await conn.execute(text("SELECT id, name FROM admin_accounts"))).all()
            )
            # The oldest keeps the name; each later one takes the first free suffix.
            assert profiles == {
                1: "acme", 2: "acme (3)", 3: "acme (2)", 4: "acme (4)",
                5: "x" * 200, 6: "x" * 196 + " (2)",
            }
            # A revoked account does not hold its name: the oldest live one keeps it.
            assert accounts == {1: "ops", 2: "ops", 3: "ops (2)"}
            with pytest.raises(Exception, match="(?i)unique"):
                async with conn.begin_nested():
                    await conn.execute(text(
                        "INSERT INTO profiles (name, key_id, key_hash, created_at, "
                        "ssrf_allow_cidrs, ssrf_allow_hosts) "
                        "VALUES ('acme', 'kid9', 'h', CURRENT_TIMESTAMP, '[]', '[]')"
                    ))
    finally:
        await engine.dispose()


def test_migration_renames_duplicates_sqlite(tmp_path: Path) -> None:
    asyncio.run(_dedupe(None, tmp_path))


def test_migration_renames_duplicates_postgres(tmp_path: Path) -> None:
    with fresh_pg_database("edl_names") as (_, url):
        asyncio.run(_dedupe(url, tmp_path))
