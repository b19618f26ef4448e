"""Cross-process key revocation: each process polls for keys revoked or re-scoped elsewhere
and drops them from its verified-key cache, so a revocation holds everywhere within a few
seconds (at once in the process that served it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from edl_api.auth.keys import VerifiedKeyCache
from edl_api.auth.principal import Principal
from edl_api.models import AdminAccount, Device, Profile, utcnow

logger = logging.getLogger("edl_api.auth")

# Hosts' clocks differ a little; re-dropping a key id is harmless, missing one is not.
CLOCK_MARGIN = timedelta(seconds=5)


async def changed_key_ids(session: AsyncSession, since: datetime) -> set[str]:
    admins = await session.execute(
        select(col(AdminAccount.key_id)).where(
            or_(col(AdminAccount.revoked_at) >= since, col(AdminAccount.scope_changed_at) >= since)
        )
    )
    return set(admins.scalars())


async def changed_device_ids(session: AsyncSession, since: datetime) -> set[int]:
    """Devices revoked, rotated or re-scoped since then; dropped by device id, as a rotation
    leaves no trace of the old key id."""
    rows = await session.execute(
        select(col(Device.id)).where(
            or_(col(Device.revoked_at) >= since, col(Device.scope_changed_at) >= since)
        )
    )
    return {device_id for device_id in rows.scalars() if device_id is not None}


async def rotated_profile_ids(session: AsyncSession, since: datetime) -> set[int]:
    """Profiles whose key was rotated or revoked since then. Their cached principals are
    dropped by profile, not by `previous_key_id`: two rotations within one poll leave only
    the last old key id in the row, and the first old key must stop working too."""
    rows = await session.execute(
        select(col(Profile.id)).where(col(Profile.key_rotated_at) >= since)
    )
    return {profile_id for profile_id in rows.scalars() if profile_id is not None}


def _drop_profiles(cache: VerifiedKeyCache[Principal], profile_ids: set[int]) -> None:
    if profile_ids:
        cache.drop_matching(lambda p: p.kind == "profile" and p.id in profile_ids)


def drop_devices(cache: VerifiedKeyCache[Principal], device_ids: set[int]) -> None:
    if device_ids:
        cache.drop_matching(lambda p: p.kind == "feed_token" and p.id in device_ids)


async def watch(
    maker: async_sessionmaker[AsyncSession],
    cache: VerifiedKeyCache[Principal],
    interval_seconds: float,
) -> None:
    since = utcnow() - CLOCK_MARGIN
    while True:
        await asyncio.sleep(interval_seconds)
        started = utcnow()
        try:
            async with maker() as session:
                for key_id in await changed_key_ids(session, since):
                    cache.drop_key_id(key_id)
                _drop_profiles(cache, await rotated_profile_ids(session, since))
                drop_devices(cache, await changed_device_ids(session, since))
            since = started - CLOCK_MARGIN
        except Exception:  # a database hiccup must not end the watcher
            logger.warning("revocation poll failed; retrying", exc_info=True)


class RevocationWatcher:
    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        cache: VerifiedKeyCache[Principal],
        interval_seconds: float,
    ) -> None:
        self._task: asyncio.Task[None] | None = None
        self._args = (maker, cache, interval_seconds)

    def start(self) -> None:
        self._task = asyncio.create_task(watch(*self._args), name="edl-revocation-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
