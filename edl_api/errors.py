"""One error path: services raise AppError subclasses; one handler renders the envelope."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

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


class Unauthorized(AppError):
    code = "unauthorized"
    status_code = 401

    def __init__(self, detail: Any = "missing or invalid API key", *, basic: bool = False) -> None:
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


class ServiceUnavailable(AppError):
    """Not available yet or for a moment; subclasses say when to retry (Retry-After)."""

    code = "service_unavailable"
    status_code = 503


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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.detail), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            error_body("validation_error", _clean_validation_errors(exc.errors())),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else code
        return JSONResponse(
            error_body(code, detail), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error: %s", type(exc).__name__)
        return JSONResponse(error_body("internal_error", "internal server error"), 500)


class ErrorBody(BaseModel):
    """Every 4xx/5xx body."""

    error: str = Field(examples=["not_found"])
    detail: Any = Field(examples=["not found"])


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the error statuses a route can answer."""
    descriptions = {
        401: "missing or unknown key (WWW-Authenticate set)",
        403: "the key is known but may not do this",
        404: "no such object in your scope (identical to a missing id)",
        409: "conflicts with the object's state",
        410: "gone: the object's bytes were pruned (its metadata remains)",
        413: "request body too large",
        422: "validation failed (unknown fields, bad values, invalid config)",
        503: "not available yet or for a moment; retry after Retry-After seconds",
    }
    return {s: {"model": ErrorBody, "description": descriptions[s]} for s in statuses}


API_ERRORS = error_responses(401, 403, 404, 422)
