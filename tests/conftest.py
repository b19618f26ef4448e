"""Shared fixtures: an app per test on SQLite and (when reachable) PostgreSQL.

EDL_TEST_DATABASE_URL names the PostgreSQL server (default: the local one, database
`test`); each test session gets its own throwaway database there. Without PostgreSQL
the postgres-backed tests skip — unless EDL_TEST_REQUIRE_POSTGRES=1 (CI), where they fail.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from edl_api.app import create_app
from edl_api.settings import Settings

PG_URL = os.environ.get(
    "EDL_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REQUIRE_PG = os.environ.get("EDL_TEST_REQUIRE_POSTGRES") == "1"
SUPER_KEY = "legacy-super-key-0123456789"
OPERATOR_LEGACY_KEY = "legacy-operator-key-0123456789"
READER_LEGACY_KEY = "legacy-reader-key-0123456789"
BACKENDS = [b for b in os.environ.get("EDL_TEST_BACKENDS", "sqlite,postgres").split(",") if b]


async def _pg_admin(sql: str) -> None:
    import asyncpg

    url = make_url(PG_URL)
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database,
        timeout=5,
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def fresh_pg_database(prefix: str) -> Iterator[tuple[str, str]]:
    """(name, URL) of a new PostgreSQL database, dropped on exit; connections are allowed
    again first (an outage test may have closed it). Skips (fails in CI) when PostgreSQL
    is unreachable."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # unreachable server
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL required but unreachable at {PG_URL}: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    try:
        yield name, make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    with fresh_pg_database("edl_test") as (_, url):
        yield url


@pytest.fixture
def own_pg_database() -> Iterator[tuple[str, str]]:
    """(name, URL) of a database of this test's own: closing it harms no other test."""
    with fresh_pg_database("edl_own") as database:
        yield database


async def _truncate_all(app_engine: object) -> None:
    from sqlalchemy import text
    from sqlmodel import SQLModel

    tables = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
    async with app_engine.begin() as conn:  # type: ignore[attr-defined]
        await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


def make_settings(tmp_path: Path, database_url: str | None, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "log_dir": tmp_path / "logs",
        "database_url": database_url,
        "api_key": SUPER_KEY,
        "operator_keys": OPERATOR_LEGACY_KEY,
        "reader_keys": READER_LEGACY_KEY,
        "bcrypt_rounds": 4,
        "auto_refresh_minutes": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type,call-arg]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("pg_database"))


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return make_settings(tmp_path, database_url)


async def reset_database(settings: Settings) -> None:
    """PostgreSQL tests share a database: empty it before an app (and its dispatcher and
    scheduler) starts, so no TRUNCATE races a background claim or tick. SQLite: a no-op,
    each test has its own file."""
    if settings.is_sqlite:
        return
    from edl_api.db import create_engine, ensure_schema

    engine = create_engine(settings)
    try:
        await ensure_schema(engine)
        await _truncate_all(engine)
    finally:
        await engine.dispose()


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[Any]:
    """A fresh database and the app with its lifespan (dispatcher, watchers) running."""
    await reset_database(settings)
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@asynccontextmanager
async def asgi_client(application: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://edl.test") as http:
        yield http


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[object]:
    async with running_app(settings) as application:
        yield application


@pytest.fixture
async def client(app: object) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as http:
        yield http


@pytest.fixture
async def world(client: httpx.AsyncClient) -> object:
    """Two tenants, each with an operator, a reader, a profile key, a config and a pipeline."""
    from tests.factories import build_world

    return await build_world(client)


@pytest.fixture
async def outage(app: Any) -> AsyncIterator[Callable[[bool], Any]]:
    """`await outage(True)`: every new connection fails and pooled ones are dropped;
    `await outage(False)`: the database is back (SQLite's error; the outage tests run there)."""
    import sqlite3

    from sqlalchemy import event

    from edl_api.state import AppState

    engine = AppState.of(app).engine.sync_engine

    def refuse(*_: Any) -> None:
        raise sqlite3.OperationalError("unable to open database file")

    async def switch(down: bool) -> None:
        if down:
            event.listen(engine, "do_connect", refuse)
            await AppState.of(app).engine.dispose()
        elif event.contains(engine, "do_connect", refuse):
            event.remove(engine, "do_connect", refuse)

    yield switch
    await switch(False)
