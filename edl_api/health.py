from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from sqlalchemy import text

from edl_api.auth.deps import AdminCaller, public
from edl_api.db import SessionDep
from edl_api.deps import EngineDep
from edl_api.errors import ErrorBody, error_responses
from edl_api.metrics import render as render_metrics

router = APIRouter(tags=["service"], dependencies=[Depends(public)])
metrics_router = APIRouter(tags=["service"])


class Health(BaseModel):
    status: str = "ok"


class Readiness(BaseModel):
    status: str = "ok"
    database: str = "ok"


@router.get("/healthz", summary="Liveness: the process answers", response_model=Health)
async def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    summary="Readiness: the database answers",
    response_model=Readiness,
    responses={503: {"model": ErrorBody, "description": "database unreachable"}},
)
async def readyz(engine: EngineDep) -> Readiness | JSONResponse:
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return JSONResponse(
            {"error": "not_ready", "detail": "database unreachable"}, status_code=503
        )
    return Readiness()


@metrics_router.get(
    "/metrics",
    summary="Prometheus metrics (admin key; tenant figures limited to its scope)",
    description="Database figures (`edl_runs`, `edl_queue_depth`, `edl_published_entries`) "
    "cover the caller's profiles; this process's counters (feed requests, finished runs, "
    "source failures of every tenant) are shown only to super-admins and legacy global keys.",
    response_class=PlainTextResponse,
    responses=error_responses(401, 403),
)
async def metrics(principal: AdminCaller, session: SessionDep) -> PlainTextResponse:
    return PlainTextResponse(
        await render_metrics(session, principal), media_type=CONTENT_TYPE_LATEST
    )
