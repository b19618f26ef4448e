"""Migration 0009: every feed token becomes a generic device with the same id and the same
credential; new devices get ids after them (PostgreSQL's sequence moved on)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text

from edl_api.auth import keys
from edl_api.db import create_engine, ensure_schema
from tests.conftest import fresh_pg_database, make_settings


async def _migrate_tokens(url: str | None, tmp_path: Path) -> None:
    engine = create_engine(make_settings(tmp_path, url))
    token = keys.generate_key(keys.FEED_PREFIX, 4)
    try:
        await ensure_schema(engine, "0008_run_logs_and_retries")
        async with engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO profiles (id, name, key_id, key_hash, created_at, "
                "ssrf_allow_cidrs, ssrf_allow_hosts) "
                "VALUES (1, 'p', 'kid', 'h', CURRENT_TIMESTAMP, '[]', '[]')"
            ))
            await conn.execute(text(
                "INSERT INTO feed_tokens (id, profile_id, name, key_id, key_hash, pipeline_ids, "
                "created_at, revoked_at) VALUES (7, 1, 'fw-old', :kid, :hash, '[3]', "
                "CURRENT_TIMESTAMP, NULL)"
            ), {"kid": token.key_id, "hash": token.key_hash})
        await ensure_schema(engine)
        async with engine.begin() as conn:
            row = (await conn.execute(text(
                "SELECT id, name, vendor, feeds, pipeline_ids, key_id, key_hash, "
                "expected_poll_minutes FROM devices"
            ))).one()
            assert row[0] == 7
            assert row[1] == "fw-old"
            assert row[2] == "generic"
            assert row[5] == token.key_id
            assert row[6] == token.key_hash
            assert row[7] == 60
            await conn.execute(text(
                "INSERT INTO devices (profile_id, name, vendor, feeds, expected_poll_minutes, "
                "key_id, key_hash, created_at, updated_at) VALUES (1, 'new', 'generic', '[]', "
                "60, 'k2', 'h2', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ))
            new_id = (await conn.execute(
                text("SELECT id FROM devices WHERE name = 'new'")
            )).scalar_one()
            assert new_id > 7
    finally:
        await engine.dispose()


def test_feed_tokens_become_devices_sqlite(tmp_path: Path) -> None:
    asyncio.run(_migrate_tokens(None, tmp_path))


def test_feed_tokens_become_devices_postgres(tmp_path: Path) -> None:
    with fresh_pg_database("edl_mig_dev") as (_name, url):
        asyncio.run(_migrate_tokens(url, tmp_path))
