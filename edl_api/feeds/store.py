"""Publishing (atomic, guarded, content-addressed) and the hooks that keep caches honest.

`publish_feeds` runs inside the caller's transaction: artifacts are stored, then hosted
feeds are repointed. Nothing is served from a run until that commit; a rollback leaves
the last good feed in place. `write_indicators` then brings the indicator store (search,
provenance) up to the published feeds: the dispatcher commits the feeds first so that
firewalls do not wait for it; `publish_run` does both in one transaction.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api.engine import config as engine_config
from edl_api.feeds import content as feed_content
from edl_api.feeds import indicators as indicator_store
from edl_api.feeds import provenance
from edl_api.feeds.hooks import mark_changed
from edl_api.models import Artifact, HostedFeed, Pipeline, PipelineRun, utcnow

logger = logging.getLogger("edl_api.feeds")

# --- publishing -------------------------------------------------------------------------


class _Clock:
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


@dataclass
class Decision:
    published: bool
    reason: str | None = None


@dataclass
class _Options:
    max_shrink_percent: float = 50.0
    allow_empty: bool = False
    retain_missing_days: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _options(run: PipelineRun) -> _Options:
    try:
        options = engine_config.load_config(run.config_snapshot).pipeline
    except Exception:  # a snapshot the engine accepted; defaults if it cannot be re-read
        logger.warning("run %s: config snapshot unreadable, default guard applies", run.id)
        return _Options()
    return _Options(
        options.guard.max_shrink_percent, options.guard.allow_empty, options.retain_missing_days
    )


def _prepare(
    out_dir: Path, types: list[str], old_contents: dict[str, bytes],
    retained_by_type: dict[str, set[str]],
) -> dict[str, PreparedFeed]:
    """CPU work, off the event loop: read, merge retained entries, hash, diff (the gzip
    copies are made afterwards, in parallel: zlib runs without the GIL)."""
    prepared: dict[str, PreparedFeed] = {}
    for kind in types:
        raw = (out_dir / f"{kind}.txt").read_bytes()
        lines = feed_content.split_lines(raw)
        line_set = set(lines)
        retained = retained_by_type.get(kind, set()) - line_set
        if retained:
            lines = feed_content.sorted_lines([*lines, *retained])
            line_set |= retained
        body = feed_content.join_lines(lines)
        old = old_contents.get(kind)
        old_set = set(feed_content.split_lines(old)) if old is not None else None
        prepared[kind] = PreparedFeed(
            kind, body, b"", feed_content.sha256_hex(body),
            len(lines), lines, retained, feed_content.diff_summary(old_set, line_set),
        )
    return prepared


def guard_decision(
    run: PipelineRun, live: bool, feed: PreparedFeed, current: HostedFeed | None,
    options: _Options,
) -> Decision:
    """Whether `feed` may replace what is served now; the reason when it may not."""
    if run.mode != "full":
        return Decision(False, "dry run: artifact stored, never published")
    if not live:
        return Decision(False, "pipeline is deleted or inactive: nothing is published")
    if current is None:
        return Decision(True)
    if run.id is not None and current.run_id > run.id:
        return Decision(False, f"a newer run (#{current.run_id}) already published this feed")
    if current.count > 0 and feed.count == 0 and not options.allow_empty:
        return Decision(
            False,
            f"guard: the result is empty and would replace {current.count} entries "
            "(pipeline.guard.allow_empty is false); the last good feed stays",
        )
    if current.count > 0 and feed.count < current.count:
        shrink = (current.count - feed.count) * 100.0 / current.count
        if shrink > options.max_shrink_percent and not (feed.count == 0 and options.allow_empty):
            return Decision(
                False,
                f"guard: the feed would shrink by {shrink:.1f}% ({current.count} → {feed.count} "
                f"entries), more than max_shrink_percent {options.max_shrink_percent:g}; "
                "the last good feed stays",
            )
    return Decision(True)


def source_feed(feeds: dict[str, HostedFeed], base: str) -> HostedFeed | None:
    """The hosted feed whose run/time stand for a base type's present rows."""
    if base in feeds:
        return feeds[base]
    return feeds.get("ip") if base in ("ipv4", "ipv6", "cidr") else None


_gc_state = {"pauses": 0, "was_enabled": False}
_gc_lock = threading.Lock()


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while a publish builds millions of small, acyclic objects
    (with it on, the collector re-walks them all again and again: 5-7x slower)."""
    with _gc_lock:
        if _gc_state["pauses"] == 0:
            _gc_state["was_enabled"] = gc.isenabled()
            gc.disable()
        _gc_state["pauses"] += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_state["pauses"] -= 1
            if _gc_state["pauses"] == 0 and _gc_state["was_enabled"]:
                gc.enable()


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


async def publish_run(session: AsyncSession, run: PipelineRun, out_dir: Path) -> None:
    """Store a finished run's artifacts, publish them and update the indicator store, all
    in the caller's transaction."""
    pending = await publish_feeds(session, run, out_dir)
    if pending is not None:
        await write_indicators(session, run, pending)


async def publish_feeds(
    session: AsyncSession, run: PipelineRun, out_dir: Path
) -> PendingIndicators | None:
    """Store a finished run's artifacts and repoint its hosted feeds (guard permitting).

    Returns what the indicator store still needs when something was published. The
    caller may commit before `write_indicators`: the feeds go live without waiting for
    a million provenance rows to be written."""
    if not run.persist or run.id is None:
        return None
    with gc_paused():
        return await _publish(session, run, out_dir)


async def _publish(
    session: AsyncSession, run: PipelineRun, out_dir: Path
) -> PendingIndicators | None:
    assert run.id is not None
    already = await session.execute(
        select(col(Artifact.id)).where(col(Artifact.run_id) == run.id).limit(1)
    )
    if already.first() is not None:  # a retried call: the first one stored everything
        return None
    options = _options(run)
    now = utcnow()
    pipeline = await session.get(Pipeline, run.pipeline_id)
    live = pipeline is not None and pipeline.deleted_at is None and pipeline.is_active
    types = [t for t in feed_content.FEED_TYPES if (out_dir / f"{t}.txt").is_file()]
    current = {
        feed.indicator_type: feed
        for feed in (
            await session.execute(
                select(HostedFeed).where(col(HostedFeed.pipeline_id) == run.pipeline_id)
                .with_for_update()
            )
        ).scalars()
    }
    old_contents: dict[str, bytes] = {}
    if current:
        rows = await session.execute(
            select(col(Artifact.indicator_type), col(Artifact.content)).where(
                col(Artifact.id).in_([f.artifact_id for f in current.values()])
            )
        )
        old_contents = {str(row[0]): bytes(row[1]) for row in rows}
    full = run.mode == "full" and live
    base_types = sorted({b for t in types for b in feed_content.BASE_TYPES[t]})
    clock = _Clock()
    entries_raw, counts, engine_counts = await asyncio.to_thread(
        _read_entries, out_dir, types, base_types
    )
    consistent = counts is not None and all(
        counts.get(b) == engine_counts.get(b) for b in base_types if b in engine_counts
    )
    baseline = _baseline_run(current, base_types, types) if full and consistent else None
    clock.lap("read_entries")

    # Retention decides what the feeds hold, so it needs the stored rows now; without
    # it they are read after the feeds went live (`write_indicators`).
    retain = full and options.retain_missing_days > 0
    stored: dict[str, dict[str, indicator_store.StoredIndicator]] | None = None
    delta: provenance.Delta | None = None
    retained_by_type: dict[str, set[str]] = {}
    if retain:
        delta = await _find_delta(session, baseline, entries_raw, base_types)
        stored = await indicator_store.load(
            session, run.pipeline_id, base_types, retained_only=delta is not None
        )
        clock.lap("load_indicators" if delta is None else "provenance_delta")
        raw_time = indicator_store.RawTime((await session.connection()).dialect.name)
        cutoff = raw_time.to_raw(now - timedelta(days=options.retain_missing_days))
        kept: dict[str, set[str]] = {}
        for base, rows_of_type in stored.items():
            hosted_for_base = source_feed(current, base)
            # A present row was last seen when its feed was last published.
            present_seen = (
                raw_time.to_raw(hosted_for_base.updated_at) if hosted_for_base else cutoff
            )
            kept[base] = {
                value for value, row in rows_of_type.items()
                if (present_seen if row.run_id is None else row.last_seen) >= cutoff
            }
            if delta is not None and present_seen >= cutoff:
                kept[base] |= delta.removed[base] - delta.added[base].keys()
        for kind in types:
            retained_by_type[kind] = set().union(
                *(kept.get(b, set()) for b in feed_content.BASE_TYPES[kind])
            )
    prepared = await asyncio.to_thread(_prepare, out_dir, types, old_contents, retained_by_type)
    clock.lap("prepare")

    decisions = {
        kind: guard_decision(run, live, feed, current.get(kind), options)
        for kind, feed in prepared.items()
    }
    gzipped_feeds = await asyncio.gather(
        *(asyncio.to_thread(feed_content.gzip_bytes, f.content) for f in prepared.values()),
    )
    artifacts: dict[str, Artifact] = {}
    for (kind, feed), gzipped in zip(prepared.items(), gzipped_feeds, strict=True):
        feed.gzip = gzipped
        artifacts[kind] = Artifact(
            run_id=run.id, pipeline_id=run.pipeline_id, indicator_type=kind,
            sha256=feed.sha256, count=feed.count, size=len(feed.content), content=feed.content,
            content_gzip=gzipped, published=decisions[kind].published,
            reason=decisions[kind].reason, created_at=now,
        )
        session.add(artifacts[kind])
    await session.flush()
    clock.lap("store_artifacts")
    published = {k for k, d in decisions.items() if d.published}
    pending: PendingIndicators | None = None
    if published:
        previous: dict[str, tuple[datetime, int | None]] = {}
        for base in _updated_bases(prepared, published):
            feed_before = source_feed(current, base)
            previous[base] = (
                (feed_before.updated_at, feed_before.run_id) if feed_before is not None
                else (now, None)
            )
        pending = PendingIndicators(
            run.id, run.pipeline_id, prepared, published, previous, baseline,
            base_types, entries_raw, counts, keep_entries=consistent, now=now, stored=stored,
            delta=delta,
        )
        for kind in sorted(published):
            new_feed = prepared[kind]
            artifact_id = artifacts[kind].id
            assert artifact_id is not None
            hosted = current.get(kind)
            if hosted is None:
                hosted = HostedFeed(pipeline_id=run.pipeline_id, indicator_type=kind,
                                    artifact_id=artifact_id, run_id=run.id,
                                    sha256=new_feed.sha256)
                session.add(hosted)
            hosted.artifact_id, hosted.run_id = artifact_id, run.id
            hosted.sha256, hosted.count, hosted.updated_at = new_feed.sha256, new_feed.count, now
        await session.flush()
        clock.lap("repoint")
        mark_changed(session, run.pipeline_id)

    run.diff = {**(run.diff or {}), **{k: f.diff for k, f in prepared.items()}}
    run.counts = {
        **(run.counts or {}),
        "feeds": {
            k: {"count": f.count, "published": decisions[k].published,
                "reason": decisions[k].reason, "retained": len(f.retained)}
            for k, f in prepared.items()
        },
    }
    logger.info("run %s: feeds stored%s in %s", run.id,
                " and repointed" if published else "", clock)
    held = [f"{k}: {d.reason}" for k, d in decisions.items() if not d.published and d.reason]
    if held and run.mode == "full":
        logger.info("run %s held feeds: %s", run.id, "; ".join(held))
    return pending


async def _find_delta(
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
        clock = _Clock()
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
                delta = await _find_delta(
                    session, pending.baseline, pending.entries_raw, pending.base_types
                )
                stored = await indicator_store.load(
                    session, pending.pipeline_id, pending.base_types,
                    retained_only=delta is not None,
                )
                clock.lap("load_indicators" if delta is None else "provenance_delta")
            raw_time = indicator_store.RawTime((await session.connection()).dialect.name)
            summary = await _update_indicators(
                session, run, pending, stored, raw_time, clock, delta
            )
            if pending.keep_entries:
                session.add(Artifact(
                    run_id=pending.run_id, pipeline_id=pending.pipeline_id,
                    indicator_type=provenance.PROVENANCE,
                    sha256=feed_content.sha256_hex(pending.entries_raw),
                    count=sum((pending.counts or {}).values()), size=len(pending.entries_raw),
                    content=b"", published=False, created_at=pending.now,
                    content_gzip=await asyncio.to_thread(provenance.compress, pending.entries_raw),
                    reason="the run's entries with provenance (gzip only): the next "
                    "publish's baseline",
                ))
                await session.flush()
                clock.lap("store_provenance")
        run.counts = {**(run.counts or {}), "indicators": summary}
        logger.info("run %s: indicator store updated in %s", pending.run_id, clock)


async def prune_artifacts(session: AsyncSession, pipeline_id: int, keep_runs: int) -> int:
    """Drop the bytes of artifacts older than the pipeline's `keep_runs` newest runs that
    stored any, keeping their metadata (count, sha, published, reason). Never the bytes
    a hosted feed serves, nor the provenance of a run a hosted feed comes from (the next
    publish's baseline). Returns how many artifacts were pruned."""
    run_ids = (await session.execute(
        select(col(Artifact.run_id)).where(col(Artifact.pipeline_id) == pipeline_id)
        .distinct().order_by(col(Artifact.run_id).desc()).limit(keep_runs + 1)
    )).scalars().all()
    if len(run_ids) <= keep_runs:
        return 0
    oldest_kept = run_ids[keep_runs - 1]
    served = (await session.execute(
        select(col(HostedFeed.artifact_id), col(HostedFeed.run_id))
        .where(col(HostedFeed.pipeline_id) == pipeline_id)
    )).all()
    table = Artifact.__table__  # type: ignore[attr-defined]
    query = (
        update(table)
        .where(table.c.pipeline_id == pipeline_id, table.c.run_id < oldest_kept,
               table.c.pruned_at.is_(None))
        .values(content=b"", content_gzip=b"", pruned_at=utcnow())
    )
    if served:
        query = query.where(table.c.id.not_in([a for a, _ in served]),
                            table.c.run_id.not_in([r for _, r in served]))
    result = await session.execute(query)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _read_entries(
    out_dir: Path, types: list[str], base_types: list[str]
) -> tuple[bytes, dict[str, int] | None, dict[str, int]]:
    """entries.jsonl, its entries per type, and the engine's line count per own feed."""
    path = out_dir / "entries.jsonl"
    raw = path.read_bytes() if path.is_file() else b""
    engine_counts = {
        kind: (out_dir / f"{kind}.txt").read_bytes().count(b"\n")
        for kind in types if kind in base_types
    }
    return raw, provenance.entry_counts(raw, base_types), engine_counts


def _baseline_run(
    current: dict[str, HostedFeed], base_types: list[str], types: list[str]
) -> int | None:
    """The one run whose provenance all present rows of these types came from, if any."""
    runs = set()
    for base in base_types:
        if base not in types or base not in current:
            return None
        runs.add(current[base].run_id)
    return runs.pop() if len(runs) == 1 else None


def _ip_kind(value: str) -> str:
    network = feed_content.ip_network(value)
    if network is None:
        return "other"
    version, _, prefixlen = network
    if prefixlen == (32 if version == 4 else 128):
        return "ipv4" if version == 4 else "ipv6"
    return "cidr"


def _plan(
    run: PipelineRun, entries_raw: bytes, prepared: dict[str, PreparedFeed],
    stored: dict[str, dict[str, indicator_store.StoredIndicator]],
    previous: dict[str, tuple[Any, int | None]], now_raw: Any,
) -> list[indicator_store.TypeChanges]:
    """CPU work, off the event loop: provenance from entries.jsonl (as `_read_entries` read
    it), then a plan per base type of `previous`."""
    provenance = indicator_store.read_provenance(entries_raw)
    plans = []
    for base in previous:
        if base in prepared:
            feed = prepared[base]
            retained = feed.retained
            values = [v for v in feed.lines if v not in retained] if retained else feed.lines
        else:  # only the combined "ip" feed was produced: split it by type
            feed = prepared["ip"]
            retained = {v for v in feed.retained if _ip_kind(v) == base}
            values = [v for v in feed.lines if _ip_kind(v) == base and v not in retained]
        previous_seen_raw, previous_run_id = previous[base]
        plans.append(indicator_store.plan_type(
            run.pipeline_id, base, values, retained, provenance, stored.get(base, {}),
            now_raw, previous_seen_raw, previous_run_id,
        ))
    return plans


def _updated_bases(prepared: dict[str, PreparedFeed], published: set[str]) -> list[str]:
    """Base types whose rows follow a published feed (the combined "ip" feed stands for
    the IP types it was the only feed of)."""
    return [
        base for base in ("ipv4", "ipv6", "cidr", "fqdn", "url")
        if base in published or (base not in prepared and "ip" in published)
    ]


async def _update_indicators(
    session: AsyncSession, run: PipelineRun, pending: PendingIndicators,
    stored: dict[str, dict[str, indicator_store.StoredIndicator]],
    raw_time: indicator_store.RawTime, clock: _Clock, delta: provenance.Delta | None,
) -> dict[str, Any]:
    """Bring the provenance rows of every base type whose feed was published up to date."""
    prepared, previous = pending.prepared, pending.previous
    if not previous:  # no published feed stands for a base type
        return {}
    now_raw = raw_time.to_raw(pending.now)
    previous_raw = {b: (raw_time.to_raw(t), r) for b, (t, r) in previous.items()}
    if delta is not None:
        plans = [
            indicator_store.plan_from_delta(
                run.pipeline_id, base, delta, stored.get(base, {}), prepared[base].retained,
                now_raw,
            )
            for base in previous
        ]
    else:
        plans = await asyncio.to_thread(
            _plan, run, pending.entries_raw, prepared, stored, previous_raw, now_raw
        )
    clock.lap("plan_indicators")
    summary: dict[str, Any] = {"method": "delta" if delta is not None else "full"}
    for changes in plans:
        seen, run_id = previous[changes.indicator_type]
        await indicator_store.apply(session, run.pipeline_id, changes, run_id, seen)
        summary[changes.indicator_type] = changes.summary()
    clock.lap("write_indicators")
    return summary
