"""Alembic owns the schema: an empty database upgrades, downgrades and upgrades again."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, make_url
from sqlmodel import SQLModel

from alembic import command
from edl_api.db import alembic_config, create_engine, ensure_schema
from tests.conftest import PG_URL, REQUIRE_PG, _pg_admin, make_settings


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _downgrade(connection: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.downgrade(cfg, "base")


def _drift(connection: Connection) -> list[object]:
    """What autogenerate would change: the migrations must build exactly the models."""
    return list(compare_metadata(MigrationContext.configure(connection), SQLModel.metadata))


async def _round_trip(url: str | None, tmp_path: Path) -> None:
    engine = create_engine(make_settings(tmp_path, url))
    try:
        await ensure_schema(engine)
        async with engine.connect() as conn:
            tables = await conn.run_sync(_tables)
            assert await conn.run_sync(_drift) == []
        assert set(SQLModel.metadata.tables) <= tables
        async with engine.begin() as conn:
            await conn.run_sync(_downgrade)
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) <= {"alembic_version"}
        await ensure_schema(engine)
        await ensure_schema(engine)  # idempotent at head
        async with engine.connect() as conn:
            assert set(SQLModel.metadata.tables) <= await conn.run_sync(_tables)
    finally:
        await engine.dispose()


def test_sqlite_round_trip(tmp_path: Path) -> None:
    asyncio.run(_round_trip(None, tmp_path))


def test_postgres_round_trip(tmp_path: Path) -> None:
    name = f"edl_mig_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL required but unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    try:
        url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        asyncio.run(_round_trip(url, tmp_path))
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
