"""The indicator store: the latest published entries per pipeline, with provenance.

A row whose `run_id` is NULL is *present* in the pipeline's hosted feed: its effective
`run_id` and `last_seen` are those of that feed (`HostedFeed.run_id/updated_at`), so a
publish that changes little writes little — no per-row "touch" of a million rows.
A row with a `run_id` vanished from its sources and is kept by `retain_missing_days`;
its `last_seen` is when it was last published.

Bulk writes go through the driver with raw values, grouped by everything but the value
(`RowGroups`: a million rows share a few hundred provenances): one statement per group and
batch expands a JSON array (SQLite `json_each`) or a text[] (PostgreSQL `unnest`) into
rows, so no per-row parameter tuple is bound or encoded; updates and deletes likewise
match a batch of values at once. Within this module a time is a
*raw* value as the driver stores it (SQLite: text, PostgreSQL: naive UTC datetime).
"""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import bindparam, delete, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlmodel import col

from edl_api.feeds.entries_reader import NO_VALUES, Provenance, ProvenanceMap
from edl_api.models import Indicator

COLUMNS = (
    "pipeline_id", "indicator_type", "value", "sources", "tags", "confidence",
    "first_seen", "last_seen", "run_id",
)
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # what SQLAlchemy's SQLite DateTime writes
# Rewriting the whole type beats row-by-row changes past this share of changed rows.
REPLACE_RATIO = 0.5
# Values per bulk statement. The loop is yielded between batches; a bulk statement's own
# work runs in the driver without the GIL (SQLite's step in aiosqlite's thread,
# PostgreSQL in the server), only its JSON/array encoding (~2 ms per 50k values) holds
# the loop.
BATCH_ROWS = 50_000
# SQLite: a page cache (KiB, negative) for inserts of at least BULK_CACHE_ROWS rows; the
# default 2 MB spills the indexes' pages to the file again and again (30 % more CPU).
BULK_CACHE_ROWS = 100_000
BULK_CACHE_SIZE = -262_144
SORT_SLICE = 50_000  # values per sort call (`sorted_in_slices`)
SORT_SAMPLE_EVERY = 100

# The columns after the value: sources, tags, confidence, first_seen, last_seen, run_id.
RowColumns = tuple[str, str, int, Any, Any, "int | None"]
DEFAULT_PROVENANCE: Provenance = (NO_VALUES, NO_VALUES, 50)


@dataclass(slots=True)
class StoredIndicator:
    sources: str  # JSON text
    tags: str  # JSON text
    confidence: int
    first_seen: Any  # raw time
    last_seen: Any  # raw time
    run_id: int | None  # None: present in the hosted feed


class RawTime:
    """Converts between aware UTC datetimes and what the driver stores."""

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"

    def to_raw(self, moment: datetime) -> Any:
        naive = moment.astimezone(UTC).replace(tzinfo=None)
        return naive.strftime(SQLITE_TIME) if self.sqlite else naive


async def load(
    session: AsyncSession, pipeline_id: int, types: Sequence[str], *, retained_only: bool = False
) -> dict[str, dict[str, StoredIndicator]]:
    """Stored indicators of these types for the pipeline (type → value → row): all of
    them, or only the retained ones (not present in the feed)."""
    stored: dict[str, dict[str, StoredIndicator]] = {t: {} for t in types}
    if not types:
        return stored
    query = text(
        "SELECT indicator_type, value, sources, tags, confidence, first_seen, last_seen, run_id "
        "FROM indicators WHERE pipeline_id = :pid AND indicator_type IN :types"
        + (" AND run_id IS NOT NULL" if retained_only else "")
    ).bindparams(bindparam("types", expanding=True))
    # Streamed in partitions, one thread hop per partition: a million rows never become
    # objects on the event loop in one go.
    result = await session.stream(query, {"pid": pipeline_id, "types": list(types)})
    async for rows in result.partitions(BATCH_ROWS):
        await asyncio.to_thread(_add_rows, stored, rows)
    return stored


def _add_rows(stored: dict[str, dict[str, StoredIndicator]], rows: Sequence[Any]) -> None:
    for kind, value, sources, tags, confidence, first_seen, last_seen, run_id in rows:
        stored[kind][value] = StoredIndicator(
            _as_json_text(sources), _as_json_text(tags), int(confidence), first_seen, last_seen,
            run_id,
        )


def _as_json_text(raw: Any) -> str:
    return raw if isinstance(raw, str) else orjson.dumps(raw).decode()


class RowGroups:
    """Rows of one (pipeline, type) to insert, grouped by their columns after the value."""

    def __init__(self) -> None:
        self.groups: dict[RowColumns, list[str]] = {}

    def add(self, columns: RowColumns, value: str) -> None:
        found = self.groups.get(columns)
        if found is None:
            self.groups[columns] = [value]
        else:
            found.append(value)

    def extend(self, columns: RowColumns, values: list[str]) -> None:
        found = self.groups.get(columns)
        if found is None:
            self.groups[columns] = values
        else:
            found.extend(values)

    def __len__(self) -> int:
        return sum(len(values) for values in self.groups.values())

    def value_lists(self) -> list[list[str]]:
        return list(self.groups.values())


@dataclass
class TypeChanges:
    """What one publish changes in the rows of one (pipeline, type)."""

    indicator_type: str
    inserts: RowGroups = field(default_factory=RowGroups)
    updates: list[tuple[str, Provenance]] = field(default_factory=list)  # now present
    retire: list[str] = field(default_factory=list)  # present → kept by retention
    deletes: list[str] = field(default_factory=list)
    replace_all: RowGroups | None = None  # rewrite the type instead

    def summary(self) -> dict[str, int | bool]:
        return {
            "inserted": len(self.inserts), "updated": len(self.updates),
            "retired": len(self.retire), "deleted": len(self.deletes),
            "rewritten": self.replace_all is not None,
        }


def plan_first(kind: str, grouped: dict[Provenance, list[str]], now_raw: Any) -> TypeChanges:
    """A type with no stored rows whose feed holds exactly its entries: every entry is an
    insert, already grouped by provenance (no lookup per value)."""
    changes = TypeChanges(kind)
    for prov, values in grouped.items():
        changes.inserts.extend((*prov, now_raw, now_raw, None), values)
    return changes


def plan_type(
    pipeline_id: int, kind: str, values: Sequence[str], retained: set[str],
    provenance: ProvenanceMap, stored: dict[str, StoredIndicator],
    now_raw: Any, previous_seen_raw: Any, previous_run_id: int | None,
) -> TypeChanges:
    """Rows to insert/update/retire/delete so the store matches the published feed.

    `values` are the entries the run produced; `retained` the vanished ones that
    `retain_missing_days` keeps in the feed. When most rows change, the plan is a
    rewrite of the whole type (`replace_all`) instead."""
    del pipeline_id  # rows are written per (pipeline, type) by `apply`
    changes = TypeChanges(kind)
    own, of_ip = provenance.get(kind, {}), provenance.get("ip", {})

    def prov_of(value: str) -> Provenance:
        return own.get(value) or of_ip.get(value) or DEFAULT_PROVENANCE

    # Only values that have a row: the checks below look up no other. (A first publish
    # then builds no million-item set, whose resizes are single long C calls.)
    seen: set[str] = set()
    present: dict[Provenance, RowColumns] = {}
    for value in values:
        prov = prov_of(value)
        old = stored.get(value)
        if old is None:
            columns = present.get(prov)
            if columns is None:
                columns = present[prov] = (*prov, now_raw, now_raw, None)
            changes.inserts.add(columns, value)
            continue
        seen.add(value)
        if old.run_id is not None or (old.sources, old.tags, old.confidence) != prov:
            changes.updates.append((value, prov))
    for value, old in stored.items():
        if value in seen:
            continue
        if value in retained:
            if old.run_id is None:
                changes.retire.append(value)
        else:
            changes.deletes.append(value)
    work = len(changes.updates) + len(changes.deletes) + len(changes.retire)
    if work <= 1000 or work <= REPLACE_RATIO * len(stored):
        return changes
    rows = RowGroups()
    for value in values:
        old = stored.get(value)
        first_seen = old.first_seen if old is not None else now_raw
        rows.add((*prov_of(value), first_seen, now_raw, None), value)
    for value in retained:
        old = stored.get(value)
        if old is None or value in seen:
            continue
        if old.run_id is None:
            rows.add((old.sources, old.tags, old.confidence, old.first_seen,
                      previous_seen_raw, previous_run_id), value)
        else:
            rows.add((old.sources, old.tags, old.confidence, old.first_seen, old.last_seen,
                      old.run_id), value)
    changes.replace_all = rows
    return changes


def plan_from_delta(
    pipeline_id: int, kind: str, delta: Any, retained_rows: dict[str, StoredIndicator],
    retained: set[str], now_raw: Any,
) -> TypeChanges:
    """The same changes as `plan_type`, from the entries that differ from the baseline
    (`provenance.Delta`) and the rows not present in the feed (`retained_rows`)."""
    del pipeline_id
    changes = TypeChanges(kind)
    added: dict[str, Provenance] = delta.added[kind]
    removed: set[str] = delta.removed[kind]
    for value, prov in added.items():
        if value in removed or value in retained_rows:
            changes.updates.append((value, prov))
        else:
            changes.inserts.add((*prov, now_raw, now_raw, None), value)
    for value in removed:
        if value in added:
            continue
        if value in retained:
            changes.retire.append(value)
        else:
            changes.deletes.append(value)
    for value in retained_rows:
        if value not in added and value not in retained:
            changes.deletes.append(value)
    return changes


async def apply(
    session: AsyncSession, pipeline_id: int, changes: TypeChanges,
    previous_run_id: int | None, previous_seen: datetime,
) -> None:
    """Write one type's changes, set-based: one statement per BATCH_ROWS values (and per
    provenance for updates), never a parameter tuple per row."""
    kind = changes.indicator_type
    conn = await session.connection()
    if changes.replace_all is not None:
        await delete_types(session, pipeline_id, [kind])
        await insert_groups(conn, pipeline_id, kind, changes.replace_all)
        return
    postgres = conn.dialect.name == "postgresql"
    await _by_values(conn, _PG_DELETE if postgres else _SQLITE_DELETE,
                     (pipeline_id, kind), changes.deletes)
    by_provenance: dict[Provenance, list[str]] = {}
    for value, prov in changes.updates:
        found = by_provenance.get(prov)
        if found is None:
            by_provenance[prov] = [value]
        else:
            found.append(value)
    for prov, values in by_provenance.items():
        await _by_values(conn, _PG_SET_PROVENANCE if postgres else _SQLITE_SET_PROVENANCE,
                         (pipeline_id, kind, *prov), values)
    seen_raw = RawTime(conn.dialect.name).to_raw(previous_seen)
    await _by_values(conn, _PG_RETIRE if postgres else _SQLITE_RETIRE,
                     (pipeline_id, kind, seen_raw, previous_run_id), changes.retire)
    await insert_groups(conn, pipeline_id, kind, changes.inserts)


def batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# The rows of one (pipeline, type) whose values are in a list: an index probe per value
# (PostgreSQL: `= ANY` on the unique index; SQLite: `IN` a json_each, probed likewise).
_ROWS_OF = " WHERE pipeline_id = {0} AND indicator_type = {1} AND value {2}"
_PG_VALUES = "= ANY(${0}::text[])"
_SQLITE_VALUES = "IN (SELECT value FROM json_each(?))"
_PG_DELETE = "DELETE FROM indicators" + _ROWS_OF.format("$1", "$2", _PG_VALUES.format(3))
_SQLITE_DELETE = "DELETE FROM indicators" + _ROWS_OF.format("?", "?", _SQLITE_VALUES)
_PG_SET_PROVENANCE = (
    "UPDATE indicators SET sources = $3::json, tags = $4::json, confidence = $5::integer, "
    "run_id = NULL" + _ROWS_OF.format("$1", "$2", _PG_VALUES.format(6))
)
_SQLITE_SET_PROVENANCE = (
    "UPDATE indicators SET sources = ?, tags = ?, confidence = ?, run_id = NULL"
    + _ROWS_OF.format("?", "?", _SQLITE_VALUES)
)
_PG_RETIRE = (
    "UPDATE indicators SET last_seen = $3::timestamp, run_id = $4::integer"
    + _ROWS_OF.format("$1", "$2", _PG_VALUES.format(5))
)
_SQLITE_RETIRE = (
    "UPDATE indicators SET last_seen = ?, run_id = ?" + _ROWS_OF.format("?", "?", _SQLITE_VALUES)
)


async def _by_values(
    conn: AsyncConnection, statement: str, head: tuple[Any, ...], values: Sequence[str]
) -> None:
    """`statement` once per BATCH_ROWS values. `head` is (pipeline, type, *columns to set):
    PostgreSQL's numbered parameters take it as is, SQLite's `?` in the statement's
    order (the SET columns first)."""
    sqlite = conn.dialect.name == "sqlite"
    for batch in batches(values, BATCH_ROWS):
        if sqlite:
            params = (*head[2:], *head[:2], orjson.dumps(list(batch)).decode())
            await conn.exec_driver_sql(statement, params)
        else:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            await driver.execute(statement, *head, list(batch))
        await asyncio.sleep(0)


async def delete_types(session: AsyncSession, pipeline_id: int, types: Sequence[str]) -> None:
    await session.execute(
        delete(Indicator).where(
            col(Indicator.pipeline_id) == pipeline_id, col(Indicator.indicator_type).in_(types)
        )
    )


@dataclass(slots=True)
class RowBatch:
    """Up to BATCH_ROWS rows of one (pipeline, type) that differ only in their value."""

    pipeline_id: int
    indicator_type: str
    columns: RowColumns
    values: Sequence[str]

    def __len__(self) -> int:
        return len(self.values)


async def bulk_insert(conn: AsyncConnection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Rows in COLUMNS order with raw values (grouped here, see `insert_groups`)."""
    by_type: dict[tuple[int, str], RowGroups] = {}
    for pipeline_id, kind, value, *columns in rows:
        groups = by_type.get((pipeline_id, kind))
        if groups is None:
            groups = by_type[(pipeline_id, kind)] = RowGroups()
        groups.add(tuple(columns), value)  # type: ignore[arg-type]
    for (pipeline_id, kind), groups in by_type.items():
        await insert_groups(conn, pipeline_id, kind, groups)


async def insert_groups(
    conn: AsyncConnection, pipeline_id: int, kind: str, rows: RowGroups
) -> None:
    """One statement per group and BATCH_ROWS values, the loop yielded between them.

    Values go in in key order: B-tree inserts in order touch one leaf after another
    (SQLite at 1M: 2.0 s instead of 4.0 s of CPU; the engine writes them in numeric, not
    text, order). A large SQLite insert gets a page cache that holds its index pages."""
    total = len(rows)
    if not total:
        return
    sqlite = conn.dialect.name == "sqlite"
    cache = None
    if sqlite and total >= BULK_CACHE_ROWS:
        cache = (await conn.exec_driver_sql("PRAGMA cache_size")).scalar()
        await conn.exec_driver_sql(f"PRAGMA cache_size={BULK_CACHE_SIZE}")
    try:
        for columns, values in rows.groups.items():
            if len(values) > 1:
                values = await asyncio.to_thread(sorted_in_slices, values)
            for batch in batches(values, BATCH_ROWS):
                await insert_batch(conn, RowBatch(pipeline_id, kind, columns, batch))
                await asyncio.sleep(0)
    finally:
        if cache is not None:
            await conn.exec_driver_sql(f"PRAGMA cache_size={int(cache)}")


def sorted_in_slices(values: list[str]) -> list[str]:
    """`sorted(values)` without one long C call (a sort of a million strings holds the GIL,
    so the event loop, for ~0.1 s): a sample sort whose buckets are each sorted by one
    short call, the bucketing done in bytecode (the GIL is handed over)."""
    if len(values) <= SORT_SLICE:
        return sorted(values)
    splitters = sorted(values[::SORT_SAMPLE_EVERY])[::SORT_SLICE // SORT_SAMPLE_EVERY]
    buckets: list[list[str]] = [[] for _ in range(len(splitters) + 1)]
    appends = [bucket.append for bucket in buckets]
    for value in values:
        appends[bisect_right(splitters, value)](value)
    result: list[str] = []
    for bucket in buckets:
        bucket.sort()
        result += bucket
    return result


_SQLITE_INSERT = (
    f"INSERT INTO indicators ({', '.join(COLUMNS)}) "
    "SELECT ?, ?, j.value, ?, ?, ?, ?, ?, ? FROM json_each(?) AS j"
)
# Casts: a parameter of INSERT … SELECT gets no type from the target column.
_PG_INSERT = (
    f"INSERT INTO indicators ({', '.join(COLUMNS)}) "
    "SELECT $1::integer, $2::varchar, v, $3::json, $4::json, $5::integer, $6::timestamp, "
    "$7::timestamp, $8::integer FROM unnest($9::text[]) AS v"
)


async def insert_batch(conn: AsyncConnection, batch: RowBatch) -> None:
    """A batch as one statement: the database expands the values into rows."""
    head = (batch.pipeline_id, batch.indicator_type, *batch.columns)
    if conn.dialect.name == "postgresql":
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        # Runs inside the transaction the session already opened.
        await driver.execute(_PG_INSERT, *head, list(batch.values))
        return
    await conn.exec_driver_sql(_SQLITE_INSERT, (*head, orjson.dumps(batch.values).decode()))
