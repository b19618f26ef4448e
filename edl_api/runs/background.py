"""Background work owned by the app's lifespan: dispatcher and scheduler."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from edl_api.runs import logs
from edl_api.runs.dispatcher import Dispatcher
from edl_api.runs.scheduler import RefreshScheduler
from edl_api.settings import Settings

logger = logging.getLogger("edl_api.runs")


async def start(app: FastAPI) -> None:
    """Start the dispatcher (and the scheduler when EDL_AUTO_REFRESH_MINUTES > 0)."""
    settings: Settings = app.state.settings
    logs.configure_engine_log(settings)
    dispatcher = Dispatcher(settings, app.state.sessionmaker)
    await dispatcher.start()
    app.state.dispatcher = dispatcher
    app.state.scheduler = None
    if settings.auto_refresh_minutes > 0:
        scheduler = RefreshScheduler(settings, app.state.sessionmaker, dispatcher.wake)
        scheduler.start()
        app.state.scheduler = scheduler


async def stop(app: FastAPI) -> None:
    """Stop claiming, end in-flight children within a bound, stop the scheduler."""
    scheduler: RefreshScheduler | None = getattr(app.state, "scheduler", None)
    if scheduler is not None:
        scheduler.stop()
        app.state.scheduler = None
    dispatcher: Dispatcher | None = getattr(app.state, "dispatcher", None)
    if dispatcher is not None:
        await dispatcher.stop()
        app.state.dispatcher = None
    logs.close_engine_log()
