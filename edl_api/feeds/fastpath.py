"""The feed fast path: answers hot feed polls from memory, ahead of the whole ASGI stack.

It answers a feed GET/HEAD only when everything needed is already in this app's caches,
asking the same functions the route asks: `keys.extract_key` and `CachedPrincipals`
(who the caller is), `http.parse_feed_request` (which feed) and `serving.cached_body`
(the pointer, the scope rule, the rendered body). Anything else — unknown key, stale
pointer, odd URL, error — goes to the FastAPI route, which does the full work and fills
the caches. The fast path can therefore only ever say what the route would say.

`app.EdlApp.__call__` asks it before FastAPI and Starlette run at all (that is where
its speed comes from); it counts its answers and writes the same access-log line as
`middleware.AccessLog`.
"""

from __future__ import annotations

import logging
import time

from starlette.datastructures import QueryParams
from starlette.types import Scope, Send

from edl_api import metrics
from edl_api.auth import keys
from edl_api.errors import AppError
from edl_api.feeds import http as feed_http
from edl_api.feeds import serving
from edl_api.feeds.cache import FeedCache
from edl_api.fleet.ledger import PollLedger
from edl_api.fleet.recording import record_answer
from edl_api.middleware import log_access

logger = logging.getLogger("edl_api.feeds")

# The request headers the answer depends on (the key, the conditional, the encoding).
_WANTED = {
    b"x-api-key": "x-api-key", b"authorization": "authorization",
    b"if-none-match": "if-none-match", b"if-modified-since": "if-modified-since",
    b"accept-encoding": "accept-encoding",
}
_NO_QUERY: dict[str, str] = {}
_MAX_FEED_URLS = 4096
# Set in a scope the fast path declined. A request is asked once: a second ask (the
# protocol declined, then `EdlApp.__call__` asks) would take the pointer's refresh grace
# (`cache._Timed.get`) that the first ask started, and the poll meant to refresh an
# expired pointer through the route would be answered from it again, for ever.
DECLINED = "edl.fast_path_declined"


class FeedFastPath:
    def __init__(
        self, *, principals: keys.CachedPrincipals, feed_cache: FeedCache, ledger: PollLedger,
    ) -> None:
        self.principals = principals
        self.feed_cache = feed_cache
        self.ledger = ledger
        # (path, query string) → the parsed feed request: a fleet polls a few URLs all
        # day. Only URLs that parse are kept (an error goes to the route), and the memo
        # is emptied when full, so odd URLs cannot grow it.
        self._feeds: dict[tuple[str, bytes], feed_http.FeedRequest] = {}

    async def answered(self, scope: Scope, send: Send) -> bool:
        """Answer `scope` from the caches and say True, or say False (the route answers)."""
        answer = self.answer(scope)
        if answer is None:
            return False
        status, headers, payload = answer
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return True

    def answer(self, scope: Scope) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """(status, headers, payload) for `scope` from the caches, counted, recorded and
        access-logged as answered; None when the route must answer. Synchronous, so the
        HTTP protocol (`feeds.poll_protocol`) can write it without an ASGI cycle."""
        if scope["method"] not in ("GET", "HEAD") or DECLINED in scope:
            return None
        path: str = scope["path"]
        if "/edl/" not in path:
            return None
        started = time.perf_counter()
        try:
            answer = self._answer(scope, path)
        except AppError:  # a URL the route answers with an error
            answer = None
        except Exception:  # never let the shortcut break a poll: take the route
            logger.exception("feed fast path failed; using the route")
            answer = None
        if answer is None:
            scope[DECLINED] = True
        else:
            log_access(scope, answer[0], started)
        return answer

    def _feed(self, path: str, raw_query: bytes) -> feed_http.FeedRequest:
        feed = self._feeds.get((path, raw_query))
        if feed is None:
            query = QueryParams(raw_query) if raw_query else _NO_QUERY
            feed = feed_http.parse_feed_request(path, query)
            if len(self._feeds) >= _MAX_FEED_URLS:
                self._feeds.clear()
            self._feeds[(path, raw_query)] = feed
        return feed

    def _answer(
        self, scope: Scope, path: str
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            wanted = _WANTED.get(name)
            if wanted is not None and wanted not in headers:  # the first, as `Headers.get`
                headers[wanted] = value.decode("latin-1")
        key = keys.extract_key(headers, allow_basic=True)
        if not key or len(key) > keys.MAX_KEY_LENGTH:
            return None
        principal = self.principals.get(key)
        if principal is None:
            return None
        feed = self._feed(path, scope.get("query_string", b""))
        body = serving.cached_body(self.feed_cache, principal, feed, poll=True)
        if body is None:
            return None
        if body.stale:  # the database is down: the last known feed (serving.feed_body)
            metrics.FEED_STALE_SERVES.inc()
        status, reply_headers, payload = feed_http.choose(body, headers, scope["method"] == "HEAD")
        metrics.count_feed_request(status, feed.fmt)
        if principal.kind == "feed_token" and principal.id is not None:  # a device's poll
            record_answer(self.ledger, scope, principal.id, feed, body, status, len(payload))
        return status, reply_headers, payload
