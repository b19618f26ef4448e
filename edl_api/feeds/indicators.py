"""The indicator store: the latest published entries per pipeline, with provenance.

A row whose `run_id` is NULL is *present* in the pipeline's hosted feed: its effective
`run_id` and `last_seen` are those of that feed (`HostedFeed.run_id/updated_at`), so a
publish that changes little writes little — no per-row "touch" of a million rows.
A row with a `run_id` vanished from its sources and is kept by `retain_missing_days`;
its `last_seen` is when it was last published.

Bulk writes go through the driver (executemany, PostgreSQL COPY) with raw values;
within this module a time is a *raw* value as the driver stores it (SQLite: text,
PostgreSQL: naive UTC datetime).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import bindparam, delete, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlmodel import col

from edl_api.feeds.content import line_spans
from edl_api.models import Indicator

COLUMNS = (
    "pipeline_id", "indicator_type", "value", "sources", "tags", "confidence",
    "first_seen", "last_seen", "run_id",
)
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # what SQLAlchemy's SQLite DateTime writes
NO_VALUES = "[]"
# Rewriting the whole type beats row-by-row changes past this share of changed rows.
REPLACE_RATIO = 0.5
# Rows per driver call (raw tuples) and per Core executemany (SQLAlchemy builds each
# row's parameters on the event loop: ~10 us a row). The loop is yielded between
# batches, so a million-row write never holds feed serving for more than one batch.
BATCH_ROWS = 10_000
CORE_BATCH_ROWS = 2_000
PARSE_BYTES = 512 * 1024  # entries.jsonl bytes per split/orjson call (see read_provenance)

Provenance = tuple[str, str, int]  # sources JSON, tags JSON, confidence


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


class JsonLists:
    """Canonical JSON text of string lists, memoised (provenance repeats a lot)."""

    def __init__(self) -> None:
        self._texts: dict[tuple[str, ...], str] = {(): NO_VALUES}

    def text(self, values: Iterable[str]) -> str:
        key = tuple(values)
        found = self._texts.get(key)
        if found is None:
            found = self._texts[key] = orjson.dumps(list(key)).decode()
        return found


def read_provenance(raw: bytes) -> dict[tuple[str, str], Provenance]:
    """(type, value) → provenance from the engine's entries.jsonl bytes."""
    lists = JsonLists()
    provenance: dict[tuple[str, str], Provenance] = {}
    # Split and parsed in slices: one split or orjson call holds the GIL throughout, and
    # a million entries in one call would stall the event loop (this runs in a worker
    # thread) for 0.1 s (split) to seconds (parse).
    for start, end in line_spans(raw, PARSE_BYTES):
        lines = [line for line in raw[start:end].split(b"\n") if line.strip()]
        if not lines:
            continue
        for entry in orjson.loads(b"[" + b",".join(lines) + b"]"):
            provenance[(str(entry.get("type")), str(entry.get("value")))] = (
                lists.text(entry.get("sources") or ()), lists.text(entry.get("tags") or ()),
                int(entry.get("confidence", 50)),
            )
    return provenance


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


@dataclass
class TypeChanges:
    """What one publish changes in the rows of one (pipeline, type)."""

    indicator_type: str
    inserts: list[tuple[Any, ...]] = field(default_factory=list)  # COLUMNS order, raw
    updates: list[tuple[str, Provenance]] = field(default_factory=list)  # now present
    retire: list[str] = field(default_factory=list)  # present → kept by retention
    deletes: list[str] = field(default_factory=list)
    replace_all: list[tuple[Any, ...]] | None = None  # rewrite the type instead

    def summary(self) -> dict[str, int | bool]:
        return {
            "inserted": len(self.inserts), "updated": len(self.updates),
            "retired": len(self.retire), "deleted": len(self.deletes),
            "rewritten": self.replace_all is not None,
        }


def plan_type(
    pipeline_id: int, kind: str, values: Sequence[str], retained: set[str],
    provenance: dict[tuple[str, str], Provenance], stored: dict[str, StoredIndicator],
    now_raw: Any, previous_seen_raw: Any, previous_run_id: int | None,
) -> TypeChanges:
    """Rows to insert/update/retire/delete so the store matches the published feed.

    `values` are the entries the run produced; `retained` the vanished ones that
    `retain_missing_days` keeps in the feed. When most rows change, the plan is a
    rewrite of the whole type (`replace_all`) instead."""
    changes = TypeChanges(kind)
    default: Provenance = (NO_VALUES, NO_VALUES, 50)
    # Only values that have a row: the checks below look up no other. (A first publish
    # then builds no million-item set, whose resizes are single long C calls.)
    seen: set[str] = set()
    for value in values:
        prov = provenance.get((kind, value)) or provenance.get(("ip", value)) or default
        old = stored.get(value)
        if old is not None:
            seen.add(value)
        if old is None:
            changes.inserts.append((pipeline_id, kind, value, prov[0], prov[1], prov[2],
                                    now_raw, now_raw, None))
        elif old.run_id is not None or (old.sources, old.tags, old.confidence) != prov:
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
    rows: list[tuple[Any, ...]] = []
    for value in values:
        prov = provenance.get((kind, value)) or provenance.get(("ip", value)) or default
        old = stored.get(value)
        first_seen = old.first_seen if old is not None else now_raw
        rows.append((pipeline_id, kind, value, prov[0], prov[1], prov[2], first_seen, now_raw,
                     None))
    for value in retained:
        old = stored.get(value)
        if old is None or value in seen:
            continue
        if old.run_id is None:
            rows.append((pipeline_id, kind, value, old.sources, old.tags, old.confidence,
                         old.first_seen, previous_seen_raw, previous_run_id))
        else:
            rows.append((pipeline_id, kind, value, old.sources, old.tags, old.confidence,
                         old.first_seen, old.last_seen, old.run_id))
    changes.replace_all = rows
    return changes


def plan_from_delta(
    pipeline_id: int, kind: str, delta: Any, retained_rows: dict[str, StoredIndicator],
    retained: set[str], now_raw: Any,
) -> TypeChanges:
    """The same changes as `plan_type`, from the entries that differ from the baseline
    (`provenance.Delta`) and the rows not present in the feed (`retained_rows`)."""
    changes = TypeChanges(kind)
    added: dict[str, Provenance] = delta.added[kind]
    removed: set[str] = delta.removed[kind]
    for value, prov in added.items():
        if value in removed or value in retained_rows:
            changes.updates.append((value, prov))
        else:
            changes.inserts.append((pipeline_id, kind, value, prov[0], prov[1], prov[2],
                                    now_raw, now_raw, None))
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
    """Write one type's changes: bulk insert through the driver, executemany for the rest."""
    kind = changes.indicator_type
    if changes.replace_all is not None:
        await delete_types(session, pipeline_id, [kind])
        if changes.replace_all:
            await bulk_insert(await session.connection(), changes.replace_all)
        return
    await _delete_values(session, pipeline_id, kind, changes.deletes)
    table = Indicator.__table__  # type: ignore[attr-defined]
    where = (
        (table.c.pipeline_id == pipeline_id) & (table.c.indicator_type == kind)
        & (table.c.value == bindparam("b_value"))
    )
    set_provenance = update(table).where(where).values(
        sources=bindparam("b_sources"), tags=bindparam("b_tags"),
        confidence=bindparam("b_confidence"), run_id=None,
    )
    for batch in batches(changes.updates, CORE_BATCH_ROWS):
        await session.execute(set_provenance, [
            {"b_value": value, "b_sources": orjson.loads(prov[0]),
             "b_tags": orjson.loads(prov[1]), "b_confidence": prov[2]}
            for value, prov in batch
        ])
        await asyncio.sleep(0)
    retire = update(table).where(where).values(last_seen=previous_seen, run_id=previous_run_id)
    for batch in batches(changes.retire, CORE_BATCH_ROWS):
        await session.execute(retire, [{"b_value": value} for value in batch])
        await asyncio.sleep(0)
    if changes.inserts:
        await bulk_insert(await session.connection(), changes.inserts)


def batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


async def _delete_values(
    session: AsyncSession, pipeline_id: int, kind: str, values: Sequence[str]
) -> None:
    if not values:
        return
    table = Indicator.__table__  # type: ignore[attr-defined]
    statement = delete(table).where(
        (table.c.pipeline_id == pipeline_id) & (table.c.indicator_type == kind)
        & (table.c.value == bindparam("b_value"))
    )
    for batch in batches(values, CORE_BATCH_ROWS):
        await session.execute(statement, [{"b_value": value} for value in batch])
        await asyncio.sleep(0)


async def delete_types(session: AsyncSession, pipeline_id: int, types: Sequence[str]) -> None:
    await session.execute(
        delete(Indicator).where(
            col(Indicator.pipeline_id) == pipeline_id, col(Indicator.indicator_type).in_(types)
        )
    )


async def bulk_insert(conn: AsyncConnection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Rows in COLUMNS order with raw values, through the driver's fastest path, in
    batches of BATCH_ROWS with the loop yielded between them."""
    for batch in batches(rows, BATCH_ROWS):
        await insert_batch(conn, batch)
        await asyncio.sleep(0)


async def insert_batch(conn: AsyncConnection, rows: Sequence[tuple[Any, ...]]) -> None:
    if conn.dialect.name == "postgresql":
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        # COPY runs inside the transaction the session already opened.
        await driver.copy_records_to_table("indicators", records=rows, columns=list(COLUMNS))
        return
    placeholders = ", ".join("?" for _ in COLUMNS)
    await conn.exec_driver_sql(
        f"INSERT INTO indicators ({', '.join(COLUMNS)}) VALUES ({placeholders})", list(rows)
    )
