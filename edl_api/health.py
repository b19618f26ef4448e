from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from edl_api.auth.deps import public

router = APIRouter(tags=["service"], dependencies=[Depends(public)])


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
