"""Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer feed responses)."""

from __future__ import annotations

import json
import logging
import time
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edl_api import metrics
from edl_api.feeds.render import FORMATS


class BodySizeLimit:
    """413 for a request body over the cap, whether Content-Length is honest or not."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.max_bytes:
                    await self._reject(send)
                    return
        received = 0
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps(
            {"error": "payload_too_large", "detail": f"request body over {self.max_bytes} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class _StatusSeen:
    """Passes messages through and remembers the response status (500 if none was sent)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.code = 500

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.code = message["status"]
        await self._send(message)


ACCESS_LOGGER = logging.getLogger("edl_api.access")


def log_access(scope: Scope, status: int, started: float) -> None:
    """The access-log line, for the middleware and the feed fast path alike."""
    if not ACCESS_LOGGER.isEnabledFor(logging.INFO):
        return
    query = scope.get("query_string", b"").decode("latin-1")
    path = scope.get("path", "") + (f"?{query}" if query else "")
    ACCESS_LOGGER.info(
        "%s %s %s %.1fms",
        scope.get("method"),
        path,
        status,
        (time.perf_counter() - started) * 1000,
    )


class AccessLog:
    """One line per request: method, path, status, milliseconds. Never headers or bodies;
    the redacting log filter scrubs any key a client put in the URL."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = _StatusSeen(send)
        try:
            await self.app(scope, receive, status.send)
        finally:
            log_access(scope, status.code, started)


class FeedRequestCounter:
    """Counts feed requests by status and format for those the fast path did not answer
    (misses, 401s, 404s): a firewall with a wrong token shows up in /metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or "/edl/" not in scope.get("path", ""):
            await self.app(scope, receive, send)
            return
        status = _StatusSeen(send)
        try:
            await self.app(scope, receive, status.send)
        finally:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            fmt = query.get("format", ["plain"])[-1]
            metrics.count_feed_request(status.code, fmt if fmt in FORMATS else "invalid")
