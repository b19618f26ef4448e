"""The feed fast path at the HTTP protocol: a cached poll answered once its headers parse.

uvicorn runs every request as an asyncio Task with a `RequestResponseCycle` and two ASGI
messages. For a 304 that machinery is most of what a poll costs: on this machine
(2026-12-02, wrk -t1 -c32, 5 s) a bare uvicorn app answered 37-40k 304/s, the same 304
written from `on_headers_complete` 72-79k/s, and nginx 92k/s.

`FeedPollProtocol` is uvicorn's httptools protocol with one change. In
`on_headers_complete` it asks `FeedFastPath.answer` — the same question `EdlApp.__call__`
asks, so the answer is the one the route would give — and, when the caches answer,
writes the response itself. Every other request takes uvicorn's own path unchanged, as
does a poll the caches cannot answer; `EdlApp.__call__` does not ask the fast path again
for it (`fastpath.DECLINED`), so the poll that found a pointer expired reaches the route.

It answers only where uvicorn would write at once:
- no earlier request of the connection still running (pipelined requests keep their order);
- the transport not paused for writing (a client that does not read keeps uvicorn's
  back-pressure);
- no upgrade, and under `--limit-concurrency`;
- no X-Forwarded-* header when uvicorn's proxy-headers middleware would rewrite the client.

It leans on uvicorn internals (`HttpToolsProtocol`'s parser, `cycle`, `flow`, `scope`,
`url`, `on_response_complete`; `STATUS_LINE`). pyproject pins uvicorn below 0.60, and
tests/feeds/test_poll_protocol.py drives it through a real server.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import httptools
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from edl_api.feeds.fastpath import FeedFastPath

_FORWARDED = (b"x-forwarded-for", b"x-forwarded-proto")
_JOIN_UNDER = 64 * 1024  # a smaller payload goes out in the same write as the headers


class _NoEvent:
    def set(self) -> None:
        pass


class _Answered:
    """The request's cycle once the protocol answered it: complete, so the parser's body
    callbacks, `connection_lost` and `shutdown` treat it as a finished uvicorn cycle."""

    response_complete = True
    disconnected = False
    keep_alive = False
    message_event = _NoEvent()


_ANSWERED = _Answered()


def fast_path_of(app: Any) -> tuple[FeedFastPath | None, bool]:
    """The fast path of the app uvicorn loaded, and whether uvicorn's proxy-headers
    middleware wraps it. Any other wrapper (trace logging, ASGI2) leaves the protocol
    path off: this protocol could not do what that wrapper does."""
    proxied = False
    if isinstance(app, ProxyHeadersMiddleware):
        proxied, app = True, app.app
    fast = getattr(app, "fast_path", None)
    return (fast if isinstance(fast, FeedFastPath) else None), proxied


class FeedPollProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast_path, self.proxied = fast_path_of(self.app)

    def on_headers_complete(self) -> None:
        if self.fast_path is None or not self._answered():
            super().on_headers_complete()

    def _answered(self) -> bool:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            return False  # behind a running request: uvicorn queues it in order
        if self.flow.write_paused or b"/edl/" not in self.url:
            return False
        method = self.parser.get_method()
        if method not in (b"GET", b"HEAD") or self.parser.should_upgrade():
            return False
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            return False  # uvicorn's 503
        if self.proxied and any(name in _FORWARDED for name, _ in self.headers):
            return False
        fast_path = self.fast_path
        assert fast_path is not None
        http_version = self.parser.get_http_version()
        # The scope as uvicorn's `on_headers_complete` fills it.
        scope = self.scope
        scope["method"] = method.decode("ascii")
        if http_version != "1.1":
            scope["http_version"] = http_version
        parsed = httptools.parse_url(self.url)
        path = parsed.path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope["path"] = self.root_path + path
        scope["raw_path"] = self.root_path.encode("ascii") + parsed.path
        scope["query_string"] = parsed.query or b""
        answer = fast_path.answer(scope)  # type: ignore[arg-type]
        if answer is None:
            return False
        status, headers, payload = answer
        keep_alive = http_version != "1.0" and self.parser.should_keep_alive()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += (name, b": ", value, b"\r\n")
        for name, value in headers:
            head += (name, b": ", value, b"\r\n")
        if not keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        if len(payload) < _JOIN_UNDER:
            head.append(payload)
            self.transport.write(b"".join(head))
        else:
            self.transport.write(b"".join(head))
            self.transport.write(payload)
        self.cycle = _ANSWERED  # type: ignore[assignment]
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()
        return True
