"""One error path: services raise AppError subclasses; one handler renders the envelope."""

from __future__ import annotations

import logging
import re
import secrets
import sqlite3
import time
import traceback
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from edl_api.logging_setup import escape_log

logger = logging.getLogger("edl_api")


class AppError(Exception):
    code = "error"
    status_code = 400
    headers: dict[str, str] | None = None

    def __init__(self, detail: Any = None, *, code: str | None = None) -> None:
        self.detail = detail if detail is not None else self.code.replace("_", " ")
        if code is not None:
            self.code = code
        super().__init__(str(self.detail))


# Names every way a key is accepted (`auth.keys.extract_key`): a wrong header is the usual
# cause, and the old "missing or invalid API key" did not say which one to use.
KEY_HEADERS_HINT = (
    "missing or invalid API key: send the key as X-API-Key: <key>, Authorization: Bearer "
    "<key>, or (feeds) HTTP Basic with the key as password"
)


class Unauthorized(AppError):
    code = "unauthorized"
    status_code = 401

    def __init__(self, detail: Any = KEY_HEADERS_HINT, *, basic: bool = False) -> None:
        super().__init__(detail)
        challenge = 'Basic realm="edl"' if basic else 'Bearer realm="edl"'
        self.headers = {"WWW-Authenticate": challenge}


class Forbidden(AppError):
    code = "forbidden"
    status_code = 403


class NotFound(AppError):
    code = "not_found"
    status_code = 404


class Conflict(AppError):
    code = "conflict"
    status_code = 409


class Unprocessable(AppError):
    code = "unprocessable"
    status_code = 422


class TooManyRequests(AppError):
    """Over a quota for now; answered with Retry-After (seconds)."""

    code = "too_many_requests"
    status_code = 429

    def __init__(self, detail: Any = None, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(detail, code=code)
        self.headers = {"Retry-After": str(retry_after)}


class ServiceUnavailable(AppError):
    """Not available yet or for a moment; subclasses say when to retry (Retry-After)."""

    code = "service_unavailable"
    status_code = 503


DATABASE_RETRY_SECONDS = 5


class DatabaseUnavailable(ServiceUnavailable):
    """The database cannot be reached right now (outage, restart, connections refused)."""

    code = "database_unavailable"
    headers = {"Retry-After": str(DATABASE_RETRY_SECONDS)}  # noqa: RUF012 - read-only

    def __init__(self, detail: Any = None) -> None:
        super().__init__(
            detail or f"the database is unavailable; retry after {DATABASE_RETRY_SECONDS} s"
        )


# PostgreSQL SQLSTATE classes that mean "cannot reach / use the server now", not "your query
# is wrong": 08 connection exception, 53 insufficient resources (too many connections, disk
# full), 57P operator intervention (admin shutdown, crash, cannot connect now), 3D000 no
# such database. 55000 is also "not currently accepting connections" (ALLOW_CONNECTIONS off).
_UNAVAILABLE_SQLSTATES = ("08", "53", "57P", "3D000")
_DRIVER_MODULES = ("/sqlalchemy/", "/asyncpg/", "/aiosqlite/")
_SQLITE_UNAVAILABLE = (
    "unable to open database file", "database is locked", "database table is locked",
    "disk I/O error", "database or disk is full", "attempt to write a readonly database",
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it wraps (the driver's error last), each once."""
    seen: set[int] = set()
    todo: deque[BaseException | None] = deque([exc])
    while todo:
        current = todo.popleft()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend((getattr(current, "orig", None), current.__cause__, current.__context__))


def _raised_by_driver(exc: BaseException) -> bool:
    return any(
        any(m in frame.filename for m in _DRIVER_MODULES)
        for frame in traceback.extract_tb(exc.__traceback__)
    )


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.DisconnectionError | sa_exc.TimeoutError):
        return True  # TimeoutError: no pooled connection came free in time
    # SQLAlchemy's OperationalError alone says little (SQLite's "no such table" is one, a
    # bug): the driver's error underneath decides.
    if isinstance(exc, sqlite3.OperationalError | sqlite3.InterfaceError):
        return str(exc).startswith(_SQLITE_UNAVAILABLE)
    if type(exc).__module__.startswith("psycopg") and type(exc).__name__ == "OperationalError":
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and (
        sqlstate.startswith(_UNAVAILABLE_SQLSTATES)
        or (sqlstate == "55000" and "accepting connections" in str(exc))
    ):
        return True
    if type(exc).__module__.startswith("asyncpg") and type(exc).__name__ in (
        "InterfaceError", "ConnectionDoesNotExistError", "ConnectionFailureError",
    ):
        return True
    # Refused / unreachable / timed out while connecting: only when the driver raised it,
    # so a file error of our own never reads as a database outage.
    return isinstance(exc, OSError | TimeoutError) and _raised_by_driver(exc)


def database_unavailable(exc: BaseException) -> str | None:
    """A one-line reason when `exc` says the database cannot be reached or used right now
    (then the answer is 503 `database_unavailable`, not 500), else None. Never SQL: the
    reason is the driver's own first line."""
    found = [e for e in _chain(exc) if _is_unavailable(e)]
    if not found:
        return None
    innermost = found[-1]
    text = str(innermost).strip().split("\n", 1)[0]
    text = _DRIVER_ARGUMENT.sub(r"\1: ***", text)
    text = re.sub(r"^\([\w.]+\)\s*", "", text)  # SQLAlchemy's "(module.Class) " prefix
    return (text or type(innermost).__name__)[:160]


class Throttled:
    """A warning that would repeat on every request (an outage, a stale feed): logged at
    most once per `interval` seconds, with how many were left out since."""

    def __init__(self, log: logging.Logger, interval: float = 30.0) -> None:
        self._log = log
        self._interval = interval
        self._next = 0.0
        self._skipped = 0

    def warning(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now < self._next:
            self._skipped += 1
            return
        skipped, self._skipped, self._next = self._skipped, 0, now + self._interval
        suffix = f" ({skipped} more like it since the last line)" if skipped else ""
        self._log.warning(message + suffix, *args)


_OUTAGE_LOG = Throttled(logger)


def database_unavailable_answer(exc: BaseException, scope: Scope) -> DatabaseUnavailable | None:
    """The 503 for an unexpected error that is a database outage (logged, throttled)."""
    reason = database_unavailable(exc)
    if reason is None:
        return None
    _OUTAGE_LOG.warning(
        "database unavailable (%s %s answered 503 database_unavailable): %s",
        scope.get("method", "-"), escape_log(str(scope.get("path", ""))), escape_log(reason),
    )
    return DatabaseUnavailable()


def error_body(code: str, detail: Any) -> dict[str, Any]:
    return {"error": code, "detail": detail}


def _clean_validation_errors(errors: Any) -> list[dict[str, Any]]:
    # Never echo the submitted input back: it may hold a secret.
    cleaned = []
    for err in errors:
        item = {k: v for k, v in err.items() if k in ("loc", "msg", "type")}
        cleaned.append(item)
    return cleaned


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
}


# Path parameters declared with a range (`schemas.PathId`): a value outside it names no
# object, so it answers like a missing id.
_OUT_OF_RANGE = frozenset({"greater_than_equal", "less_than_equal", "greater_than", "less_than"})


def _path_out_of_range(errors: Sequence[Any]) -> bool:
    return any(
        err.get("type") in _OUT_OF_RANGE and tuple(err.get("loc", ()))[:1] == ("path",)
        for err in errors
    )


def _is_json(content_type: str | None) -> bool:
    """FastAPI's own test: only application/json and */*+json bodies are parsed as JSON."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def wrong_media_type(errors: Sequence[Any], content_type: str | None, path: str) -> str | None:
    """The 415 detail when the whole body was refused because it was not sent as JSON
    (FastAPI then says only "Input should be a valid dictionary…"), else None."""
    if _is_json(content_type) or not any(tuple(e.get("loc", ())) == ("body",) for e in errors):
        return None
    sent = f"it was sent as {content_type.split(';', 1)[0].strip()!r}" if content_type else (
        "none was sent"
    )
    expected = "Content-Type: application/json"
    if "/configs" in path:
        expected += " (or application/yaml for configs)"
    return f"send the body as JSON with the header {expected}; {sent}"


def _leaf_routes(routes: Sequence[Any]) -> Iterator[Any]:
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is None:
            yield route
        else:
            yield from _leaf_routes(included.routes)


def allowed_methods(app: Any, path: str) -> list[str]:
    """Every method some route of `app` answers at `path` (Starlette's own 405 names only
    the first route matching the path: `/profiles` said POST although GET is served)."""
    scope: Scope = {"type": "http", "path": path, "root_path": "", "method": "OPTIONS"}
    methods: set[str] = set()
    for route in _leaf_routes(app.router.routes):
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(dict(scope))[0] != Match.NONE:
            methods |= route_methods
    return sorted(methods)


# Driver messages may quote a parameter ("invalid input for query argument $1: <value>").
_DRIVER_ARGUMENT = re.compile(r"(query argument \$\d+)[^\n]*")


def _where(exc: BaseException) -> str:
    """The innermost frame of our own code: enough to find the bug without a traceback."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/edl_api/" in f.filename]
    if not frames:
        return "outside edl_api"
    frame = frames[-1]
    where = frame.filename[frame.filename.rfind("/edl_api/") + 1:]
    return f"{where}:{frame.lineno} in {frame.name}"


def _summary(exc: BaseException) -> str:
    # SQLAlchemy's str() carries the whole statement (searches made it thousands of lines);
    # the driver's exception (`orig`) says what went wrong in one line.
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().split("\n", 1)[0][:300]
    text = _DRIVER_ARGUMENT.sub(r"\1: ***", text)
    name = type(exc).__name__
    if cause is not exc:
        name = f"{name} ({type(cause).__module__}.{type(cause).__name__})"
    return f"{name}: {text}" if text else name


def log_unexpected(exc: BaseException, scope: Scope) -> str:
    """Log an unexpected error as ONE line (an id, the request, the error, our innermost
    frame; the traceback only at DEBUG, escaped into the same line) and return the id the
    500 body carries. Never SQL parameters: the engine hides them (`db.create_engine`)."""
    error_id = secrets.token_hex(6)
    logger.error(
        "unexpected error %s: %s %s: %s at %s", error_id, scope.get("method", "-"),
        escape_log(str(scope.get("path", ""))), _summary(exc), _where(exc),
        exc_info=exc if logger.isEnabledFor(logging.DEBUG) else None,
    )
    return error_id


def internal_error_body(error_id: str) -> dict[str, Any]:
    return {
        "error": "internal", "detail": "internal server error; the log has this error_id",
        "error_id": error_id,
    }


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.detail), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if _path_out_of_range(exc.errors()):
            return JSONResponse(error_body("not_found", "not found"), status_code=404)
        media = wrong_media_type(
            exc.errors(), request.headers.get("content-type"), request.url.path
        )
        if media is not None:
            return JSONResponse(error_body("unsupported_media_type", media), status_code=415)
        return JSONResponse(
            error_body("validation_error", _clean_validation_errors(exc.errors())),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else code
        headers = exc.headers
        if exc.status_code == 405:
            # OPTIONS included: no CORS layer answers it, so it is a method like any other.
            methods = allowed_methods(request.app, request.scope["path"])
            if methods:
                headers = {**(headers or {}), "Allow": ", ".join(methods)}
        return JSONResponse(error_body(code, detail), status_code=exc.status_code, headers=headers)

    # The catch-all (`middleware.UnexpectedErrors`) answers first; this one only sees an
    # error raised outside it, and Starlette re-raises after it (uvicorn logs that too).
    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        status, body, headers = unexpected_answer(exc, request.scope)
        return JSONResponse(body, status, headers=headers)


def unexpected_answer(
    exc: BaseException, scope: Scope
) -> tuple[int, dict[str, Any], dict[str, str] | None]:
    """(status, body, headers) for an error no handler knew: 503 `database_unavailable`
    when the database cannot be reached (a client retries; nothing is broken here), else a
    500 whose id is in the log line."""
    unavailable = database_unavailable_answer(exc, scope)
    if unavailable is not None:
        return 503, error_body(unavailable.code, unavailable.detail), unavailable.headers
    return 500, internal_error_body(log_unexpected(exc, scope)), None


class ErrorBody(BaseModel):
    """Every 4xx/5xx body."""

    error: str = Field(examples=["not_found"])
    detail: Any = Field(examples=["not found"])


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the error statuses a route can answer."""
    return {s: {"model": ErrorBody, "description": _DESCRIPTIONS[s]} for s in statuses}


_DESCRIPTIONS = {
    400: "the request body could not be read (not UTF-8 / not JSON at all)",
    401: "missing or unknown key (WWW-Authenticate set)",
    403: "the key is known but may not do this",
    404: "no such object in your scope (identical to a missing id)",
    409: "conflicts with the object's state",
    410: "gone: the object's bytes were pruned (its metadata remains)",
    413: "request body too large",
    415: "the body was not sent as JSON (Content-Type: application/json)",
    422: "validation failed (unknown fields, bad values, invalid config, JSON nested "
    "deeper than 32 levels)",
    429: "over a quota for now; retry after Retry-After seconds",
    503: "not available yet or for a moment; retry after Retry-After seconds",
}


API_ERRORS = error_responses(401, 403, 404, 422)


_ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorBody"}


def document_errors(schema: dict[str, Any]) -> None:
    """Complete FastAPI's schema: 400 (unreadable body), 413 (too large) and 415 (not
    JSON) on every operation that takes a body, as BodySizeLimit and the body parser answer
    them before any route runs; and error bodies as JSON everywhere (FastAPI files them under a text
    route's own media type: /metrics and the feeds said text/plain)."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "taxii" in operation.get("tags", ()):
                continue  # TAXII answers its own error messages (edl_api.taxii.router)
            responses = operation.setdefault("responses", {})
            if "requestBody" in operation:
                for status in (400, 413, 415):
                    responses.setdefault(str(status), {"description": _DESCRIPTIONS[status]})
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400:
                    response["content"] = {"application/json": {"schema": _ERROR_SCHEMA}}
