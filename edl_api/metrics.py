"""Prometheus metrics.

Counters and histograms that only this process sees (feed requests, run durations, source
failures) live in one registry; figures that belong to the whole deployment (runs by
state, queue depth, published entries) are read from the database at scrape time, so every
process reports the same truth however many share the database.

Who sees what: the database figures are filtered by the caller's scope; the process-wide
counters count every tenant's feed polls, runs and sources, so only a caller that may read
every profile (a super-admin, a legacy global key) gets them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api.auth.principal import Principal
from edl_api.fleet.view import device_views
from edl_api.models import Device, DevicePollCount, HostedFeed, Pipeline, PipelineRun, utcnow
from edl_api.runs.state import RunState

PROCESS_REGISTRY = CollectorRegistry()

class _FeedRequests(Collector):
    """Feed requests by status and format, counted in a plain dict.

    A firewall fleet polls all day and the fast path answers a 304 in a few microseconds;
    a prometheus `Counter` child (label lookup, lock) would be a large share of that. Every
    increment happens on the event loop's thread, so the dict needs no lock."""

    def __init__(self) -> None:
        self.counts: dict[tuple[int, str], int] = {}

    def inc(self, status: int, fmt: str) -> None:
        key = (status, fmt)
        self.counts[key] = self.counts.get(key, 0) + 1

    def collect(self) -> Any:
        family = CounterMetricFamily(
            "edl_feed_requests", "Feed requests served by this process",
            labels=["status", "format"],
        )
        for (status, fmt), value in sorted(self.counts.items()):
            family.add_metric([str(status), fmt], value)
        yield family


FEED_REQUESTS = _FeedRequests()
PROCESS_REGISTRY.register(FEED_REQUESTS)
count_feed_request = FEED_REQUESTS.inc

FEED_STALE_SERVES = Counter(
    "edl_feed_stale_serves",
    "Feed answers served from the last known pointer because the database could not be "
    "read (X-EDL-Stale: db-unavailable)",
    registry=PROCESS_REGISTRY,
)

RUNS_FINISHED = Counter(
    "edl_runs_finished",
    "Runs this process finished, by final state and trigger",
    ["state", "trigger"],
    registry=PROCESS_REGISTRY,
)
RUN_DURATION = Histogram(
    "edl_run_duration_seconds",
    "Wall time of runs this process executed",
    ["state"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
    registry=PROCESS_REGISTRY,
)
SOURCE_FETCH_FAILURES = Counter(
    "edl_source_fetch_failures",
    "Sources that failed to fetch or parse in runs of this process",
    registry=PROCESS_REGISTRY,
)
RUN_LOG_WRITE_FAILURES = Counter(
    "edl_run_log_write_failures",
    "Run log writes this process skipped because they failed, by target (file, db)",
    ["target"],
    registry=PROCESS_REGISTRY,
)
SCHEDULED_RUNS_SKIPPED = Counter(
    "edl_scheduled_runs_skipped",
    "Due scheduled runs this process did not queue: the profile's queue was full",
    registry=PROCESS_REGISTRY,
)


class _Snapshot(Collector):
    """Gauges read from the database for one scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Any:
        yield from self._families


async def _database_families(
    session: AsyncSession, principal: Principal
) -> list[Metric]:
    scoped_runs = principal.scope_filter(col(PipelineRun.profile_id), col(PipelineRun.pipeline_id))
    scoped_pipelines = principal.scope_filter(col(Pipeline.profile_id), col(Pipeline.id))
    runs = GaugeMetricFamily("edl_runs", "Runs by state and trigger", labels=["state", "trigger"])
    for state, trigger, count in (
        await session.execute(
            select(col(PipelineRun.state), col(PipelineRun.trigger), func.count())
            .where(scoped_runs)
            .group_by(col(PipelineRun.state), col(PipelineRun.trigger))
        )
    ).all():
        runs.add_metric([state, trigger], count)
    queue = GaugeMetricFamily("edl_queue_depth", "Runs waiting for a slot")
    queued = await session.execute(
        select(func.count())
        .select_from(PipelineRun)
        .where(col(PipelineRun.state) == RunState.QUEUED, scoped_runs)
    )
    queue.add_metric([], queued.scalar_one())
    entries = GaugeMetricFamily(
        "edl_published_entries",
        "Entries each hosted feed serves now",
        labels=["pipeline_id", "indicator_type"],
    )
    for pipeline_id, indicator_type, count in (
        await session.execute(
            select(
                col(HostedFeed.pipeline_id), col(HostedFeed.indicator_type), col(HostedFeed.count)
            )
            .join(Pipeline, col(Pipeline.id) == col(HostedFeed.pipeline_id))
            .where(col(Pipeline.deleted_at).is_(None), scoped_pipelines)
        )
    ).all():
        entries.add_metric([str(pipeline_id), indicator_type], count)
    return [runs, queue, entries, *await _fleet_families(session, principal, utcnow())]


async def _fleet_families(
    session: AsyncSession, principal: Principal, now: datetime
) -> list[Metric]:
    """Feed ages and the device view's figures (`fleet.view`, one pass over the caller's
    live devices: a constant number of queries however many there are)."""
    feed_age = GaugeMetricFamily(
        "edl_feed_age_seconds", "Seconds since the served version of each feed was published",
        labels=["profile", "pipeline", "type"],
    )
    for profile_id, pipeline_id, kind, updated_at in (await session.execute(
        select(col(Pipeline.profile_id), col(HostedFeed.pipeline_id),
               col(HostedFeed.indicator_type), col(HostedFeed.updated_at))
        .join(Pipeline, col(Pipeline.id) == col(HostedFeed.pipeline_id))
        .where(col(Pipeline.deleted_at).is_(None), col(Pipeline.is_active).is_(True),
               principal.scope_filter(col(Pipeline.profile_id), col(Pipeline.id)))
        .order_by(col(HostedFeed.pipeline_id), col(HostedFeed.indicator_type))
    )).all():
        feed_age.add_metric([str(profile_id), str(pipeline_id), kind],
                            (now - updated_at).total_seconds())
    scoped_devices = principal.scope_filter(col(Device.profile_id))
    devices = (await session.execute(
        select(Device).where(scoped_devices, col(Device.revoked_at).is_(None))
        .order_by(col(Device.id))
    )).scalars().all()
    views = await device_views(session, devices, "", now)
    poll_age = GaugeMetricFamily(
        "edl_device_last_poll_age_seconds", "Seconds since each device last polled a feed",
        labels=["profile", "device", "device_id"],
    )
    stale = GaugeMetricFamily("edl_devices_stale", "Devices that have not polled within "
                              "their expected_poll_minutes", labels=["profile"])
    behind = GaugeMetricFamily("edl_devices_behind", "Devices served an older version than "
                               "the latest for longer than expected_poll_minutes",
                               labels=["profile"])
    ratio = GaugeMetricFamily(
        "edl_device_capacity_ratio",
        "Entries a device's feeds of a kind publish / the device's limit (over 1: cut)",
        labels=["profile", "device", "device_id", "kind"],
    )
    per_profile: dict[int, list[int]] = {}
    for view in views:
        labels = [str(view.profile_id), view.name, str(view.id)]
        if view.last_seen_at is not None:
            poll_age.add_metric(labels, (now - view.last_seen_at).total_seconds())
        counts = per_profile.setdefault(view.profile_id, [0, 0])
        counts[0] += view.stale
        counts[1] += view.behind
        for use in view.capacity:
            if use.ratio is not None:
                ratio.add_metric([*labels, use.kind], use.ratio)
    for profile_id, (stale_count, behind_count) in sorted(per_profile.items()):
        stale.add_metric([str(profile_id)], stale_count)
        behind.add_metric([str(profile_id)], behind_count)
    polls = CounterMetricFamily(
        "edl_device_polls", "Polls by device and answer status (every process's, flushed)",
        labels=["profile", "device", "device_id", "status"],
    )
    for profile_id, name, device_id, status, count in (await session.execute(
        select(col(Device.profile_id), col(Device.name), col(Device.id),
               col(DevicePollCount.status), col(DevicePollCount.polls))
        .join(Device, col(Device.id) == col(DevicePollCount.device_id))
        .where(scoped_devices, col(Device.revoked_at).is_(None))
        .order_by(col(Device.id), col(DevicePollCount.status))
    )).all():
        polls.add_metric([str(profile_id), name, str(device_id), str(status)], count)
    return [feed_age, poll_age, stale, behind, ratio, polls]


def sees_process_counters(principal: Principal) -> bool:
    return principal.profile_ids is None


async def render(session: AsyncSession, principal: Principal) -> bytes:
    registry = CollectorRegistry()
    registry.register(_Snapshot(await _database_families(session, principal)))
    scoped = generate_latest(registry)
    if not sees_process_counters(principal):
        return scoped
    return scoped + generate_latest(PROCESS_REGISTRY)
