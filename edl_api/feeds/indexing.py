"""The indicator store's half of publishing: search and provenance rows follow the feeds.

`feeds.publish` commits the repointed feeds first (firewalls never wait for this), then
calls `write_indicators` in a second transaction: it plans, per base type whose feed was
published, what to insert, update or drop (from the run's provenance delta against its
baseline run when there is one, else against the stored rows), and stores the run's own
provenance as the next publish's baseline.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api.engine.entries import BASE_TYPES
from edl_api.engine.entries_file import ENTRIES_FILE, LEGACY_ENTRIES_FILE
from edl_api.engine.indicators import ip_kind
from edl_api.feeds import content as feed_content
from edl_api.feeds import entries_reader, provenance
from edl_api.feeds import indicators as indicator_store
from edl_api.models import Artifact, HostedFeed, PipelineRun

logger = logging.getLogger("edl_api.feeds")


class Clock:
    """Wall time per publishing step, for the log."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.laps: list[tuple[str, float]] = []

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps.append((name, now - self.last))
        self.last = now

    def __str__(self) -> str:
        steps = ", ".join(f"{name} {seconds:.2f}" for name, seconds in self.laps)
        return f"{time.perf_counter() - self.started:.2f}s ({steps})"


@dataclass
class PreparedFeed:
    indicator_type: str
    content: bytes
    gzip: bytes
    sha256: str
    count: int
    lines: list[str]
    retained: set[str]
    diff: dict[str, Any]
    # True while `lines` is still to be split from `content` (after the feeds went live).
    lines_pending: bool = False




_gc_state: dict[str, Any] = {"pauses": 0, "was_enabled": False, "switch": 0.005}
_gc_lock = threading.Lock()
# While a publish's worker threads run Python code, the event loop (and each aiosqlite
# thread) waits up to one switch interval for the GIL every time it wants it back, and a
# poll needs it several times: at the default 5 ms, feed polls took 40-100 ms.
PUBLISH_SWITCH_INTERVAL = 0.0005


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while a publish builds millions of small, acyclic objects
    (with it on, the collector re-walks them all again and again: 5-7x slower), and hand
    the GIL over sooner meanwhile (`PUBLISH_SWITCH_INTERVAL`)."""
    with _gc_lock:
        if _gc_state["pauses"] == 0:
            _gc_state["was_enabled"] = gc.isenabled()
            gc.disable()
            _gc_state["switch"] = sys.getswitchinterval()
            sys.setswitchinterval(min(_gc_state["switch"], PUBLISH_SWITCH_INTERVAL))
        _gc_state["pauses"] += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_state["pauses"] -= 1
            if _gc_state["pauses"] == 0:
                sys.setswitchinterval(_gc_state["switch"])
                if _gc_state["was_enabled"]:
                    gc.enable()


RELEASE_CHUNK = 20_000


def _drain(*lists: list[Any]) -> None:
    """Free big lists a slice at a time: one `del` of a million items is a single C loop
    that holds the GIL throughout; slices let the event loop thread in between."""
    for items in lists:
        while items:
            del items[-RELEASE_CHUNK:]


def _empty(*dicts: dict[Any, Any]) -> None:
    """Empty big dicts item by item (bytecode, so the GIL is handed over): dropping a
    million-item dict in one go frees all its keys and values in a single C call."""
    for items in dicts:
        pop = items.popitem
        for _ in range(len(items)):
            pop()


async def release_lines(pending: PendingIndicators) -> None:
    """Free a publish's per-feed lines in a worker thread, in slices (see `_drain`)."""
    lists = [feed.lines for feed in pending.prepared.values()]
    for feed in pending.prepared.values():
        feed.lines = []
    pending.entries_raw = b""
    await asyncio.to_thread(_drain, *lists)


@dataclass
class PendingIndicators:
    """What a publish leaves for the indicator store (search, provenance), written by
    `write_indicators` once the feeds are live: in a second transaction (the dispatcher)
    or in the same one (`publish_run`)."""

    run_id: int
    pipeline_id: int
    prepared: dict[str, PreparedFeed]
    published: set[str]
    # Per base type whose rows follow a published feed: (last_seen, run id) of the feed
    # this publish replaced.
    previous: dict[str, tuple[datetime, int | None]]
    baseline: int | None  # the run whose provenance the replaced rows came from
    base_types: list[str]
    entries_raw: bytes
    counts: dict[str, int] | None
    keep_entries: bool
    now: datetime
    # Loaded before the guard when retention needed them; otherwise read afterwards.
    stored: dict[str, dict[str, indicator_store.StoredIndicator]] | None = None
    delta: provenance.Delta | None = None
    # What going live did not need (feed lines, the entries file, the diff), left by
    # `feeds.publish` to run once the feeds are live; `write_indicators` runs it if needed.
    settle: Callable[[], Awaitable[None]] | None = None



async def find_delta(
    session: AsyncSession, baseline: int | None, entries_raw: bytes, base_types: list[str]
) -> provenance.Delta | None:
    """The entries that differ from the baseline run's (None: compare with the rows)."""
    if baseline is None:
        return None
    packed = (await session.execute(
        select(col(Artifact.content_gzip)).where(
            col(Artifact.run_id) == baseline,
            col(Artifact.indicator_type) == provenance.PROVENANCE,
        )
    )).scalar_one_or_none()
    if packed is None:
        return None
    return await asyncio.to_thread(
        lambda: provenance.compute_delta(provenance.decompress(packed), entries_raw, base_types)
    )


async def write_indicators(
    session: AsyncSession, run: PipelineRun, pending: PendingIndicators
) -> None:
    """Bring the indicator store up to the feeds `publish_feeds` published.

    Skipped when a newer run has repointed any of those feeds since (its own write
    follows). The run's provenance (the next publish's delta baseline) is stored here,
    with the rows it describes: if this never happens, the next publish compares with
    the rows themselves and repairs them."""
    with gc_paused():
        if pending.settle is not None:
            await pending.settle()
        clock = Clock()
        serving = {
            feed.indicator_type: feed.run_id
            for feed in (
                await session.execute(
                    select(HostedFeed).where(col(HostedFeed.pipeline_id) == pending.pipeline_id)
                    .with_for_update()
                )
            ).scalars()
        }
        if any(serving.get(kind) != pending.run_id for kind in pending.published):
            summary: dict[str, Any] = {"skipped": "a newer run published these feeds first"}
        else:
            delta, stored = pending.delta, pending.stored
            if stored is None:
                delta = await find_delta(
                    session, pending.baseline, pending.entries_raw, pending.base_types
                )
                stored = await indicator_store.load(
                    session, pending.pipeline_id, pending.base_types,
                    retained_only=delta is not None,
                )
                clock.lap("load_indicators" if delta is None else "provenance_delta")
            raw_time = indicator_store.RawTime((await session.connection()).dialect.name)
            summary = await update_indicators(
                session, run, pending, stored, raw_time, clock, delta
            )
            # Freed as this returns (on the loop), a million stored rows are one ~0.1 s
            # C call: emptied in a worker thread, item by item, instead.
            pending.stored = None
            await asyncio.to_thread(_empty, *stored.values())
            if pending.keep_entries:
                # hashing/compressing ~100 MB of entries: worker threads, not the loop
                digest, packed = await asyncio.gather(
                    asyncio.to_thread(feed_content.sha256_hex, pending.entries_raw),
                    asyncio.to_thread(provenance.compress, pending.entries_raw),
                )
                session.add(Artifact(
                    run_id=pending.run_id, pipeline_id=pending.pipeline_id,
                    indicator_type=provenance.PROVENANCE,
                    sha256=digest,
                    count=sum((pending.counts or {}).values()), size=len(pending.entries_raw),
                    content=b"", published=False, created_at=pending.now,
                    content_gzip=packed,
                    reason="the run's entries with provenance (gzip only): the next "
                    "publish's baseline",
                ))
                await session.flush()
                clock.lap("store_provenance")
        run.counts = {**(run.counts or {}), "indicators": summary}
        logger.info("run %s: indicator store updated in %s", pending.run_id, clock)


def read_entries(
    out_dir: Path, types: list[str], base_types: list[str]
) -> tuple[bytes, dict[str, int] | None, dict[str, int]]:
    """The entries file, its entries per type, and the engine's line count per own feed
    (a run directory of an engine before the grouped form has `entries.jsonl`)."""
    path = out_dir / ENTRIES_FILE
    if not path.is_file():
        path = out_dir / LEGACY_ENTRIES_FILE
    raw = path.read_bytes() if path.is_file() else b""
    engine_counts = {
        kind: (out_dir / f"{kind}.txt").read_bytes().count(b"\n")
        for kind in types if kind in base_types
    }
    return raw, entries_reader.entry_counts(raw, base_types), engine_counts


def _plan(
    run: PipelineRun, entries_raw: bytes, prepared: dict[str, PreparedFeed],
    stored: dict[str, dict[str, indicator_store.StoredIndicator]],
    previous: dict[str, tuple[Any, int | None]], now_raw: Any, counts: dict[str, int] | None,
) -> list[indicator_store.TypeChanges]:
    """CPU work, off the event loop: provenance from the entries file (as `read_entries` read
    it), then a plan per base type of `previous`."""
    grouped = entries_reader.read_grouped(entries_raw)
    provenance: entries_reader.ProvenanceMap | None = None
    plans = []
    for base in previous:
        feed = prepared.get(base)
        # No rows yet, nothing retained, and the engine's entries of the type are exactly
        # the feed's lines: its own feed (every line one of its entries, the counts match)
        # or, with no feed of its own, its share of the combined "ip" feed (no other feed
        # holds the type). Then no line of a million needs looking up or classifying.
        if not stored.get(base) and counts is not None and (
            (feed is not None and not feed.retained and counts.get(base) == len(feed.lines))
            or (feed is None and not _retained(prepared, base))
        ):
            plans.append(indicator_store.plan_first(base, grouped.get(base, {}), now_raw))
            continue
        if provenance is None:
            provenance = entries_reader.provenance_map(grouped)
        if feed is not None:
            retained = feed.retained
            values = [v for v in feed.lines if v not in retained] if retained else feed.lines
        else:  # only the combined "ip" feed was produced: split it by type
            feed = prepared["ip"]
            retained = _retained(prepared, base)
            values = [v for v in feed.lines if ip_kind(v) == base and v not in retained]
        previous_seen_raw, previous_run_id = previous[base]
        plans.append(indicator_store.plan_type(
            run.pipeline_id, base, values, retained, provenance, stored.get(base, {}),
            now_raw, previous_seen_raw, previous_run_id,
        ))
    if provenance is not None:
        _empty(*provenance.values())  # else freed in one C call as this returns
    return plans


def updated_bases(prepared: dict[str, PreparedFeed], published: set[str]) -> list[str]:
    """Base types whose rows follow a published feed (the combined "ip" feed stands for
    the IP types it was the only feed of)."""
    return [
        base for base in ("ipv4", "ipv6", "cidr", "fqdn", "url")
        if base in published
        or (base in BASE_TYPES["ip"] and base not in prepared and "ip" in published)
    ]


def _retained(prepared: dict[str, PreparedFeed], base: str) -> set[str]:
    """The retained values of a base type: its own feed's, else its share of "ip"'s."""
    if base in prepared:
        return prepared[base].retained
    return {v for v in prepared["ip"].retained if ip_kind(v) == base}


async def update_indicators(
    session: AsyncSession, run: PipelineRun, pending: PendingIndicators,
    stored: dict[str, dict[str, indicator_store.StoredIndicator]],
    raw_time: indicator_store.RawTime, clock: Clock, delta: provenance.Delta | None,
) -> dict[str, Any]:
    """Bring the provenance rows of every base type whose feed was published up to date."""
    prepared, previous = pending.prepared, pending.previous
    if not previous:  # no published feed stands for a base type
        return {}
    now_raw = raw_time.to_raw(pending.now)
    previous_raw = {b: (raw_time.to_raw(t), r) for b, (t, r) in previous.items()}
    if delta is not None:
        found = delta  # a churn-heavy delta is as big as the feed: planned off the loop
        plans = await asyncio.to_thread(lambda: [
            indicator_store.plan_from_delta(
                run.pipeline_id, base, found, stored.get(base, {}), _retained(prepared, base),
                now_raw,
            )
            for base in previous
        ])
    else:
        plans = await asyncio.to_thread(
            _plan, run, pending.entries_raw, prepared, stored, previous_raw, now_raw,
            pending.counts,
        )
    clock.lap("plan_indicators")
    summary: dict[str, Any] = {"method": "delta" if delta is not None else "full"}
    for changes in plans:
        seen, run_id = previous[changes.indicator_type]
        await indicator_store.apply(session, run.pipeline_id, changes, run_id, seen)
        summary[changes.indicator_type] = changes.summary()
    clock.lap("write_indicators")
    rows = [values for c in plans for values in c.inserts.value_lists()]
    rows += [values for c in plans if c.replace_all for values in c.replace_all.value_lists()]
    await asyncio.to_thread(_drain, *rows)
    return summary
