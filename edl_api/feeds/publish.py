"""Publishing has one owner: this module.

`publish()` takes a run whose engine succeeded from its output folder to served feeds:

1. **Feeds live** (one transaction): the run's artifacts are stored, the guard decides
   per feed, and the hosted feeds are repointed; the run stays `running` at stage
   `indexing`. Firewalls get the new feeds from this commit on. A failure here leaves the
   last good feeds in place and the run `failed`.
2. **Indicator store** (a second transaction, `feeds.indexing`): search and provenance
   rows follow the feeds. A failure here leaves the run `succeeded` (what is served is
   its feed) with an error saying search lags one run.
3. **Pruning** (its own transaction): old runs' artifact bytes (`feeds.prune`).

The caller records the outcome. The same rule decides a run whose worker died after
step 1: `state_after_owner_died` (published ⇒ succeeded).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from edl_api.alerts import events as alert_events
from edl_api.engine.entries import BASE_TYPES, FEED_TYPES
from edl_api.feeds import content as feed_content
from edl_api.feeds import indicators as indicator_store
from edl_api.feeds import provenance
from edl_api.feeds.guard import PublishOptions, guard_decision
from edl_api.feeds.hooks import mark_changed
from edl_api.feeds.indexing import (
    Clock,
    PendingIndicators,
    find_delta,
    gc_paused,
    read_entries,
    release_lines,
    updated_bases,
    write_indicators,
)
from edl_api.feeds.prepared import finish_feeds, prepare_feeds
from edl_api.feeds.prune import prune_artifacts, prune_explains
from edl_api.feeds.render import drop_reports
from edl_api.fleet.capacity import add_capacity_report
from edl_api.models import Artifact, HostedFeed, Pipeline, PipelineRun, utcnow
from edl_api.runs.claim import owned_run
from edl_api.runs.outcomes import failure_text
from edl_api.runs.state import RunState

logger = logging.getLogger("edl_api.feeds")

# Called with (stage, note) as publishing moves on: "publishing", then "indexing".
StageHook = Callable[[str, str], Awaitable[None]]


@dataclass
class PublishOutcome:
    """What `publish` did; the caller records `state` and `errors` on the run."""

    owned: bool = True  # False: the run is no longer this worker's; record nothing
    state: RunState = RunState.SUCCEEDED
    errors: list[str] = field(default_factory=list)
    live_after_seconds: float | None = None  # None: no feed was repointed
    seconds: float = 0.0


async def publish(
    sessionmaker: async_sessionmaker[AsyncSession], run_id: int, out_dir: Path, *,
    owner: str, options: PublishOptions, keep_runs: int, on_stage: StageHook | None = None,
) -> PublishOutcome:
    """Publish a succeeded run's output: feeds live, then the indicator store, then prune.

    The cyclic GC stays paused from the first step to the last: a full collection over a
    million-entry publish's objects holds the GIL (so the event loop) for ~0.5 s, and one
    would otherwise fall between the steps."""
    with gc_paused():
        return await _publish(sessionmaker, run_id, out_dir, owner=owner, options=options,
                              keep_runs=keep_runs, on_stage=on_stage)


async def _publish(
    sessionmaker: async_sessionmaker[AsyncSession], run_id: int, out_dir: Path, *,
    owner: str, options: PublishOptions, keep_runs: int, on_stage: StageHook | None,
) -> PublishOutcome:
    started = time.monotonic()
    outcome = PublishOutcome()
    stage = on_stage or _no_stage
    pending: PendingIndicators | None = None
    drops_task: asyncio.Future[dict[str, Any]] | None = None
    held: list[str] = []
    pipeline_id: int | None = None

    async def go_live(session: AsyncSession, run: PipelineRun) -> None:
        nonlocal pending, pipeline_id
        pipeline_id = run.pipeline_id
        pending = await store_and_repoint(session, run, out_dir, options)
        if pending is not None:
            run.progress = {**run.progress, "stage": "indexing"}
            await add_capacity_report(session, run)
        if run.mode == "full":  # a guard that held a feed is news to the operator
            held[:] = [
                f"{kind} feed not published: {feed['reason']}"
                for kind, feed in (run.counts.get("feeds") or {}).items()
                if not feed.get("published") and feed.get("reason")
            ]
            await alert_events.feeds_held(session, run)  # guard_held, with the feeds' commit

    async def index(session: AsyncSession, run: PipelineRun) -> None:
        assert pending is not None
        assert drops_task is not None
        await record_diff(session, run)
        await write_indicators(session, run, pending)
        run.counts = {**run.counts, "render_drops": await drops_task}

    async def record_diff(_session: AsyncSession, run: PipelineRun) -> None:
        assert pending is not None
        run.diff = {**(run.diff or {}), **{k: f.diff for k, f in pending.prepared.items()}}

    await stage("publishing", "storing artifacts")
    try:
        if not await _as_owner(sessionmaker, run_id, owner, go_live):
            return PublishOutcome(owned=False)
    except Exception as exc:
        outcome.state = RunState.FAILED
        outcome.errors.append(failure_text(exc, run_id, "publishing"))
        outcome.seconds = time.monotonic() - started
        return outcome
    outcome.errors.extend(held)  # only once that transaction committed
    if pending is not None:
        outcome.live_after_seconds = time.monotonic() - started
        await stage("indexing", f"feeds live after {outcome.live_after_seconds:.1f} s; "
                    "updating the indicator store")
        try:
            if pending.settle is not None:  # lines, diffs, entries: outside any transaction
                await pending.settle()
            # What each vendor format leaves out, known before any firewall polls (run
            # detail); computed once the feeds are live, outside any transaction.
            # In a worker thread beside the indicator store's write (whose SQL runs
            # without the GIL): ~0.7 s of CPU at 1M off the publish's critical path.
            drops_task = asyncio.ensure_future(asyncio.to_thread(
                drop_reports, {kind: feed.lines for kind, feed in pending.prepared.items()}
            ))
            if not await _as_owner(sessionmaker, run_id, owner, index):
                return PublishOutcome(owned=False)
        except Exception as exc:
            outcome.errors.append(
                f"indicator store not updated: {failure_text(exc, run_id, 'indexing')} "
                "(search shows the previous run's entries until the next run)"
            )
            try:  # the run's diff still says what its feeds changed
                await _as_owner(sessionmaker, run_id, owner, record_diff)
            except Exception:
                logger.exception("run %s: recording the diff failed", run_id)
    outcome.seconds = time.monotonic() - started
    if pending is not None:  # a million lines freed on the loop would stall it
        await release_lines(pending)
    if pipeline_id is not None:
        await _prune(sessionmaker, run_id, pipeline_id, keep_runs)
    return outcome


async def _as_owner(
    sessionmaker: async_sessionmaker[AsyncSession], run_id: int, owner: str,
    step: Callable[[AsyncSession, PipelineRun], Awaitable[None]],
) -> bool:
    """One transaction of `step` on the run's locked row while `owner` holds the run;
    False (nothing done) once it no longer does."""
    async with sessionmaker() as session:
        run = await owned_run(session, run_id, owner)
        if run is None:
            return False
        with gc_paused():
            await step(session, run)
        await session.commit()
    return True


async def _no_stage(_stage: str, _note: str) -> None:
    return None


async def _prune(
    sessionmaker: async_sessionmaker[AsyncSession], run_id: int, pipeline_id: int,
    keep_runs: int,
) -> None:
    """Drop old runs' artifact bytes and explain records (its own transaction: a failure is
    logged and never changes the run's outcome)."""
    try:
        async with sessionmaker() as session, session.begin():
            pruned = await prune_artifacts(session, pipeline_id, keep_runs)
            await prune_explains(session, pipeline_id, keep_runs)
    except Exception:
        logger.exception("run %s: pruning old artifacts failed", run_id)
        return
    if pruned:
        logger.info("pipeline %s: dropped the bytes of %d old artifact(s)", pipeline_id, pruned)


async def state_after_owner_died(
    session: AsyncSession, run_id: int, worker: str | None
) -> tuple[RunState, str]:
    """A `running` run whose worker died: `succeeded` when its feeds were already published
    (what firewalls get is its output; only the indicator store may lag), else
    `interrupted`."""
    published = (await session.execute(
        select(col(Artifact.id))
        .where(col(Artifact.run_id) == run_id, col(Artifact.published).is_(True))
        .limit(1)
    )).first() is not None
    if published:
        return RunState.SUCCEEDED, (
            f"worker {worker} stopped after publishing, before the indicator store "
            "was updated (search shows the previous run's entries until the next run)"
        )
    return RunState.INTERRUPTED, f"worker {worker} stopped while the run was running"


async def _read_entries(
    out_dir: Path, types: list[str], base_types: list[str]
) -> tuple[bytes, dict[str, int] | None, bool]:
    """The entries file, its entries per type, and whether those agree with the feed files
    (only then is it the next publish's baseline)."""
    entries_raw, counts, engine_counts = await asyncio.to_thread(
        read_entries, out_dir, types, base_types
    )
    consistent = counts is not None and all(
        counts.get(b) == engine_counts.get(b) for b in base_types if b in engine_counts
    )
    return entries_raw, counts, consistent


async def _settle(
    pending: PendingIndicators, out_dir: Path, types: list[str],
    old_contents: dict[str, bytes | None], candidate: int | None, *, entries_read: bool,
) -> None:
    """What the feeds going live did not need, done once they are: the feeds' lines and
    diffs, and (unless retention read them first) the entries file and the delta baseline
    (`candidate`, if the entries agree with the feeds)."""
    pending.settle = None
    await asyncio.to_thread(finish_feeds, pending.prepared, old_contents)
    if not entries_read:
        raw, counts, consistent = await _read_entries(out_dir, types, pending.base_types)
        pending.entries_raw, pending.counts, pending.keep_entries = raw, counts, consistent
        pending.baseline = candidate if consistent else None


def source_feed(feeds: dict[str, HostedFeed], base: str) -> HostedFeed | None:
    """The hosted feed whose run/time stand for a base type's present rows."""
    if base in feeds:
        return feeds[base]
    return feeds.get("ip") if base in ("ipv4", "ipv6", "cidr") else None


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


async def store_and_repoint(
    session: AsyncSession, run: PipelineRun, out_dir: Path, options: PublishOptions
) -> PendingIndicators | None:
    """Store a finished run's artifacts and repoint its hosted feeds (guard permitting), in
    the caller's transaction. Returns what the indicator store still needs when something
    was published."""
    assert run.id is not None
    already = await session.execute(
        select(col(Artifact.id)).where(col(Artifact.run_id) == run.id).limit(1)
    )
    if already.first() is not None:  # a retried call: the first one stored everything
        return None
    now = utcnow()
    pipeline = await session.get(Pipeline, run.pipeline_id)
    live = pipeline is not None and pipeline.deleted_at is None and pipeline.is_active
    types = [t for t in FEED_TYPES if (out_dir / f"{t}.txt").is_file()]
    current = {
        feed.indicator_type: feed
        for feed in (
            await session.execute(
                select(HostedFeed).where(col(HostedFeed.pipeline_id) == run.pipeline_id)
                .with_for_update()
            )
        ).scalars()
    }
    full = run.mode == "full" and live
    base_types = sorted({b for t in types for b in BASE_TYPES[t]})
    clock = Clock()
    # Retention decides what the feeds hold, so it needs the entries and the stored rows
    # now; without it both are read after the feeds went live (`_settle`).
    retain = full and options.retain_missing_days > 0
    entries_raw, counts, consistent = b"", None, False
    if retain:
        entries_raw, counts, consistent = await _read_entries(out_dir, types, base_types)
        clock.lap("read_entries")
    baseline = _baseline_run(current, base_types, types) if full and consistent else None
    stored: dict[str, dict[str, indicator_store.StoredIndicator]] | None = None
    delta: provenance.Delta | None = None
    retained_by_type: dict[str, set[str]] = {}
    if retain:
        delta = await find_delta(session, baseline, entries_raw, base_types)
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
                *(kept.get(b, set()) for b in BASE_TYPES[kind])
            )
    prepared = await asyncio.to_thread(prepare_feeds, out_dir, types, retained_by_type)
    clock.lap("prepare")

    decisions = {
        kind: guard_decision(run, live, feed, current.get(kind), options)
        for kind, feed in prepared.items()
    }
    published = {k for k, d in decisions.items() if d.published}
    # The replaced feeds' bytes, for the diffs: not read back when the sha256 is the same.
    old_contents: dict[str, bytes | None] = {
        kind: None for kind, feed in current.items()
        if kind in prepared and feed.sha256 == prepared[kind].sha256
    }
    changed = [f.artifact_id for k, f in current.items() if k in prepared and k not in old_contents]
    if changed:
        rows = await session.execute(
            select(col(Artifact.indicator_type), col(Artifact.content))
            .where(col(Artifact.id).in_(changed))
        )
        old_contents.update({str(row[0]): bytes(row[1]) for row in rows})
    if not published:  # nothing goes live: nothing to hurry for
        await asyncio.to_thread(finish_feeds, prepared, old_contents)
    # One gzip per distinct body (the "ip" feed is often the "ipv4" one, byte for byte).
    bodies = {f.sha256: f.content for f in prepared.values()}
    gzipped_by_sha = dict(zip(bodies, await asyncio.gather(
        *(asyncio.to_thread(feed_content.gzip_bytes, body) for body in bodies.values()),
    ), strict=True))
    artifacts: dict[str, Artifact] = {}
    for kind, feed in prepared.items():
        gzipped = feed.gzip = gzipped_by_sha[feed.sha256]
        artifacts[kind] = Artifact(
            run_id=run.id, pipeline_id=run.pipeline_id, indicator_type=kind,
            sha256=feed.sha256, count=feed.count, size=len(feed.content), content=feed.content,
            content_gzip=gzipped, published=decisions[kind].published,
            reason=decisions[kind].reason, created_at=now,
        )
        session.add(artifacts[kind])
    await session.flush()
    clock.lap("store_artifacts")
    pending: PendingIndicators | None = None
    if published:
        previous: dict[str, tuple[datetime, int | None]] = {}
        for base in updated_bases(prepared, published):
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
        # Without retention the entries are read once live: the baseline waits for them.
        candidate = _baseline_run(current, base_types, types) if full else None
        pending.settle = partial(
            _settle, pending, out_dir, types, old_contents, candidate, entries_read=retain
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

    if not published:
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
