"""The app's typed state: what `create_app` builds and its lifespan opens, read one way.

`create_app` builds the caches (the feed fast path gets them in its constructor); the
lifespan opens the database and starts the background work (`Running`) and clears it at
shutdown. Routes read it through the `Annotated` aliases in `edl_api.deps`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.applications import Starlette

from edl_api.auth.keys import CachedPrincipals, RejectedKeyCache, VerifiedKeyCache
from edl_api.auth.principal import Principal
from edl_api.auth.verifier import FailureLimiter, KeyVerifier
from edl_api.feeds.cache import FeedCache
from edl_api.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from edl_api.fleet.ledger import PollLedger
    from edl_api.runs.dispatcher import Dispatcher
    from edl_api.runs.scheduler import RefreshScheduler


class NotRunning(RuntimeError):
    """The database or a background task was asked for outside the app's lifespan."""


@dataclass(frozen=True, slots=True)
class Running:
    """What the lifespan opened: gone once it ends."""

    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    dispatcher: Dispatcher
    scheduler: RefreshScheduler | None


@dataclass(eq=False, slots=True)
class AppState:
    settings: Settings
    key_cache: VerifiedKeyCache[Principal]
    rejected_keys: RejectedKeyCache
    principals: CachedPrincipals  # legacy keys + `key_cache`, one digest per lookup
    feed_cache: FeedCache
    verifier: KeyVerifier  # bcrypt's own pool (closed at shutdown) and its failure limiter
    ledger: PollLedger  # device polls, recorded in memory; the lifespan flushes them
    running: Running | None = None
    # Key digest → the one verification of that key in flight (`auth.deps.authenticate`).
    verifying: dict[bytes, asyncio.Future[Principal | None]] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings, legacy: list[tuple[str, Principal]]) -> AppState:
        # Imported here: the ledger writes through `edl_api.db`, which reads this module.
        from edl_api.fleet.ledger import PollLedger

        key_cache = VerifiedKeyCache[Principal](
            settings.key_cache_ttl_seconds, settings.key_cache_size
        )
        return cls(
            settings=settings,
            key_cache=key_cache,
            rejected_keys=RejectedKeyCache(
                settings.key_reject_ttl_seconds, settings.key_cache_size
            ),
            principals=CachedPrincipals(key_cache, legacy),
            feed_cache=FeedCache(
                max_bytes=settings.feed_cache_bytes, ttl_seconds=settings.feed_pointer_ttl_seconds
            ),
            verifier=KeyVerifier(
                workers=settings.bcrypt_workers,
                max_pending=settings.bcrypt_max_pending,
                limiter=FailureLimiter(
                    settings.key_max_failures,
                    settings.key_failure_cooldown_seconds,
                    settings.key_cache_size,
                ),
                dummy_rounds=settings.bcrypt_rounds,
            ),
            ledger=PollLedger(
                settings.poll_flush_seconds, settings.poll_retention_days,
                enabled=settings.poll_ledger_enabled,
            ),
        )

    @staticmethod
    def of(app: Starlette) -> AppState:
        """The state `create_app` attached to this app."""
        state: AppState = app.state.edl
        return state

    def attach(self, app: Starlette) -> None:
        app.state.edl = self

    def _running(self) -> Running:
        if self.running is None:
            raise NotRunning("the app's lifespan is not running")
        return self.running

    @property
    def engine(self) -> AsyncEngine:
        return self._running().engine

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        return self._running().sessionmaker

    @property
    def dispatcher(self) -> Dispatcher:
        return self._running().dispatcher

    @property
    def scheduler(self) -> RefreshScheduler | None:
        return None if self.running is None else self.running.scheduler
