"""After-commit side effects, queued on the session and applied in one place.

Services queue what a commit changes (`mark_changed`, `drop_key_after_commit`,
`drop_unions_after_commit`); the listeners below apply it once the transaction commits,
and forget it on rollback. They
are registered on one app's session factory (`session_factory`), whose sessions carry
that app's caches in `Session.info`: no process-wide listeners or cache registries. A
session made elsewhere (a worker process, the CLI) has no caches and applies nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, sessionmaker

from edl_api.auth.keys import VerifiedKeyCache
from edl_api.auth.principal import Principal
from edl_api.feeds.cache import FeedCache
from edl_api.models import Pipeline

_CACHES = "edl_caches"
_CHANGED = "edl_feeds_changed_pipelines"
_DROPPED = "edl_dropped_key_ids"
_UNIONS = "edl_drop_unions"


@dataclass(frozen=True, slots=True)
class _Caches:
    feeds: FeedCache
    keys: VerifiedKeyCache[Principal]


def session_factory(
    feed_cache: FeedCache, key_cache: VerifiedKeyCache[Principal]
) -> sessionmaker[Session]:
    """The sync session factory behind an app's `async_sessionmaker`: its sessions apply
    queued changes to these caches after they commit."""
    factory: sessionmaker[Session] = sessionmaker(info={_CACHES: _Caches(feed_cache, key_cache)})
    event.listen(factory, "after_flush", _note_pipeline_changes)
    event.listen(factory, "after_commit", _apply_changes)
    event.listen(factory, "after_rollback", _forget_changes)
    return factory


def mark_changed(session: AsyncSession | Session, pipeline_id: int) -> None:
    """After commit, this process stops serving the pipeline's cached pointers."""
    session.info.setdefault(_CHANGED, set()).add(pipeline_id)


def drop_key_after_commit(session: AsyncSession | Session, key_id: str) -> None:
    """After commit, this process forgets the key's verified principal (revoked, or its
    scope changed): the one way a cached key is invalidated here; other processes drop
    it on their next revocation poll (`auth.revocation`). Dropping only after the commit
    means a request racing it cannot re-cache the old principal from the old rows."""
    session.info.setdefault(_DROPPED, set()).add(key_id)


def drop_unions_after_commit(session: AsyncSession | Session) -> None:
    """After commit, this process forgets every global feed's members (a profile link
    changed: who may read which profile's entries)."""
    session.info[_UNIONS] = True


def _note_pipeline_changes(session: Session, _context: Any) -> None:
    # A pipeline deleted or deactivated in this process stops being served at commit.
    for obj in list(session.dirty) + list(session.deleted):
        if isinstance(obj, Pipeline) and obj.id is not None:
            mark_changed(session, obj.id)


def _apply_changes(session: Session) -> None:
    changed = session.info.pop(_CHANGED, None)
    dropped = session.info.pop(_DROPPED, ())
    unions = session.info.pop(_UNIONS, False)
    caches: _Caches | None = session.info.get(_CACHES)
    if caches is None:
        return
    if unions:
        caches.feeds.drop_unions()
    if changed:
        caches.feeds.invalidate(changed)
    for key_id in dropped:
        caches.keys.drop_key_id(key_id)


def _forget_changes(session: Session) -> None:
    session.info.pop(_CHANGED, None)
    session.info.pop(_DROPPED, None)
    session.info.pop(_UNIONS, None)
