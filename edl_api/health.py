from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from edl_api.auth.deps import AdminCaller, public
from edl_api.db import SessionDep
from edl_api.errors import error_responses
from edl_api.metrics import render as render_metrics

router = APIRouter(tags=["service"], dependencies=[Depends(public)])
metrics_router = APIRouter(tags=["service"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the database answers", response_model=None)
async def readyz(request: Request) -> JSONResponse | dict[str, str]:
    try:
        async with request.app.state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return JSONResponse(
            {"error": "not_ready", "detail": "database unreachable"}, status_code=503
        )
    return {"status": "ok", "database": "ok"}


@metrics_router.get(
    "/metrics",
    summary="Prometheus metrics (admin key; tenant figures limited to its scope)",
    response_class=PlainTextResponse,
    responses=error_responses(401, 403),
)
async def metrics(principal: AdminCaller, session: SessionDep) -> PlainTextResponse:
    return PlainTextResponse(
        await render_metrics(session, principal), media_type=CONTENT_TYPE_LATEST
    )
