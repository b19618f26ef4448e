"""Background work owned by the app's lifespan: dispatcher and scheduler."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from edl_api.runs import logs
from edl_api.runs.dispatcher import Dispatcher
from edl_api.runs.scheduler import RefreshScheduler, refresh_status
from edl_api.settings import Settings

logger = logging.getLogger("edl_api.runs")


async def start(
    settings: Settings, maker: async_sessionmaker[AsyncSession]
) -> tuple[Dispatcher, RefreshScheduler | None]:
    """Start the dispatcher and (unless EDL_AUTO_REFRESH_MINUTES=0) the scheduler, and
    log whether scheduled refresh is on."""
    logs.configure_engine_log(settings)
    dispatcher = Dispatcher(settings, maker)
    await dispatcher.start()
    scheduler = None
    if settings.auto_refresh_minutes > 0:
        scheduler = RefreshScheduler(settings, maker, dispatcher.wake)
        scheduler.start()  # its first tick comes at once, then every interval
        logger.info(refresh_status(settings))
    else:
        logger.warning(refresh_status(settings))
    return dispatcher, scheduler


async def stop(dispatcher: Dispatcher, scheduler: RefreshScheduler | None) -> None:
    """Stop claiming, end in-flight children within a bound, stop the scheduler."""
    if scheduler is not None:
        scheduler.stop()
    await dispatcher.stop()
    logs.close_engine_log()
