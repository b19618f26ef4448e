"""The poll ledger: every poll made with a device credential, counted in memory per process
and written in batches.

A poll must stay a lookup (the fast path answers a 304 in a few µs), so `record` only bumps
a dict entry keyed by everything a poll row distinguishes; a background task swaps the dict
out every `poll_flush_seconds` and writes the window in one transaction: one
`device_polls` row per key, `device_feed_states` upserted (the newer poll wins, so any
number of processes sharing PostgreSQL can flush in any order) and `device_poll_counts`
upserted (counts add). A failed flush (database down) puts the window back for the next
try; the pending keys are capped, and what does not fit is counted as dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from prometheus_client import Counter
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from edl_api.db import upsert_insert
from edl_api.engine.entries import FEED_TYPES
from edl_api.errors import database_unavailable
from edl_api.metrics import PROCESS_REGISTRY
from edl_api.models import Device, DeviceFeedState, DevicePoll, DevicePollCount, utcnow

logger = logging.getLogger("edl_api.fleet")

POLLS_DROPPED = Counter(
    "edl_device_polls_dropped",
    "Device polls this process could not record (the ledger's pending window was full "
    "while the database could not be written)",
    registry=PROCESS_REGISTRY,
)

# (device, pipeline or 0 for the global feed, type, format, status, etag, run ids, address)
Key = tuple[int, int, str, str, int, str | None, str, str | None]
# [polls, bytes, entries, truncated, first (epoch s), last (epoch s)]; a list: cheapest to bump.
Agg = list[Any]

# Column widths of `device_polls` / `device_feed_states` (models.py): longer values are cut
# at flush time, so one odd value can never fail every later flush.
_WIDTHS = {"type": 10, "fmt": 20, "etag": 80, "run_ids": 200, "address": 64}
MD5_SUFFIX = ".md5"  # the format recorded for a `.md5` poll (Cisco FMC's checksum URL)
PRUNE_EVERY_SECONDS = 3600.0
_IN_CHUNK = 500  # ids per IN (...) list


class PollLedger:
    def __init__(
        self, flush_seconds: float, retention_days: int, *, enabled: bool = True,
        max_keys: int = 100_000,
    ) -> None:
        self.enabled = enabled
        self.flush_seconds = flush_seconds
        self.retention = timedelta(days=retention_days)
        self.max_keys = max_keys
        self.dropped = 0  # polls lost to the cap, for tests and the log
        self._pending: dict[Key, Agg] = {}
        self._maker: async_sessionmaker[AsyncSession] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_prune = -PRUNE_EVERY_SECONDS
        self._bad_flushes = 0

    # --- recording (every poll: keep it a dict bump) -----------------------------------

    def record(
        self, device_id: int, pipeline_id: int | None, indicator_type: str, fmt: str,
        status: int, etag: str | None, run_ids: str, nbytes: int, entries: int | None,
        truncated: int, address: str | None,
    ) -> None:
        if not self.enabled:
            return
        key = (device_id, pipeline_id or 0, indicator_type, fmt, status, etag, run_ids, address)
        now = time.time()
        agg = self._pending.get(key)
        if agg is not None:  # same etag and run ids: same body, same entries and cut
            agg[0] += 1
            agg[1] += nbytes
            agg[5] = now
        elif len(self._pending) < self.max_keys:
            self._pending[key] = [1, nbytes, entries, truncated, now, now]
        else:
            self._drop(1)

    @property
    def pending_polls(self) -> int:
        return sum(agg[0] for agg in self._pending.values())

    def _drop(self, polls: int) -> None:
        if self.dropped == 0 or polls > 1:
            logger.warning("poll ledger full (%d keys): %d poll(s) not recorded",
                           self.max_keys, polls)
        self.dropped += polls
        POLLS_DROPPED.inc(polls)

    def _restore(self, batch: dict[Key, Agg]) -> None:
        """Put a window that could not be written back in front of what came since."""
        lost = 0
        for key, old in batch.items():
            new = self._pending.get(key)
            if new is not None:  # polled again meanwhile: one entry, the newer values
                new[0] += old[0]
                new[1] += old[1]
                new[4] = min(new[4], old[4])
            elif len(self._pending) < self.max_keys:
                self._pending[key] = old
            else:
                lost += old[0]
        if lost:
            self._drop(lost)

    # --- the background flush ------------------------------------------------------------

    def attach(self, maker: async_sessionmaker[AsyncSession]) -> None:
        """Where flushes write (without starting the loop: `flush()` by hand)."""
        self._maker = maker

    def start(self, maker: async_sessionmaker[AsyncSession]) -> None:
        self.attach(maker)
        if self.enabled:
            self._task = asyncio.create_task(self._run(), name="edl-poll-ledger")

    async def stop(self) -> None:
        """Stop the loop and write what is left (the final flush at shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            await self.flush()

    async def flush(self) -> int:
        """Write the pending window; returns the poll rows written (0 when it failed: the
        window is kept for the next try)."""
        if self._maker is None or not self._pending:
            await self._maybe_prune()
            return 0
        batch, self._pending = self._pending, {}  # swapped before any await
        try:
            written = await self._write(self._maker, batch)
        except Exception as exc:  # noqa: BLE001 - a flush must never end the loop
            self._failed(batch, exc)
            return 0
        self._bad_flushes = 0
        await self._maybe_prune()
        return written

    def _failed(self, batch: dict[Key, Agg], exc: Exception) -> None:
        polls = sum(agg[0] for agg in batch.values())
        reason = database_unavailable(exc)
        if reason is not None:
            logger.warning("poll ledger: database unavailable (%s); %d poll(s) kept for the "
                           "next flush", reason, polls)
            self._restore(batch)
            return
        # Anything else (a device deleted between the check and the insert, a bug): one
        # retry, then the window goes, so one bad row can never wedge every later flush.
        self._bad_flushes += 1
        if self._bad_flushes <= 1:
            logger.warning("poll ledger flush failed; retrying with the next window",
                           exc_info=exc)
            self._restore(batch)
        else:
            logger.error("poll ledger flush failed again; %d poll(s) dropped", polls,
                         exc_info=exc)
            self.dropped += polls
            POLLS_DROPPED.inc(polls)

    async def _write(
        self, maker: async_sessionmaker[AsyncSession], batch: dict[Key, Agg]
    ) -> int:
        async with maker() as session, session.begin():
            alive = await _existing_devices(session, {key[0] for key in batch})
            rows = [_poll_row(key, agg) for key, agg in batch.items() if key[0] in alive]
            if not rows:
                return 0
            dialect = session.get_bind().dialect.name
            await session.execute(sa.insert(_table(DevicePoll)), rows)
            states = _feed_states(rows)
            if states:
                await session.execute(_state_upsert(dialect), states)
            await session.execute(_count_upsert(dialect), _counts(rows))
            return len(rows)

    async def prune_old(self) -> int:
        """Delete the polls older than the retention now; returns the rows deleted."""
        if self._maker is None:
            return 0
        return await prune(self._maker, utcnow() - self.retention)

    async def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < PRUNE_EVERY_SECONDS:
            return
        self._last_prune = now
        try:
            await self.prune_old()
        except Exception:  # noqa: BLE001 - tried again a minute later
            logger.warning("poll ledger: pruning old polls failed", exc_info=True)
            self._last_prune = now - PRUNE_EVERY_SECONDS + 60


async def prune(maker: async_sessionmaker[AsyncSession], before: datetime) -> int:
    """Delete aggregated polls last seen before `before`; returns the rows deleted."""
    async with maker() as session, session.begin():
        result = await session.execute(
            delete(DevicePoll).where(col(DevicePoll.last_at) < before)
        )
    return int(getattr(result, "rowcount", 0) or 0)


async def _existing_devices(session: AsyncSession, device_ids: Iterable[int]) -> set[int]:
    """Devices still in the database (a deleted one's polls are skipped, not retried)."""
    wanted = sorted(device_ids)
    found: set[int] = set()
    for start in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[start:start + _IN_CHUNK]
        rows = await session.execute(select(col(Device.id)).where(col(Device.id).in_(chunk)))
        found.update(device_id for device_id in rows.scalars() if device_id is not None)
    return found


def _cut(value: str | None, width: str) -> str | None:
    return None if value is None else value[:_WIDTHS[width]]


def _moment(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _poll_row(key: Key, agg: Agg) -> dict[str, Any]:
    device_id, pipeline_id, kind, fmt, status, etag, run_ids, address = key
    return {
        "device_id": device_id, "pipeline_id": pipeline_id,
        "indicator_type": _cut(kind, "type"), "fmt": _cut(fmt, "fmt"), "status": status,
        "etag": _cut(etag, "etag"), "run_ids": _cut(run_ids, "run_ids") or "",
        "address": _cut(address, "address"), "polls": agg[0], "bytes": agg[1],
        "entries": agg[2], "truncated": agg[3] or 0,
        "first_at": _moment(agg[4]), "last_at": _moment(agg[5]),
    }


def served(status: int, fmt: str) -> bool:
    """A poll that leaves the device holding the body's version: a 200/304 of the feed
    itself (an `.md5` poll only asks which version is current)."""
    return status in (200, 304) and not fmt.endswith(MD5_SUFFIX)


def _run_id(run_ids: str) -> int | None:
    """The run a pipeline feed's X-EDL-Run-Id names; None for a global feed's several."""
    return int(run_ids) if run_ids.isdigit() else None


def _feed_states(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One state per (device, pipeline, type) of a known feed type: the latest poll's
    status, address and format; what is served from the latest 200/304 (None if the window
    had none: the upsert then keeps what the row says)."""
    states: dict[tuple[int, int, str], dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r["last_at"]):
        if row["indicator_type"] not in FEED_TYPES:
            continue
        key = (row["device_id"], row["pipeline_id"], row["indicator_type"])
        state = states.get(key)
        if state is None:
            state = states[key] = {
                "device_id": key[0], "pipeline_id": key[1], "indicator_type": key[2],
                "polls": 0, "served_etag": None, "served_run_id": None,
                "entries_served": None, "truncated": 0,
            }
        state["polls"] += row["polls"]
        state.update(fmt=row["fmt"], last_seen_at=row["last_at"],
                     last_address=row["address"], last_status=row["status"])
        if served(row["status"], row["fmt"]) and row["etag"] is not None:
            state.update(served_etag=row["etag"], served_run_id=_run_id(row["run_ids"]),
                         entries_served=row["entries"], truncated=row["truncated"])
    return list(states.values())


def _counts(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    counts: dict[tuple[int, int], int] = {}
    for row in rows:
        key = (row["device_id"], row["status"])
        counts[key] = counts.get(key, 0) + row["polls"]
    return [{"device_id": d, "status": s, "polls": n} for (d, s), n in counts.items()]


def _state_upsert(dialect: str) -> Any:
    """Newer wins: the window's last poll replaces the row's if it is not older; what is
    served is replaced only by a window that served something (`served_etag` set). The
    comparison is per window, not per poll: within one flush interval (seconds) a 404
    after another process's newer 200 could keep that process's served version either
    way, which is the same version in practice."""
    table = _table(DeviceFeedState)
    c = table.c
    stmt = upsert_insert(dialect, table)
    new = stmt.excluded
    newer = new.last_seen_at >= c.last_seen_at
    gives = sa.and_(newer, new.served_etag.is_not(None))

    def pick(name: str, when: Any) -> Any:
        return sa.case((when, getattr(new, name)), else_=getattr(c, name))

    return stmt.on_conflict_do_update(
        index_elements=["device_id", "pipeline_id", "indicator_type"],
        set_={
            "polls": c.polls + new.polls,
            "last_seen_at": pick("last_seen_at", newer),
            "last_address": pick("last_address", newer),
            "last_status": pick("last_status", newer),
            "fmt": pick("fmt", newer),
            **{name: pick(name, gives) for name in
               ("served_etag", "served_run_id", "entries_served", "truncated")},
        },
    )


def _count_upsert(dialect: str) -> Any:
    table = _table(DevicePollCount)
    stmt = upsert_insert(dialect, table)
    return stmt.on_conflict_do_update(
        index_elements=["device_id", "status"],
        set_={"polls": table.c.polls + stmt.excluded.polls},
    )


def _table(model: type[Any]) -> sa.Table:
    table: sa.Table = model.__table__
    return table

