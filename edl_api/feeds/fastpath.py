"""A bare-ASGI fast path for hot feed polls.

It answers a feed GET/HEAD only when everything needed is already in this process's
caches: the verified key (same extraction and cache as `auth.deps.authenticate`),
the feed pointer (fresh), and the rendered body. The scope rule is the route's
(`Principal.sees_pipeline`, live pipeline). Anything else — unknown key, stale
pointer, odd query, error — goes to the FastAPI route, which does the full work and
fills the caches. The fast path can therefore only ever say what the route would say.

`install()` puts it outermost (ahead of Starlette's middleware stack) and it writes
the same access-log line as `middleware.AccessLog` when that logger is enabled.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from edl_api import metrics
from edl_api.auth import keys
from edl_api.auth.deps import _extract_key, _legacy_principal
from edl_api.auth.principal import Principal
from edl_api.feeds import serving
from edl_api.feeds.cache import FeedBody, FeedCache
from edl_api.feeds.content import FEED_TYPES
from edl_api.feeds.render import FORMATS
from edl_api.middleware import log_access

logger = logging.getLogger("edl_api.feeds")

_PIPELINE_FEED = re.compile(r"^/pipelines/([0-9]{1,18})/edl/([a-z0-9]{1,10})$")
_GLOBAL_FEED = re.compile(r"^/edl/([a-z0-9]{1,10})$")
_WANTED = {
    b"x-api-key": "x-api-key", b"authorization": "authorization",
    b"if-none-match": "if-none-match", b"if-modified-since": "if-modified-since",
    b"accept-encoding": "accept-encoding",
}


class _Headers:
    """Just enough of a Request for `_extract_key`."""

    __slots__ = ("headers",)

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


class FeedFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._legacy: dict[bytes, Principal] | None = None
        self._legacy_for: object = None
        self._state: Any = None  # the app's state (one app per stack)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            path: str = scope["path"]
            if "/edl/" in path:
                started = time.perf_counter()
                try:
                    answer = self._answer(scope, path)
                except Exception:  # never let the shortcut break a poll: take the route
                    logger.exception("feed fast path failed; using the route")
                    answer = None
                if answer is not None:
                    status, headers, payload = answer
                    await send({"type": "http.response.start", "status": status,
                                "headers": headers})
                    await send({"type": "http.response.body", "body": payload})
                    log_access(scope, status, started)
                    return
        await self.app(scope, receive, send)

    def _answer(self, scope: Scope, path: str) -> tuple[int, Any, bytes] | None:
        state = self._state
        if state is None:
            app = scope.get("app")
            if app is None:
                return None
            state = self._state = app.state
        # Starlette's `State` keeps attributes in `_state`; reading the dict skips its
        # `__getattr__` fallback, a measurable share of a 304.
        values: dict[str, Any] = state._state
        cache: FeedCache | None = values.get("feed_cache")
        if cache is None:
            return None
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            wanted = _WANTED.get(name)
            if wanted is not None:
                headers[wanted] = value.decode("latin-1")
        principal = self._principal(values, headers)
        if principal is None:
            return None
        raw_query: bytes = scope.get("query_string", b"")
        query = _query(raw_query) if raw_query else {}
        if query is None:
            return None
        fmt = query.pop("format", "plain")
        if fmt not in FORMATS:
            return None
        body: FeedBody | None
        match = _PIPELINE_FEED.match(path)
        if match is not None:
            if query:
                return None
            pipeline_id, kind = int(match.group(1)), match.group(2)
            if kind not in FEED_TYPES:
                return None
            pointer = cache.pointer(pipeline_id, kind, poll=True)
            if pointer is None or not pointer.live:
                return None
            if not principal.sees_pipeline(pointer.profile_id, pipeline_id):
                return None
            body = cache.body(serving.pipeline_body_key(pointer, kind, fmt))
        else:
            match = _GLOBAL_FEED.match(path)
            if match is None:
                return None
            kind = match.group(1)
            if kind not in FEED_TYPES:
                return None
            profile_id: int | None = None
            if "profile_id" in query:
                raw = query.pop("profile_id")
                if not raw.isdigit():
                    return None
                profile_id = int(raw)
                if not principal.sees_profile(profile_id):
                    return None
            if query:
                return None
            members = cache.union(serving.union_key(principal, profile_id, kind), poll=True)
            if members is None:
                return None
            body = cache.body(serving.union_body_key(members, kind, fmt))
        if body is None:
            return None
        status, reply_headers, payload = serving.choose(body, headers, scope["method"] == "HEAD")
        metrics.count_feed_request(status, fmt)
        return status, reply_headers, payload

    def _principal(self, values: dict[str, Any], headers: dict[str, str]) -> Principal | None:
        """The caller if `authenticate` would find it without touching the database.

        One keyed digest of the key (the verified-key cache's MAC under its per-process
        secret) looks up both the legacy keys and the verified keys: no plaintext kept,
        no timing signal on the secret. The verified-key cache holds nothing that did not
        pass `parse_key` + bcrypt. Nothing here ever keeps a plaintext key (decision 7)."""
        key = _extract_key(_Headers(headers), allow_basic=True)  # type: ignore[arg-type]
        if not key or len(key) > 256:
            return None
        cache: keys.VerifiedKeyCache[Principal] | None = values.get("key_cache")
        if cache is None:
            return None
        digest = cache.digest(key)
        legacy = self._legacy
        if legacy is None or self._legacy_for is not cache:  # settings are fixed for the app's life
            legacy = self._legacy = _legacy_digests(cache, values["settings"])
            self._legacy_for = cache
        found = legacy.get(digest)
        if found is not None:
            return found
        return cache.get_by_digest(digest)


def _legacy_digests(
    cache: keys.VerifiedKeyCache[Principal], settings: Any
) -> dict[bytes, Principal]:
    """MAC(cache secret, legacy key) → the principal `authenticate` gives that key."""
    table: dict[bytes, Principal] = {}
    for secret, _role in settings.legacy_keys():
        principal = _legacy_principal(settings, secret)
        if principal is not None:
            table.setdefault(cache.digest(secret), principal)
    return table


def _query(raw: bytes) -> dict[str, str] | None:
    try:
        pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        return None
    query = dict(pairs)
    if len(query) != len(pairs):
        return None
    return query


def wrap_outermost(app: Any) -> None:
    """Make the fast path the app's outermost ASGI layer (ahead of every middleware)."""
    build = app.build_middleware_stack

    def build_with_fast_path() -> ASGIApp:
        return FeedFastPath(build())

    app.build_middleware_stack = build_with_fast_path
