"""Periodic checks (every EDL_ALERT_CHECK_SECONDS, by each process's delivery worker), only
for profiles with a webhook that takes the event:

- feed_stale: a scheduled pipeline (active, its config has `refresh_interval_minutes`,
  the scheduler on) published nothing for 3 intervals (counted from its creation when it
  never published);
- device_stale / capacity_warning: the device view (`fleet.view.device_views`) says the
  device is stale / a kind of its capacity is at 80 % or more.

Each fires once per episode: the episode's row (`AlertEpisode`, unique per profile and
key) is inserted in the transaction that queues the deliveries, so of several processes
only one fires it; the row is deleted when the condition ends, so the next one alerts.
Also here: finished deliveries past EDL_WEBHOOK_RETENTION_DAYS are deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from edl_api.alerts.events import Alert, enqueue
from edl_api.fleet.view import device_views
from edl_api.models import (
    AlertEpisode,
    Device,
    HostedFeed,
    Pipeline,
    ProfileConfig,
    Webhook,
    WebhookDelivery,
    utcnow,
)
from edl_api.settings import Settings

logger = logging.getLogger("edl_api.alerts")

STALE_INTERVALS = 3
DEVICE_PAGE = 500
Episodes = dict[tuple[int, str], Alert]  # (profile_id, key) → what to say when it opens


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def sync_episodes(
    session: AsyncSession, profile_ids: list[int], prefix: str, open_now: Episodes
) -> int:
    """Close the episodes of `prefix` that ended, open (and alert) the new ones."""
    rows = (await session.execute(
            select(col(AlertEpisode.profile_id), col(AlertEpisode.key)).where(
                col(AlertEpisode.profile_id).in_(profile_ids),
                col(AlertEpisode.key).startswith(prefix, autoescape=True),
            )
        )).all()
    existing = {(int(pid), str(key)) for pid, key in rows}
    ended = existing - open_now.keys()
    for profile_id, key in ended:
        await session.execute(delete(AlertEpisode).where(
            col(AlertEpisode.profile_id) == profile_id, col(AlertEpisode.key) == key
        ))
    fired = 0
    now = utcnow()
    for (profile_id, key), alert in open_now.items():
        if (profile_id, key) in existing:
            continue
        try:
            async with session.begin_nested():  # another process may open it first
                session.add(AlertEpisode(profile_id=profile_id, key=key, fired_at=now,
                                         updated_at=now))
        except IntegrityError:
            continue
        fired += await enqueue(session, alert)
    return fired


async def feed_stale(session: AsyncSession, profile_ids: list[int], now: datetime) -> Episodes:
    rows = (await session.execute(
        select(Pipeline, col(ProfileConfig.refresh_interval_minutes))
        .join(ProfileConfig, col(ProfileConfig.id) == col(Pipeline.profile_config_id))
        .where(
            col(Pipeline.profile_id).in_(profile_ids), col(Pipeline.is_active).is_(True),
            col(Pipeline.deleted_at).is_(None),
            col(ProfileConfig.refresh_interval_minutes) > 0,
        )
    )).all()
    if not rows:
        return {}
    published: Mapping[int, datetime] = dict((await session.execute(
        select(col(HostedFeed.pipeline_id), func.max(col(HostedFeed.updated_at)))
        .where(col(HostedFeed.pipeline_id).in_([p.id for p, _ in rows]))
        .group_by(col(HostedFeed.pipeline_id))
    )).all())
    out: Episodes = {}
    for pipeline, interval in rows:
        assert pipeline.id is not None
        last = published.get(pipeline.id)
        since = last if last is not None else pipeline.created_at
        if since.tzinfo is None:  # func.max over the column bypasses UTCDateTime
            since = since.replace(tzinfo=now.tzinfo)
        limit = timedelta(minutes=float(interval or 0) * STALE_INTERVALS)
        if now - since <= limit:
            continue
        what = f"last published {_iso(since)}" if last is not None else (
            f"never published since it was made {_iso(since)}"
        )
        out[(pipeline.profile_id, f"feed_stale:{pipeline.id}")] = Alert(
            "feed_stale", pipeline.profile_id,
            f"pipeline {pipeline.name} (#{pipeline.id}) has not published for "
            f"{STALE_INTERVALS} refresh intervals ({float(interval or 0):g} min each)",
            f"{what}; check its latest runs (GET /runs?pipeline_id={pipeline.id})",
            pipeline_id=pipeline.id,
        )
    return out


async def devices(
    session: AsyncSession, profile_ids: list[int], now: datetime, base_url: str
) -> tuple[Episodes, Episodes]:
    """(stale devices, devices near capacity per kind) of these profiles."""
    stale: Episodes = {}
    capacity: Episodes = {}
    after = 0
    while True:
        page = (await session.execute(
            select(Device).where(
                col(Device.profile_id).in_(profile_ids), col(Device.revoked_at).is_(None),
                col(Device.id) > after,
            ).order_by(col(Device.id)).limit(DEVICE_PAGE)
        )).scalars().all()
        if not page:
            return stale, capacity
        after = page[-1].id or after
        for view in await device_views(session, page, base_url, now):
            if view.stale:
                detail = next((w for w in view.warnings if w.startswith("stale:")), "stale")
                stale[(view.profile_id, f"device_stale:{view.id}")] = Alert(
                    "device_stale", view.profile_id,
                    f"device {view.name} (#{view.id}) has not polled for over "
                    f"{view.expected_poll_minutes} min", detail, device_id=view.id,
                )
            for use in view.capacity:
                if use.warning:
                    capacity[(view.profile_id, f"capacity_warning:{view.id}:{use.kind}")] = Alert(
                        "capacity_warning", view.profile_id,
                        f"device {view.name} (#{view.id}) is at "
                        f"{round((use.ratio or 0) * 100)} % of its {use.kind} capacity",
                        use.warning, device_id=view.id,
                    )


async def run_checks(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession],
    now: datetime | None = None,
) -> int:
    """One pass of every periodic check; the number of deliveries queued."""
    moment = now or utcnow()
    fired = 0
    async with sessionmaker() as session, session.begin():
        by_event = await _subscribers(session)
        stale_feeds = by_event.get("feed_stale", [])
        if stale_feeds and settings.auto_refresh_minutes > 0:
            fired += await sync_episodes(session, stale_feeds, "feed_stale:",
                                         await feed_stale(session, stale_feeds, moment))
        fleet = sorted(set(by_event.get("device_stale", []))
                       | set(by_event.get("capacity_warning", [])))
        if fleet:
            stale, capacity = await devices(session, fleet, moment, settings.public_url or "")
            if by_event.get("device_stale"):
                fired += await sync_episodes(session, by_event["device_stale"],
                                             "device_stale:", stale)
            if by_event.get("capacity_warning"):
                fired += await sync_episodes(session, by_event["capacity_warning"],
                                             "capacity_warning:", capacity)
        await session.execute(delete(WebhookDelivery).where(
            col(WebhookDelivery.state).in_(["delivered", "failed"]),
            col(WebhookDelivery.finished_at)
            < moment - timedelta(days=settings.webhook_retention_days),
        ))
    return fired


async def _subscribers(session: AsyncSession) -> dict[str, list[int]]:
    """Per periodic event, the profiles with a webhook that takes it."""
    rows = await session.execute(select(col(Webhook.profile_id), col(Webhook.events)))
    out: dict[str, set[int]] = {}
    for profile_id, events in rows.all():
        for event in events or []:
            if event in ("feed_stale", "device_stale", "capacity_warning"):
                out.setdefault(event, set()).add(int(profile_id))
    return {event: sorted(ids) for event, ids in out.items()}
