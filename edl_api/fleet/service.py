"""Devices: a firewall (or any consumer) with its own read-only feed credential.

Writers of a profile manage its devices; readers read them. A device's credential is
`edlf_…` (shown once, bcrypt-hashed at rest). Changing a device's feeds or limits, rotating
its credential or deleting it drops its cached principal here at commit and in every other
process on the next revocation poll (`auth.revocation`, by `scope_changed_at`).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api import idempotency
from edl_api.auth import keys
from edl_api.auth.principal import Principal
from edl_api.auth.verifier import KeyVerifier
from edl_api.errors import Conflict, NotFound, Unprocessable
from edl_api.feeds.hooks import drop_key_after_commit
from edl_api.fleet import view
from edl_api.fleet.schemas import (
    DeviceCreate,
    DeviceCreated,
    DeviceFeedIn,
    DeviceLimits,
    DevicePublic,
    DeviceUpdate,
)
from edl_api.models import Device, Pipeline, utcnow
from edl_api.pagination import Page, PageParams
from edl_api.profiles.service import get_profile


async def profile_in_scope(session: AsyncSession, principal: Principal, profile_id: int,
                           *, write: bool = False) -> None:
    """404 for a profile outside the caller's scope, missing or deleted (a super-admin
    reaches every id: never a foreign-key failure), then 403 for a read-only caller."""
    await get_profile(session, principal, profile_id)
    principal.require_profile(profile_id, write=write)


async def device_in_scope(
    session: AsyncSession, principal: Principal, profile_id: int, device_id: int,
    *, write: bool = False,
) -> Device:
    """The profile's device, or the same 404 for a missing one and another profile's."""
    await profile_in_scope(session, principal, profile_id, write=write)
    device = await session.get(Device, device_id)
    if device is None or device.profile_id != profile_id:
        raise NotFound("not found")
    return device


async def _check_feeds(
    session: AsyncSession, profile_id: int, vendor: str, feeds: Sequence[DeviceFeedIn],
    limits: DeviceLimits | None,
) -> list[dict[str, object]]:
    """The feeds as stored, after the rules a careful operator would expect: each names a
    live pipeline of this profile once, and a firewall lists what it reads (its limits are
    shared by those lists; without them there is nothing to budget)."""
    if not feeds and vendor != "generic":
        raise Unprocessable(
            f"a {vendor} device lists the feeds it reads (`feeds`), so their entries can be "
            "budgeted to its capacity", code="device_feeds_required",
        )
    if not feeds and limits is not None and limits.model_dump(exclude_none=True):
        raise Unprocessable(
            "`limits` are shared by a device's declared feeds; add `feeds`",
            code="device_feeds_required",
        )
    seen: set[tuple[int, str]] = set()
    for feed in feeds:
        key = (feed.pipeline_id, feed.indicator_type)
        if key in seen:
            raise Unprocessable(
                f"pipeline {feed.pipeline_id}'s {feed.indicator_type} feed is listed twice",
                code="duplicate_feed",
            )
        seen.add(key)
    await require_pipelines(session, profile_id, [feed.pipeline_id for feed in feeds])
    return [
        {"pipeline_id": f.pipeline_id, "indicator_type": f.indicator_type, "format": f.format,
         "priority": f.priority}
        for f in feeds
    ]


def _require_live(device: Device) -> None:
    if device.revoked_at is not None:
        raise Conflict(
            f"device {device.id} was deleted (its credential revoked); create a new device",
            code="device_revoked",
        )


async def require_pipelines(
    session: AsyncSession, profile_id: int, pipeline_ids: Sequence[int]
) -> list[int]:
    """The ids, sorted and distinct, when each names a live pipeline of the profile; else
    422 `unknown_pipeline` naming the others (a foreign one reads as missing)."""
    wanted = sorted(set(pipeline_ids))
    found = set((await session.execute(
        select(col(Pipeline.id)).where(
            col(Pipeline.id).in_(wanted), col(Pipeline.profile_id) == profile_id,
            col(Pipeline.deleted_at).is_(None),
        )
    )).scalars()) if wanted else set()
    missing = [pid for pid in wanted if pid not in found]
    if missing:
        raise Unprocessable(f"pipelines not in this profile: {missing}", code="unknown_pipeline")
    return wanted


def _limits(limits: DeviceLimits | None) -> dict[str, int] | None:
    values = {} if limits is None else limits.model_dump(exclude_none=True)
    return values or None


def _changed(session: AsyncSession, device: Device) -> None:
    """Every process forgets the device's cached principal (feeds, limits, credential)."""
    device.updated_at = device.scope_changed_at = utcnow()
    drop_key_after_commit(session, device.key_id)


async def _views(
    session: AsyncSession, devices: Sequence[Device], base_url: str
) -> list[DevicePublic]:
    return await view.device_views(session, devices, base_url)


async def _one_view(session: AsyncSession, device: Device, base_url: str) -> DevicePublic:
    return (await _views(session, [device], base_url))[0]


async def create_device(
    session: AsyncSession, principal: Principal, profile_id: int, body: DeviceCreate,
    idem: idempotency.IdempotencyRequest | None, verifier: KeyVerifier, rounds: int,
    base_url: str,
) -> DeviceCreated:
    await profile_in_scope(session, principal, profile_id, write=True)

    async def create() -> DeviceCreated:
        feeds = await _check_feeds(session, profile_id, body.vendor, body.feeds, body.limits)
        new_key = await verifier.hash_new(keys.FEED_PREFIX, rounds)
        device = Device(
            profile_id=profile_id, name=body.name, vendor=body.vendor, model=body.model,
            limits=_limits(body.limits), feeds=feeds,
            expected_poll_minutes=body.expected_poll_minutes,
            key_id=new_key.key_id, key_hash=new_key.key_hash,
        )
        session.add(device)
        await session.flush()
        shown = await _one_view(session, device, base_url)
        return DeviceCreated(**shown.model_dump(), token=new_key.plaintext)

    # The secret is never stored: a replay returns the same device without it.
    return await idempotency.replay_or_create(
        session, idem, DeviceCreated, create, secret="token"
    )


async def device_page(
    session: AsyncSession, profile_id: int, page: PageParams, *, include_revoked: bool,
    newest_first: bool = False,
) -> tuple[list[Device], int]:
    """One page of the profile's devices and their total (here and the feed-token alias)."""
    query = select(Device).where(col(Device.profile_id) == profile_id)
    if not include_revoked:
        query = query.where(col(Device.revoked_at).is_(None))
    total = (await session.execute(
        select(func.count()).select_from(query.subquery())
    )).scalar_one()
    order = col(Device.id).desc() if newest_first else col(Device.id)
    rows = (await session.execute(
        query.order_by(order).limit(page.limit).offset(page.offset)
    )).scalars()
    return list(rows), int(total)


async def list_devices(
    session: AsyncSession, principal: Principal, profile_id: int, page: PageParams,
    base_url: str, include_revoked: bool = False,
) -> Page[DevicePublic]:
    """Every device's state in one call: which are on the latest lists, stale, near capacity."""
    await profile_in_scope(session, principal, profile_id)
    rows, total = await device_page(
        session, profile_id, page, include_revoked=include_revoked
    )
    items = await view.device_views(session, rows, base_url)
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


async def get_device(
    session: AsyncSession, principal: Principal, profile_id: int, device_id: int,
    base_url: str,
) -> DevicePublic:
    device = await device_in_scope(session, principal, profile_id, device_id)
    return await _one_view(session, device, base_url)


async def update_device(
    session: AsyncSession, principal: Principal, profile_id: int, device_id: int,
    body: DeviceUpdate, base_url: str,
) -> DevicePublic:
    device = await device_in_scope(session, principal, profile_id, device_id, write=True)
    _require_live(device)
    given = body.model_fields_set
    vendor = body.vendor if "vendor" in given and body.vendor is not None else device.vendor
    if "feeds" in given or "vendor" in given or "limits" in given:
        feeds_in = body.feeds if "feeds" in given and body.feeds is not None else [
            DeviceFeedIn.model_validate(feed) for feed in device.feeds
        ]
        limits_in = body.limits if "limits" in given else (
            None if device.limits is None else DeviceLimits.model_validate(device.limits)
        )
        device.feeds = await _check_feeds(session, profile_id, vendor, feeds_in, limits_in)
        device.limits = _limits(limits_in)
        if device.feeds:
            device.pipeline_ids = None  # the declared feeds are the scope now
    if "name" in given and body.name is not None:
        device.name = body.name
    device.vendor = vendor
    if "model" in given:
        device.model = body.model
    if "expected_poll_minutes" in given and body.expected_poll_minutes is not None:
        device.expected_poll_minutes = body.expected_poll_minutes
    _changed(session, device)
    await session.flush()
    return await _one_view(session, device, base_url)


async def revoke(
    session: AsyncSession, principal: Principal, profile_id: int, device_id: int
) -> Device:
    """Revoke the device's credential (again: no change). Here and the feed-token alias."""
    device = await device_in_scope(session, principal, profile_id, device_id, write=True)
    if device.revoked_at is None:
        device.revoked_at = utcnow()
        _changed(session, device)
        await session.flush()
    return device


async def revoke_device(
    session: AsyncSession, principal: Principal, profile_id: int, device_id: int,
    base_url: str,
) -> DevicePublic:
    """The credential stops working at once here, within the revocation poll elsewhere; the
    device and its polls stay readable (`?include_revoked=true`)."""
    device = await revoke(session, principal, profile_id, device_id)
    return await _one_view(session, device, base_url)


async def rotate_token(
    session: AsyncSession, principal: Principal, profile_id: int, device_id: int,
    verifier: KeyVerifier, rounds: int, base_url: str,
) -> DeviceCreated:
    """A new credential, shown once; the old one answers 401 at once. No Idempotency-Key:
    a replay could not show the token again."""
    device = await device_in_scope(session, principal, profile_id, device_id, write=True)
    _require_live(device)
    new_key = await verifier.hash_new(keys.FEED_PREFIX, rounds)
    _changed(session, device)  # drops the old key id
    device.key_id, device.key_hash = new_key.key_id, new_key.key_hash
    await session.flush()
    shown = await _one_view(session, device, base_url)
    return DeviceCreated(**shown.model_dump(), token=new_key.plaintext)
