"""The per-process feed cache: bytes by content, pointers with a short time to live.

A poll must be a dictionary lookup. Three maps, all bounded:

- `bodies`: a rendered feed (plain bytes, gzip bytes, prebuilt response headers) keyed
  by what it was made from (artifact sha + format + provenance version), LRU by bytes;
- `pointers`: `(pipeline_id, type)` → which artifact is served and whether the pipeline
  is live, refreshed from the database after `ttl` seconds (another process may have
  published or deleted; polls meanwhile keep the old pointer for at most
  `REFRESH_GRACE_SECONDS` more) and dropped at once when this app commits a change
  (`feeds.hooks`);
- `unions`: the members of a caller's global feed `(scope, profile filter, type)`, keyed
  by the scope itself (profile and pipeline ids), never by who asks, and dropped when this
  app commits a link change (`feeds.hooks.drop_unions_after_commit`).

While the database cannot be read, the last pointer and members stay in use, marked
`stale` and re-put for another `ttl` (so the fast path keeps answering from memory and
one poll per `ttl` retries the database): stale-if-error (`serving.feed_body`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.utils import format_datetime
from typing import Any


@dataclass(slots=True)
class FeedBody:
    """One immutable rendering of a feed and its ready-to-send headers."""

    etag: str
    plain: bytes
    gzip: bytes
    count: int
    media_type: bytes = b"text/plain; charset=utf-8"
    dropped: int = 0  # entries the format's vendor grammar left out (X-EDL-Dropped)
    # Entries cut to fit the polling device's capacity budget (X-EDL-Truncated).
    truncated: int = 0
    run_ids: str = ""  # as X-EDL-Run-Id (the poll ledger records it)
    md5: str | None = None  # of `plain`, made on the first `.md5` request (Cisco FMC)
    # Filled by `prepare()`; (status 200 identity, 200 gzip, 304) header lists.
    identity_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    gzip_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    not_modified_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    last_modified: datetime | None = None
    quoted_etag: str = ""  # the ETag header's value, for the common exact If-None-Match
    # True on the copy served while the database cannot refresh the pointer
    # (`stale_variant`: same bytes and ETag, plus `X-EDL-Stale: db-unavailable`).
    stale: bool = False
    stale_copy: FeedBody | None = None

    @property
    def size(self) -> int:
        return len(self.plain) + len(self.gzip) + 512


@dataclass(frozen=True, slots=True)
class FeedPointer:
    """What (pipeline, type) serves now, as last read from the database."""

    pipeline_id: int
    profile_id: int
    live: bool  # active and not deleted
    sha256: str | None = None
    artifact_id: int | None = None
    run_id: int | None = None
    count: int = 0
    updated_at: datetime | None = None
    # The config's outputs, read only for a type with nothing published (sha256 None): it
    # tells "not published yet" (503) from "never published here" (404).
    outputs: tuple[str, ...] | None = None
    # The last known pointer, kept because the database could not be read to refresh it.
    stale: bool = False


@dataclass(frozen=True, slots=True)
class UnionMembers:
    pointers: tuple[FeedPointer, ...]
    stale: bool = False  # as `FeedPointer.stale`


STALE_HEADER = (b"x-edl-stale", b"db-unavailable")


def stale_variant(body: FeedBody) -> FeedBody:
    """`body` as served from a pointer the database could not refresh: the same bytes and
    ETag (a firewall's If-None-Match still answers 304) plus the stale header. Made once
    per body and kept on it."""
    if body.stale:
        return body
    copy = body.stale_copy
    if copy is None:
        copy = replace(
            body, stale=True, stale_copy=None,
            identity_headers=[*body.identity_headers, STALE_HEADER],
            gzip_headers=[*body.gzip_headers, STALE_HEADER],
            not_modified_headers=[*body.not_modified_headers, STALE_HEADER],
        )
        body.stale_copy = copy
    return copy


def http_date(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


def prepare(body: FeedBody, *, run_ids: Iterable[int], last_modified: datetime | None) -> None:
    """Precompute the three header lists once, so serving only picks one."""
    body.last_modified = last_modified
    body.quoted_etag = f'"{body.etag}"'
    body.run_ids = ",".join(str(r) for r in run_ids)
    common = [
        (b"etag", body.quoted_etag.encode()),
        (b"x-edl-count", str(body.count).encode()),
        (b"x-edl-dropped", str(body.dropped).encode()),
        (b"x-edl-truncated", str(body.truncated).encode()),
        (b"x-edl-run-id", body.run_ids.encode()),
        (b"cache-control", b"no-cache"),
        (b"vary", b"Accept-Encoding"),
    ]
    if last_modified is not None:
        common.append((b"last-modified", http_date(last_modified).encode()))
    body.not_modified_headers = list(common)
    body.identity_headers = [
        (b"content-type", body.media_type),
        (b"content-length", str(len(body.plain)).encode()),
        *common,
    ]
    body.gzip_headers = [
        (b"content-type", body.media_type),
        (b"content-length", str(len(body.gzip)).encode()),
        (b"content-encoding", b"gzip"),
        *common,
    ]


# How long polls keep getting an expired pointer while the one poll that saw it expire
# re-reads the database through the route (if that poll fails, the next one retries).
REFRESH_GRACE_SECONDS = 1.0


class _Timed:
    __slots__ = ("expires", "refresh_by", "value")

    def __init__(self, expires: float, value: Any) -> None:
        self.expires = expires
        self.refresh_by = 0.0
        self.value = value

    def get(self, poll: bool) -> Any:
        """The value while fresh. Once expired, a route lookup (`poll=False`) gets None and
        re-reads; a fast-path poll gets None once (it goes to the route and refreshes) and
        then the old value for up to `REFRESH_GRACE_SECONDS`, so a fleet of firewalls does
        not send every poll of that moment to the database together."""
        now = time.monotonic()
        if self.expires >= now:
            return self.value
        if not poll:
            return None
        if self.refresh_by < now:
            self.refresh_by = now + REFRESH_GRACE_SECONDS
            return None
        return self.value


class FeedCache:
    def __init__(self, max_bytes: int, ttl_seconds: float, max_pointers: int = 100_000) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl_seconds
        self.max_pointers = max_pointers
        self._bodies: OrderedDict[Hashable, FeedBody] = OrderedDict()
        self._bytes = 0
        self._pointers: dict[tuple[int, str], _Timed] = {}
        self._unions: dict[Hashable, _Timed] = {}
        # A device's budget: (limit, its feeds of one kind with their versions) → key →
        # entries allowed. Keyed by content, so a new version or limit misses by itself.
        self._allocations: dict[Hashable, dict[Any, int]] = {}
        # TAXII collection views (`edl_api.taxii.views`) by feed version: (view, bytes),
        # LRU under their own `max_bytes`.
        self._views: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._view_bytes = 0
        self._lock = threading.Lock()

    # --- bodies ------------------------------------------------------------------------

    def body(self, key: Hashable) -> FeedBody | None:
        body = self._bodies.get(key)
        if body is not None:
            try:
                self._bodies.move_to_end(key)
            except KeyError:  # evicted concurrently
                pass
        return body

    def put_body(self, key: Hashable, body: FeedBody) -> None:
        with self._lock:
            old = self._bodies.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            self._bodies[key] = body
            self._bytes += body.size
            # Keep the newest body even when it alone is over the cap.
            while self._bytes > self.max_bytes and len(self._bodies) > 1:
                _, evicted = self._bodies.popitem(last=False)
                self._bytes -= evicted.size

    # --- views -------------------------------------------------------------------------

    def view(self, key: Hashable) -> Any | None:
        found = self._views.get(key)
        if found is None:
            return None
        try:
            self._views.move_to_end(key)
        except KeyError:  # evicted concurrently
            pass
        return found[0]

    def put_view(self, key: Hashable, view: Any, size: int) -> None:
        with self._lock:
            old = self._views.pop(key, None)
            if old is not None:
                self._view_bytes -= old[1]
            self._views[key] = (view, size)
            self._view_bytes += size
            while self._view_bytes > self.max_bytes and len(self._views) > 1:
                _, (_, evicted) = self._views.popitem(last=False)
                self._view_bytes -= evicted

    def drop_view(self, key: Hashable) -> None:
        with self._lock:
            old = self._views.pop(key, None)
            if old is not None:
                self._view_bytes -= old[1]

    # --- allocations -------------------------------------------------------------------

    def allocation(self, key: Hashable) -> dict[Any, int] | None:
        return self._allocations.get(key)

    def put_allocation(self, key: Hashable, allowed: dict[Any, int]) -> None:
        if len(self._allocations) >= self.max_pointers:
            self._allocations.clear()
        self._allocations[key] = allowed

    # --- pointers ----------------------------------------------------------------------

    def pointer(
        self, pipeline_id: int, indicator_type: str, *, poll: bool = False
    ) -> FeedPointer | None:
        entry = self._pointers.get((pipeline_id, indicator_type))
        if entry is None:
            return None
        value: FeedPointer | None = entry.get(poll)
        return value

    def last_pointer(self, pipeline_id: int, indicator_type: str) -> FeedPointer | None:
        """The pointer last read, however old: what is served while the database is down."""
        entry = self._pointers.get((pipeline_id, indicator_type))
        return None if entry is None else entry.value  # type: ignore[no-any-return]

    def drop_pointer(self, pipeline_id: int, indicator_type: str) -> None:
        self._pointers.pop((pipeline_id, indicator_type), None)

    def put_pointer(self, pointer: FeedPointer, indicator_type: str) -> None:
        if len(self._pointers) >= self.max_pointers:
            self._pointers.clear()
        self._pointers[(pointer.pipeline_id, indicator_type)] = _Timed(
            time.monotonic() + self.ttl, pointer
        )

    def union(self, key: Hashable, *, poll: bool = False) -> UnionMembers | None:
        entry = self._unions.get(key)
        if entry is None:
            return None
        value: UnionMembers | None = entry.get(poll)
        return value

    def last_union(self, key: Hashable) -> UnionMembers | None:
        entry = self._unions.get(key)
        return None if entry is None else entry.value  # type: ignore[no-any-return]

    def put_union(self, key: Hashable, members: UnionMembers) -> None:
        if len(self._unions) >= self.max_pointers:
            self._unions.clear()
        self._unions[key] = _Timed(time.monotonic() + self.ttl, members)

    def drop_unions(self) -> None:
        """Forget every global feed's members (an admin's profile links changed)."""
        self._unions.clear()

    def invalidate(self, pipeline_ids: Iterable[int]) -> None:
        """Forget what these pipelines serve (and every global feed: membership may move)."""
        wanted = set(pipeline_ids)
        for key in [k for k in self._pointers if k[0] in wanted]:
            self._pointers.pop(key, None)
        self._unions.clear()
