"""Injected app-level objects (Annotated aliases)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from edl_api.auth.keys import VerifiedKeyCache
from edl_api.auth.principal import Principal
from edl_api.settings import Settings


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _key_cache(request: Request) -> VerifiedKeyCache[Principal]:
    cache: VerifiedKeyCache[Principal] = request.app.state.key_cache
    return cache


SettingsDep = Annotated[Settings, Depends(_settings)]
KeyCacheDep = Annotated[VerifiedKeyCache[Principal], Depends(_key_cache)]
