from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from sqlalchemy import text

from edl_api.auth.deps import AdminCaller, public
from edl_api.db import SessionDep
from edl_api.deps import EngineDep
from edl_api.errors import DatabaseUnavailable, ErrorBody, database_unavailable, error_responses
from edl_api.metrics import render as render_metrics

router = APIRouter(tags=["service"], dependencies=[Depends(public)])
metrics_router = APIRouter(tags=["service"])


class Health(BaseModel):
    status: str = "ok"


READY_TIMEOUT_SECONDS = 5


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
    responses={503: {"model": ErrorBody, "description": "`database_unavailable`: the "
                     "database is unreachable; `database` says why (also in `detail`)"}},
)
async def readyz(engine: EngineDep) -> Readiness | JSONResponse:
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:  # whatever it is, the answer is "not ready, and why"
        if isinstance(exc, TimeoutError) and database_unavailable(exc) is None:
            reason = f"no answer within {READY_TIMEOUT_SECONDS} s"
        else:
            reason = database_unavailable(exc) or type(exc).__name__
        database = f"unreachable: {reason}"
        return JSONResponse(
            {"status": "unavailable", "database": database,
             "error": DatabaseUnavailable.code, "detail": f"database {database}"},
            status_code=503, headers=DatabaseUnavailable.headers,
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
