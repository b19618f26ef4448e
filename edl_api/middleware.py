"""Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer feed responses)."""

from __future__ import annotations

import json
import logging
import re
import time
from urllib.parse import parse_qs

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edl_api import metrics
from edl_api.errors import unexpected_answer
from edl_api.feeds.render import FORMATS
from edl_api.logging_setup import escape_log

MAX_JSON_NESTING = 32
# A JSON string (skipped whole, escapes included) or a bracket: the regex engine walks the
# body, Python sees only brackets and strings.
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')
_OPENERS = (ord("["), ord("{"))


def json_depth_exceeds(body: bytes, limit: int = MAX_JSON_NESTING) -> bool:
    """Whether `body` nests arrays/objects deeper than `limit`, found without parsing it
    (the parsers and validators recurse: `rules.allow` nested 400 deep was a 500)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False  # cannot be deeper than its number of openers
    depth = 0
    for match in _JSON_TOKEN.finditer(body):
        token = match.group()
        if len(token) != 1:
            continue  # a string
        if token[0] in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


class BodySizeLimit:
    """413 for a request body over the cap, whether Content-Length is honest or not; 422 for
    a body nested deeper than MAX_JSON_NESTING, checked once the last chunk is in and before
    the app reads it (so before any parser recursion)."""

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
        chunks: list[bytes] = []

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                # HTTPExceptions: FastAPI's body reader re-raises those (any other error
                # would become its 400) and the app's handler renders them.
                if received > self.max_bytes:
                    raise _TooLarge(413, f"request body over {self.max_bytes} bytes")
                chunks.append(chunk)
                if not message.get("more_body", False) and json_depth_exceeds(b"".join(chunks)):
                    raise _TooDeep(422, f"JSON nested deeper than {MAX_JSON_NESTING} levels")
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._reject(send)
        except _TooDeep as exc:  # raised where no handler renders it
            await _send_json(send, 422, {"error": "validation_error", "detail": exc.detail})

    async def _reject(self, send: Send) -> None:
        await _send_json(send, 413, {
            "error": "payload_too_large", "detail": f"request body over {self.max_bytes} bytes"
        })


async def _send_json(
    send: Send, status: int, payload: object, extra: dict[str, str] | None = None
) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(HTTPException):
    pass


class _TooDeep(HTTPException):
    pass


class UnexpectedErrors:
    """An error no handler knew: one log line with an id (`errors.log_unexpected`) and a 500
    that carries the id; a database outage is a 503 `database_unavailable` with Retry-After
    (`errors.unexpected_answer`), the connection kept. Starlette's own last handler logs,
    then re-raises to the server, which logged the traceback a second time (with the SQL
    parameters)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            status, body, headers = unexpected_answer(exc, scope)
            if not started:  # else the server drops the half-sent response
                await _send_json(send, status, body, headers)


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
    args = (
        scope.get("method"),
        escape_log(path),  # the path is percent-decoded: `%0a` is a newline here
        status,
        (time.perf_counter() - started) * 1000,
    )
    # `makeRecord` + `handle` is `info` without `findCaller`'s stack walk, which no
    # formatter of ours prints and one line per request pays.
    ACCESS_LOGGER.handle(ACCESS_LOGGER.makeRecord(
        ACCESS_LOGGER.name, logging.INFO, __file__, 0, "%s %s %s %.1fms", args, None,
    ))


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
