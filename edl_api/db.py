"""Database engine, the per-request session (one commit point), and ensure_schema()."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from alembic.config import Config
from fastapi import Depends, Request
from sqlalchemy import Table, event, func, select
from sqlalchemy.dialects.postgresql import dml as postgresql_dml
from sqlalchemy.dialects.sqlite import dml as sqlite_dml
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, sessionmaker

from alembic import command
from edl_api.settings import Settings
from edl_api.state import AppState

ALEMBIC_DIR = Path(__file__).resolve().parent.parent / "alembic"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets feed reads proceed while a run publishes; the busy timeout absorbs
    # short writer overlaps between the API, dispatcher and scheduler.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


CONNECT_TIMEOUT_SECONDS = 5


def create_engine(settings: Settings) -> AsyncEngine:
    """`hide_parameters`: a database error's text never carries the values bound to its
    statement (a token's key id and bcrypt hash reached api.log in one). PostgreSQL:
    `pool_pre_ping` replaces connections an outage killed, so the app recovers by itself."""
    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 10}, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    connect_args: dict[str, Any] = {}
    if "+asyncpg" in url:
        # Our queries are short index probes. Until ANALYZE has seen a freshly bulk-loaded
        # indicator table, PostgreSQL over-estimates them and JIT-compiles each one: a
        # 33-network IP search took 28 ms in the server instead of 3 ms.
        connect_args["server_settings"] = {"jit": "off"}
        # asyncpg waits 60 s for a server that does not answer: during an outage a request
        # (and a stale feed's retry) should fail fast into 503 `database_unavailable`.
        connect_args["timeout"] = CONNECT_TIMEOUT_SECONDS
    return create_async_engine(
        url, pool_size=10, max_overflow=10, pool_pre_ping=True, connect_args=connect_args,
        hide_parameters=True,
    )


def create_sessionmaker(
    engine: AsyncEngine, sync_factory: sessionmaker[Session] | None = None
) -> async_sessionmaker[AsyncSession]:
    """`sync_factory`: the app's session factory with its after-commit hooks
    (`feeds.hooks.session_factory`); without it, commits touch no cache."""
    if sync_factory is None:
        return async_sessionmaker(engine, expire_on_commit=False)
    return async_sessionmaker(engine, expire_on_commit=False, sync_session_class=sync_factory)


# Any constant works; it only has to be the same in every process of a deployment.
CLAIM_LOCK_KEY = 0x6564_6C72  # "edlr"


def upsert_insert(dialect: str, table: Table) -> sqlite_dml.Insert | postgresql_dml.Insert:
    """An INSERT of `dialect` that takes `.on_conflict_do_update(...)` (both backends speak
    INSERT ... ON CONFLICT; SQLAlchemy only has it per dialect)."""
    if dialect == "postgresql":
        return postgresql_dml.insert(table)
    return sqlite_dml.insert(table)


async def serialize_claims(session: AsyncSession) -> None:
    """Make run claims one at a time across every process sharing the database.

    PostgreSQL: a transaction-scoped advisory lock (released at commit). SQLite has one
    writer at a time already and one process per database file, so nothing to do."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK_KEY)))


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    return cfg


def _upgrade(connection: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


async def ensure_schema(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply every pending migration (Alembic owns the schema)."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade, revision)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The one commit point of a request: services only flush."""
    async with AppState.of(request.app).sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


# scope="function": commit before the response leaves, so a client that reads
# right after a 201 always sees its write.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
