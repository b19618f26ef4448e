"""Injected app-level objects: `Annotated` aliases over the app's `AppState`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from edl_api.feeds.cache import FeedCache
from edl_api.runs.dispatcher import Dispatcher
from edl_api.settings import Settings
from edl_api.state import AppState


def app_state(request: Request) -> AppState:
    return AppState.of(request.app)


AppStateDep = Annotated[AppState, Depends(app_state)]


def _settings(state: AppStateDep) -> Settings:
    return state.settings


def _feed_cache(state: AppStateDep) -> FeedCache:
    return state.feed_cache


def _dispatcher(state: AppStateDep) -> Dispatcher:
    return state.dispatcher


def _sessionmaker(state: AppStateDep) -> async_sessionmaker[AsyncSession]:
    return state.sessionmaker


def _engine(state: AppStateDep) -> AsyncEngine:
    return state.engine


SettingsDep = Annotated[Settings, Depends(_settings)]
FeedCacheDep = Annotated[FeedCache, Depends(_feed_cache)]
DispatcherDep = Annotated[Dispatcher, Depends(_dispatcher)]
# For work outside the request's session (a followed log's polls).
SessionmakerDep = Annotated[async_sessionmaker[AsyncSession], Depends(_sessionmaker)]
EngineDep = Annotated[AsyncEngine, Depends(_engine)]
