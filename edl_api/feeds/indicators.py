"""The indicator store: the latest published entries per pipeline, with provenance.

Rows are read and written at the driver level (raw values, executemany / COPY):
a million-entry feed must not go through the ORM row by row. Within this module a
time is a *raw* value as the driver stores it (SQLite: text, PostgreSQL: naive UTC).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, delete, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlmodel import col

from edl_api.models import Indicator

COLUMNS = (
    "pipeline_id", "indicator_type", "value", "sources", "tags", "confidence",
    "first_seen", "last_seen", "run_id",
)
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # what SQLAlchemy's SQLite DateTime writes


@dataclass(slots=True)
class StoredIndicator:
    indicator_type: str
    value: str
    sources: str  # JSON text
    tags: str  # JSON text
    confidence: int
    first_seen: Any  # raw time
    last_seen: Any  # raw time
    run_id: int | None


def dump_list(values: Sequence[str]) -> str:
    return json.dumps(list(values), separators=(",", ":"))


class RawTime:
    """Converts between aware UTC datetimes and what the driver stores."""

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"

    def to_raw(self, moment: datetime) -> Any:
        naive = moment.astimezone(UTC).replace(tzinfo=None)
        return naive.strftime(SQLITE_TIME) if self.sqlite else naive

    def from_raw(self, raw: Any) -> datetime:
        if isinstance(raw, str):
            return datetime.fromisoformat(raw).replace(tzinfo=UTC)
        assert isinstance(raw, datetime)
        return raw.replace(tzinfo=UTC) if raw.tzinfo is None else raw.astimezone(UTC)


async def load(
    session: AsyncSession, pipeline_id: int, types: Sequence[str]
) -> dict[tuple[str, str], StoredIndicator]:
    """Every stored indicator of these types for the pipeline, keyed (type, value)."""
    if not types:
        return {}
    query = text(
        "SELECT indicator_type, value, sources, tags, confidence, first_seen, last_seen, run_id "
        "FROM indicators WHERE pipeline_id = :pid AND indicator_type IN :types"
    ).bindparams(bindparam("types", expanding=True))
    result = await session.execute(query, {"pid": pipeline_id, "types": list(types)})
    stored: dict[tuple[str, str], StoredIndicator] = {}
    for row in result:
        kind, value, sources, tags, confidence, first_seen, last_seen, run_id = row
        stored[(kind, value)] = StoredIndicator(
            kind, value, _as_json_text(sources), _as_json_text(tags), int(confidence),
            first_seen, last_seen, run_id,
        )
    return stored


def _as_json_text(raw: Any) -> str:
    return raw if isinstance(raw, str) else json.dumps(raw, separators=(",", ":"))


async def replace(
    session: AsyncSession, pipeline_id: int, types: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    """Make `rows` (tuples in COLUMNS order) the pipeline's indicators of these types."""
    if not types:
        return
    await session.execute(
        delete(Indicator).where(
            col(Indicator.pipeline_id) == pipeline_id, col(Indicator.indicator_type).in_(types)
        )
    )
    if rows:
        await bulk_insert(await session.connection(), rows)


async def bulk_insert(conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
    if conn.dialect.name == "postgresql":
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        # COPY inside the transaction the session already opened (publish has flushed).
        await driver.copy_records_to_table("indicators", records=rows, columns=list(COLUMNS))
        return
    placeholders = ", ".join("?" for _ in COLUMNS)
    await conn.exec_driver_sql(
        f"INSERT INTO indicators ({', '.join(COLUMNS)}) VALUES ({placeholders})", rows
    )
