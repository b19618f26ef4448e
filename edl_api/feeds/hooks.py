"""After-commit side effects, queued on the session and applied in one place.

Services queue what a commit changes (`mark_changed`, `drop_key_after_commit`); the
listeners below apply it once the transaction commits, and forget it on rollback.
"""

from __future__ import annotations

import weakref
from typing import Any

from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from edl_api.feeds.cache import FeedCache, invalidate_everywhere
from edl_api.models import Pipeline

_CHANGED = "edl_feeds_changed_pipelines"
_REVOKED = "edl_feeds_revoked_key_ids"
# Every app's verified-key cache in this process (a revoked token is dropped again
# after its revocation commits, so a request racing the commit cannot re-cache it).
_KEY_CACHES: weakref.WeakSet[Any] = weakref.WeakSet()


def install(app: FastAPI) -> None:
    """Attach the per-process feed cache and the feed fast path to the app.

    The fast path wraps the whole middleware stack (not `add_middleware`): a hot poll
    skips Starlette's layers, and writes its own access-log line."""
    from edl_api.feeds.fastpath import wrap_outermost

    settings = app.state.settings
    _KEY_CACHES.add(app.state.key_cache)
    app.state.feed_cache = FeedCache(
        max_bytes=settings.feed_cache_bytes, ttl_seconds=settings.feed_pointer_ttl_seconds,
    )
    wrap_outermost(app)


def mark_changed(session: AsyncSession | Session, pipeline_id: int) -> None:
    info = session.info
    info.setdefault(_CHANGED, set()).add(pipeline_id)


@event.listens_for(Session, "after_flush")
def _note_pipeline_changes(session: Session, _context: Any) -> None:
    # A pipeline deleted or deactivated in this process stops being served at commit.
    for obj in list(session.dirty) + list(session.deleted):
        if isinstance(obj, Pipeline) and obj.id is not None:
            mark_changed(session, obj.id)


def drop_key_after_commit(session: AsyncSession, key_id: str) -> None:
    session.info.setdefault(_REVOKED, set()).add(key_id)


@event.listens_for(Session, "after_commit")
def _apply_changes(session: Session) -> None:
    changed = session.info.pop(_CHANGED, None)
    if changed:
        invalidate_everywhere(changed)
    for key_id in session.info.pop(_REVOKED, ()):
        for cache in list(_KEY_CACHES):
            cache.drop_key_id(key_id)


@event.listens_for(Session, "after_rollback")
def _forget_changes(session: Session) -> None:
    session.info.pop(_CHANGED, None)
    session.info.pop(_REVOKED, None)
