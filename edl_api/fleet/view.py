"""The device view: which firewalls hold the latest list, which are stale, which are near
capacity — for a whole page of devices in a constant number of queries.

Inputs: the devices' rows, what each was last served per feed (`DeviceFeedState`, written
by the poll ledger's flush) and the feeds served now (`HostedFeed` of live pipelines).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api.fleet.capacity import (
    FeedKey,
    LiveFeed,
    allowances,
    capacity_warnings,
    kind_uses,
    live_feeds,
    own_counts,
)
from edl_api.fleet.limits import capacity_for, indicator_kind, with_overrides
from edl_api.fleet.schemas import DeviceFeedView, DevicePublic
from edl_api.fleet.spec import DeviceSpec, spec_of
from edl_api.models import Device, DeviceFeedState, utcnow


def feed_url(base_url: str, pipeline_id: int, indicator_type: str, fmt: str = "plain") -> str:
    """The ready-to-paste URL (pipeline_id 0: the global feed `/edl/{type}`)."""
    base = base_url.rstrip("/")
    path = f"/edl/{indicator_type}" if pipeline_id == 0 else (
        f"/pipelines/{pipeline_id}/edl/{indicator_type}"
    )
    return f"{base}{path}" + ("" if fmt == "plain" else f"?format={fmt}")


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def feed_states(
    session: AsyncSession, device_ids: Sequence[int]
) -> dict[int, list[DeviceFeedState]]:
    """Every feed-state row of these devices, per device (one query)."""
    states: dict[int, list[DeviceFeedState]] = defaultdict(list)
    if not device_ids:
        return states
    rows = await session.execute(
        select(DeviceFeedState).where(col(DeviceFeedState.device_id).in_(list(device_ids)))
        .order_by(col(DeviceFeedState.pipeline_id), col(DeviceFeedState.indicator_type))
    )
    for state in rows.scalars():
        states[state.device_id].append(state)
    return states


def _feed_view(
    base_url: str, pipeline_id: int, kind: str, fmt: str, priority: int,
    latest: LiveFeed | None, state: DeviceFeedState | None, allocated: int | None,
) -> DeviceFeedView:
    latest_run = latest.run_id if latest is not None else None
    served = state.served_run_id if state is not None else None
    return DeviceFeedView(
        pipeline_id=pipeline_id, indicator_type=kind, format=fmt, priority=priority,
        url=feed_url(base_url, pipeline_id, kind, fmt), allocated=allocated,
        latest_run_id=latest_run, served_run_id=served,
        up_to_date=served is not None and served == latest_run,
        last_status=state.last_status if state else None,
        last_seen_at=state.last_seen_at if state else None,
        entries_served=state.entries_served if state else None,
        truncated=state.truncated if state else 0,
    )


def _behind_line(view: DeviceFeedView, latest: LiveFeed, since: datetime) -> str:
    served = "nothing yet" if view.served_run_id is None else f"run {view.served_run_id}"
    return (f"behind: pipeline {view.pipeline_id} {view.indicator_type} served {served}; "
            f"the latest is run {latest.run_id}, published {_iso(latest.updated_at)} "
            f"(behind since {_iso(since)})")


def device_view(
    device: Device, spec: DeviceSpec, states: Sequence[DeviceFeedState],
    live: Mapping[FeedKey, LiveFeed], base_url: str, now: datetime,
) -> DevicePublic:
    """One device's view from rows already read (pure)."""
    assert device.id is not None
    table = capacity_for(device.vendor, device.model)
    capacity = with_overrides(table, device.limits or {})
    expected = timedelta(minutes=device.expected_poll_minutes)
    by_feed = {(s.pipeline_id, s.indicator_type): s for s in states}

    def own(key: FeedKey) -> LiveFeed | None:
        hosted = live.get(key)  # a foreign pipeline's feed is not this device's latest
        return hosted if hosted is not None and hosted.profile_id == device.profile_id else None

    uses = []
    feeds: list[DeviceFeedView] = []
    if spec.budgeted:
        counts = own_counts(spec, live)
        uses = kind_uses(spec, counts)
        allowed = allowances(spec, counts)
        for feed in spec.feeds:
            key = (feed.pipeline_id, feed.indicator_type)
            limited = spec.limit(indicator_kind(feed.indicator_type)) is not None
            feeds.append(_feed_view(
                base_url, feed.pipeline_id, feed.indicator_type, feed.fmt, feed.priority,
                own(key), by_feed.get(key), allowed.get(key) if limited else None,
            ))
    else:  # no declared feeds: show what it polled
        for state in states:
            key = (state.pipeline_id, state.indicator_type)
            feeds.append(_feed_view(base_url, state.pipeline_id, state.indicator_type,
                                    state.fmt, 0, own(key), state, None))

    newest = max(states, key=lambda s: s.last_seen_at, default=None)
    last_seen = newest.last_seen_at if newest is not None else None
    live_device = device.revoked_at is None
    warnings = capacity_warnings(spec, uses) if spec.budgeted else []
    if not table.matched and device.vendor != "generic":
        warnings.append(
            f"model {device.model} not in the capacity table; using {table.family} limits"
            if device.model else f"no model given; using {table.family} limits"
        )

    # Stale: no poll within the interval, counted from its creation when it never polled.
    stale = False
    if live_device:
        reference = last_seen or device.created_at
        stale = now - reference > expected
        if stale:
            warnings.append(
                f"stale: no poll since {_iso(last_seen)} (expected every "
                f"{device.expected_poll_minutes} min)" if last_seen else
                f"stale: never polled since it was added {_iso(device.created_at)} "
                f"(expected every {device.expected_poll_minutes} min)"
            )
    # Behind: holds an older version than the latest for longer than the interval; the
    # clock starts when the latest was published or the feed was declared, if later.
    declared_at = max(device.created_at, device.scope_changed_at or device.created_at)
    behind = False
    for view in feeds if live_device else []:
        latest = own((view.pipeline_id, view.indicator_type))
        if latest is None or view.served_run_id == latest.run_id:
            continue
        since = max(latest.updated_at, declared_at)
        if now - since > expected:
            behind = True
            warnings.append(_behind_line(view, latest, since))

    comparable = [view for view in feeds if view.pipeline_id != 0]
    return DevicePublic(
        id=device.id, profile_id=device.profile_id, name=device.name, vendor=device.vendor,
        model=device.model, family=capacity.family,
        limits={"ip": capacity.ip, "fqdn": capacity.fqdn, "url": capacity.url},
        limits_source=capacity.source, lists_limit=capacity.lists,
        expected_poll_minutes=device.expected_poll_minutes,
        pipeline_ids=(
            sorted({f.pipeline_id for f in spec.feeds}) if spec.budgeted
            else device.pipeline_ids
        ),
        feeds=feeds, created_at=device.created_at, updated_at=device.updated_at,
        revoked_at=device.revoked_at, last_seen_at=last_seen,
        last_address=newest.last_address if newest is not None else None,
        stale=stale, behind=behind,
        # The global feed has no single latest run: a device is up to date when every
        # pipeline feed it declares (or, undeclared, has polled) is.
        up_to_date=bool(comparable) and all(view.up_to_date for view in comparable),
        capacity=uses, warnings=warnings,
    )


async def device_views(
    session: AsyncSession, devices: Sequence[Device], base_url: str,
    now: datetime | None = None,
) -> list[DevicePublic]:
    """The views of a page of devices, in their order, in two queries whatever its size."""
    moment = now or utcnow()
    ids = [device.id for device in devices if device.id is not None]
    states = await feed_states(session, ids)
    specs = [spec_of(device) for device in devices]
    pipelines = {f.pipeline_id for spec in specs for f in spec.feeds}
    pipelines |= {s.pipeline_id for rows in states.values() for s in rows}
    live = await live_feeds(session, pipelines)
    return [
        device_view(device, spec, states.get(device.id or 0, []), live, base_url, moment)
        for device, spec in zip(devices, specs, strict=True)
    ]
