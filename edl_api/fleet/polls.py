"""The polls page of one device: what the ledger wrote, newest first."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api.auth.principal import Principal
from edl_api.fleet.schemas import PollPublic
from edl_api.fleet.service import device_in_scope
from edl_api.models import DevicePoll
from edl_api.pagination import Page, PageParams


def poll_view(row: DevicePoll) -> PollPublic:
    return PollPublic(
        first_at=row.first_at, last_at=row.last_at,
        pipeline_id=row.pipeline_id or None, indicator_type=row.indicator_type,
        format=row.fmt, status=row.status, etag=row.etag, run_ids=row.run_ids,
        address=row.address, polls=row.polls, bytes=row.bytes, entries=row.entries,
        truncated=row.truncated,
    )


async def list_polls(
    session: AsyncSession, principal: Principal, profile_id: int, device_id: int,
    page: PageParams,
) -> Page[PollPublic]:
    """Polls of the device aggregated per flush window (one row per feed, format, answer,
    version and address), newest first. Another profile's device is the same 404 as a
    missing one; a deleted (revoked) device's polls stay readable."""
    await device_in_scope(session, principal, profile_id, device_id)
    where = col(DevicePoll.device_id) == device_id
    total = (
        await session.execute(select(func.count()).select_from(DevicePoll).where(where))
    ).scalar_one()
    rows = (
        await session.execute(
            select(DevicePoll).where(where)
            .order_by(col(DevicePoll.last_at).desc(), col(DevicePoll.id).desc())
            .limit(page.limit).offset(page.offset)
        )
    ).scalars().all()
    return Page(items=[poll_view(row) for row in rows], total=int(total),
                limit=page.limit, offset=page.offset)
