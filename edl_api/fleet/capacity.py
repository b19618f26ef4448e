"""How full each firewall is: per capacity kind, what its declared feeds publish against
the model's limit, what the budget cuts, and the warnings an operator sees before the cap.

The allocation is `budget.allocate` over the feeds' published counts (`HostedFeed.count`),
the same figures the serving side budgets with, so a view never promises what a poll does
not serve. Warnings start at 80 % of a limit (our threshold: early enough to split lists
before a firewall silently ignores entries over its cap).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api.fleet.budget import allocate
from edl_api.fleet.limits import KINDS, capacity_for, indicator_kind
from edl_api.fleet.schemas import KindUse
from edl_api.fleet.spec import DeviceFeed, DeviceSpec, spec_of
from edl_api.models import Device, HostedFeed, Pipeline, PipelineRun

logger = logging.getLogger("edl_api.fleet")

FeedKey = tuple[int, str]  # (pipeline_id, indicator_type)

WARN_RATIO = 0.8
KIND_NAMES = {"ip": "IP", "fqdn": "domain", "url": "URL"}


@dataclass(frozen=True, slots=True)
class LiveFeed:
    """A hosted feed of a live (active, not deleted) pipeline: what is served now."""

    profile_id: int
    run_id: int
    count: int
    updated_at: datetime


async def live_feeds(session: AsyncSession, pipeline_ids: Iterable[int]) -> dict[FeedKey, LiveFeed]:
    """The hosted feeds of these pipelines that are served now (one query)."""
    ids = sorted({pid for pid in pipeline_ids if pid > 0})
    if not ids:
        return {}
    rows = await session.execute(
        select(
            col(HostedFeed.pipeline_id), col(HostedFeed.indicator_type), col(Pipeline.profile_id),
            col(HostedFeed.run_id), col(HostedFeed.count), col(HostedFeed.updated_at),
        )
        .join(Pipeline, col(Pipeline.id) == col(HostedFeed.pipeline_id))
        .where(
            col(HostedFeed.pipeline_id).in_(ids),
            col(Pipeline.deleted_at).is_(None), col(Pipeline.is_active).is_(True),
        )
    )
    return {
        (int(pid), str(kind)): LiveFeed(int(profile_id), int(run_id), int(count or 0), updated)
        for pid, kind, profile_id, run_id, count, updated in rows.all()
    }


def own_counts(spec: DeviceSpec, live: Mapping[FeedKey, LiveFeed]) -> dict[FeedKey, int]:
    """Published count of each declared feed; 0 when not served now or not the device's
    profile's (a foreign pipeline's size is none of this tenant's business)."""
    counts: dict[FeedKey, int] = {}
    for feed in spec.feeds:
        hosted = live.get((feed.pipeline_id, feed.indicator_type))
        own = hosted is not None and hosted.profile_id == spec.profile_id
        counts[(feed.pipeline_id, feed.indicator_type)] = hosted.count if own and hosted else 0
    return counts


def _declared(spec: DeviceSpec) -> list[DeviceFeed]:
    # One budget slot per (pipeline, type), the first declaration winning as in `spec.feed`.
    seen: set[FeedKey] = set()
    feeds = []
    for feed in spec.feeds:
        key = (feed.pipeline_id, feed.indicator_type)
        if key not in seen:
            seen.add(key)
            feeds.append(feed)
    return feeds


def allowances(spec: DeviceSpec, counts: Mapping[FeedKey, int]) -> dict[FeedKey, int]:
    """Entries each declared feed is served: its kind's limit shared by `budget.allocate`."""
    allowed: dict[FeedKey, int] = {}
    feeds = _declared(spec)
    for kind in KINDS:
        members = [
            ((f.pipeline_id, f.indicator_type), f.priority,
             counts.get((f.pipeline_id, f.indicator_type), 0))
            for f in feeds if indicator_kind(f.indicator_type) == kind
        ]
        if members:
            allowed.update(allocate(spec.limit(kind), members))
    return allowed


def _n(value: int) -> str:
    return f"{value:,}"


def _percent(ratio: float) -> str:
    return f"{round(ratio * 100)} %"


def _kind_warning(spec: DeviceSpec, use: KindUse) -> str | None:
    if use.limit is None or use.ratio is None or use.ratio < WARN_RATIO:
        return None
    name = KIND_NAMES[use.kind]
    head = f"firewall {spec.name}: "
    if use.published <= use.limit:
        lists = f"{use.lists} list" + ("" if use.lists == 1 else "s")
        return (f"{head}{_n(use.published)} of {_n(use.limit)} {name} entries "
                f"({_percent(use.ratio)}) across {lists}")
    cuts = ", ".join(
        f"pipeline {key.split('/', 1)[0]} {key.split('/', 1)[1]} by {_n(cut)}"
        for key, cut in use.cut.items()
    )
    return (f"{head}{_n(use.published)} {name} entries published for a limit of "
            f"{_n(use.limit)} ({_percent(use.ratio)}): cut {cuts}")


def kind_uses(spec: DeviceSpec, counts: Mapping[FeedKey, int]) -> list[KindUse]:
    """Per kind the device's declared feeds have, in KINDS order (pure)."""
    allowed = allowances(spec, counts)
    uses = []
    feeds = _declared(spec)
    for kind in KINDS:
        of_kind = [f for f in feeds if indicator_kind(f.indicator_type) == kind]
        if not of_kind:
            continue
        limit = spec.limit(kind)
        published = used = 0
        cut: dict[str, int] = {}
        for feed in of_kind:
            key = (feed.pipeline_id, feed.indicator_type)
            count = counts.get(key, 0)
            published += count
            used += allowed.get(key, count)
            if allowed.get(key, count) < count:
                cut[f"{feed.pipeline_id}/{feed.indicator_type}"] = count - allowed[key]
        use = KindUse(
            kind=kind, used=used, published=published, limit=limit, lists=len(of_kind),
            ratio=None if limit is None else published / limit, cut=cut,
        )
        use.warning = _kind_warning(spec, use)
        uses.append(use)
    return uses


def lists_warning(spec: DeviceSpec) -> str | None:
    """The vendor's limit on the number of lists a device takes (Capacity.lists)."""
    lists = capacity_for(spec.vendor, spec.model).lists
    declared = len(_declared(spec))
    if lists is None or declared <= lists:
        return None
    return f"firewall {spec.name}: {declared} lists declared for a limit of {lists} lists"


def capacity_warnings(spec: DeviceSpec, uses: Sequence[KindUse]) -> list[str]:
    warnings = [use.warning for use in uses if use.warning]
    too_many = lists_warning(spec)
    return [*warnings, too_many] if too_many else warnings


async def device_capacity(
    session: AsyncSession, spec: DeviceSpec, counts: Mapping[FeedKey, int] | None = None
) -> list[KindUse]:
    """The device's use of each capacity kind (reads the published counts unless given)."""
    if counts is None:
        live = await live_feeds(session, (f.pipeline_id for f in spec.feeds))
        counts = own_counts(spec, live)
    return kind_uses(spec, counts)


async def pipeline_capacity(session: AsyncSession, pipeline_id: int) -> dict[str, Any]:
    """For a run report: every live device whose declared feeds include this pipeline, per
    kind it takes from the pipeline, with the device-wide use of that kind. Three queries;
    the profile's devices are filtered here (their feeds list is JSON)."""
    pipeline = await session.get(Pipeline, pipeline_id)
    if pipeline is None:
        return {"devices": [], "warnings": []}
    devices = (await session.execute(
        select(Device).where(
            col(Device.profile_id) == pipeline.profile_id, col(Device.revoked_at).is_(None)
        ).order_by(col(Device.id))
    )).scalars().all()
    specs = [
        spec for spec in map(spec_of, devices)
        if any(f.pipeline_id == pipeline_id for f in spec.feeds)
    ]
    live = await live_feeds(session, (f.pipeline_id for s in specs for f in s.feeds))
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    for spec in specs:
        uses = kind_uses(spec, own_counts(spec, live))
        kinds = {indicator_kind(f.indicator_type) for f in spec.feeds
                 if f.pipeline_id == pipeline_id}
        for use in uses:
            if use.kind in kinds:
                rows.append({
                    "device_id": spec.id, "device": spec.name, "kind": use.kind,
                    "used": use.used, "published": use.published, "limit": use.limit,
                    "ratio": use.ratio, "cut": use.cut, "warning": use.warning,
                })
        warnings.extend(capacity_warnings(spec, [u for u in uses if u.kind in kinds]))
    return {"devices": rows, "warnings": warnings}


async def add_capacity_report(session: AsyncSession, run: PipelineRun) -> None:
    """How full the pipeline's devices are with the feeds just repointed, into the run's
    report (`counts.capacity`). Never fails the publish: on any error it is left out; the
    savepoint keeps the transaction usable after a failed statement on PostgreSQL."""
    try:
        async with session.begin_nested():
            report = await pipeline_capacity(session, run.pipeline_id)
    except Exception as exc:
        logger.warning("run %s: capacity report left out: %s", run.id, type(exc).__name__)
        return
    run.counts = {**(run.counts or {}), "capacity": report}
