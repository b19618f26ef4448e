"""create_app(settings) + the lifespan that owns every engine, client and background task."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from edl_api import __version__
from edl_api.auth.keys import RejectedKeyCache, VerifiedKeyCache
from edl_api.auth.principal import Principal
from edl_api.auth.revocation import RevocationWatcher
from edl_api.auth.router import router as admin_router
from edl_api.db import create_engine, create_sessionmaker, ensure_schema
from edl_api.errors import install_error_handlers
from edl_api.feeds import hooks as feed_hooks
from edl_api.feeds.router import router as feeds_router
from edl_api.health import metrics_router
from edl_api.health import router as health_router
from edl_api.logging_setup import configure_logging
from edl_api.middleware import AccessLog, BodySizeLimit, FeedRequestCounter
from edl_api.pipelines.router import router as pipelines_router
from edl_api.profiles.router import router as profiles_router
from edl_api.runs import background
from edl_api.runs.router import router as runs_router
from edl_api.settings import Settings

logger = logging.getLogger("edl_api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings)
        engine = create_engine(settings)
        await ensure_schema(engine)
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        revocations = RevocationWatcher(
            app.state.sessionmaker, app.state.key_cache, settings.key_revocation_poll_seconds
        )
        revocations.start()
        await background.start(app)
        logger.info("edl-api %s started (database: %s)", __version__, engine.dialect.name)
        try:
            yield
        finally:
            await background.stop(app)
            await revocations.stop()
            await engine.dispose()
            logger.info("edl-api stopped")

    app = FastAPI(
        title="EDL platform",
        version=__version__,
        description="Multi-tenant External Dynamic List service: threat-intel sources in, "
        "hosted block/allow lists out for PAN-OS, FortiGate and Check Point.",
        lifespan=lifespan,
        telemetry={
            "tracing": settings.opentelemetry, "metrics": settings.opentelemetry,
            "logs": settings.opentelemetry,
        },
    )
    app.state.settings = settings
    app.state.key_cache = VerifiedKeyCache[Principal](
        settings.key_cache_ttl_seconds, settings.key_cache_size
    )
    app.state.rejected_keys = RejectedKeyCache(
        settings.key_reject_ttl_seconds, settings.key_cache_size
    )
    feed_hooks.install(app)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLog)
    app.add_middleware(FeedRequestCounter)
    for router in (
        health_router,
        metrics_router,
        admin_router,
        profiles_router,
        pipelines_router,
        runs_router,
        feeds_router,
    ):
        app.include_router(router)
    return app
