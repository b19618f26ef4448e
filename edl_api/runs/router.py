from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query, Request
from fastapi.responses import Response, StreamingResponse

from edl_api import idempotency
from edl_api.auth.deps import Caller, Writer
from edl_api.db import SessionDep
from edl_api.deps import DispatcherDep, SessionmakerDep, SettingsDep
from edl_api.errors import API_ERRORS, error_responses
from edl_api.idempotency import IdempotencyHeader
from edl_api.pagination import Page, PageDep
from edl_api.runs import logs, logstore, service
from edl_api.runs.schemas import (
    JobList,
    RunCancelled,
    RunCreate,
    RunCreated,
    RunDetail,
    RunSummary,
)
from edl_api.runs.state import FINISHED, RunState
from edl_api.schemas import DbId, PathId

router = APIRouter(tags=["runs"], responses=API_ERRORS)
CONFLICT = error_responses(409)
LAUNCH = error_responses(409, 429)

TAIL_MAX = 100_000


@router.post(
    "/runs", status_code=202, response_model=RunCreated, responses=LAUNCH,
    summary="Queue a run of a pipeline (idempotent with Idempotency-Key)",
    description="409 `pipeline_inactive` / `pipeline_deleted` for a pipeline that cannot run; "
    "429 `queue_full` (with `Retry-After`) when the profile already has "
    "`EDL_MAX_QUEUED_RUNS_PER_PROFILE` runs waiting. With `config` (YAML) and `mode: "
    "dry_run` it tries an unsaved config (422 `invalid_config` with line numbers, 422 "
    "`inline_config_needs_dry_run` without dry_run).",
)
async def create_run(
    body: RunCreate, principal: Writer, session: SessionDep, dispatcher: DispatcherDep,
    background: BackgroundTasks, settings: SettingsDep, idempotency_key: IdempotencyHeader = None,
) -> RunCreated:
    idem = idempotency.make_request(principal, "runs.create", idempotency_key, body)
    created = await service.create_run(
        session, principal, body, idem, max_queued=settings.max_queued_runs_per_profile,
        max_run_bytes=settings.run_max_bytes,
    )
    # Runs after the response, i.e. after the commit: the dispatcher sees the row.
    background.add_task(dispatcher.wake)
    return created


@router.post(
    "/runs/{run_id}/cancel", status_code=202, response_model=RunCancelled, responses=CONFLICT,
    summary="Cancel a queued run at once, or stop a running one within seconds",
)
async def cancel_run(
    run_id: PathId, principal: Writer, session: SessionDep, dispatcher: DispatcherDep,
    background: BackgroundTasks,
) -> RunCancelled:
    cancelled = await service.cancel_run(session, principal, run_id)
    background.add_task(dispatcher.wake)
    return cancelled


@router.get("/runs", response_model=Page[RunSummary], summary="List runs in scope, newest first")
async def list_runs(
    principal: Caller, session: SessionDep, page: PageDep,
    state: Annotated[RunState | None, Query()] = None,
    profile_id: Annotated[DbId | None, Query()] = None,
    pipeline_id: Annotated[DbId | None, Query()] = None,
    trigger: Annotated[str | None, Query(pattern="^(api|schedule)$")] = None,
) -> Page[RunSummary]:
    return await service.list_runs(
        session, principal, page, state=state, profile_id=profile_id,
        pipeline_id=pipeline_id, trigger=trigger,
    )


@router.get("/runs/{run_id}", response_model=RunDetail, summary="A run with its report")
async def get_run(run_id: PathId, principal: Caller, session: SessionDep) -> RunDetail:
    return await service.run_detail(session, principal, run_id)


@router.get(
    "/runs/{run_id}/logs", summary="The run's engine output (text/plain), optionally followed",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
async def run_logs(
    run_id: PathId, principal: Caller, session: SessionDep, request: Request,
    settings: SettingsDep, maker: SessionmakerDep,
    tail: Annotated[int | None, Query(ge=0, le=TAIL_MAX)] = None,
    follow: Annotated[bool, Query()] = False,
) -> Response:
    run = await service.get_run(session, principal, run_id)
    # The database copy is what every host reads; a run logged before it existed (or whose
    # database writes all failed) falls back to this host's files.
    in_db = await logstore.has_chunks(session, run_id)
    after = 0
    if in_db and tail is not None:
        start, after = await logstore.read_tail(session, run_id, tail)
    elif in_db:
        start, after = await logstore.read_all(session, run_id)
    elif tail is not None:
        start = await asyncio.to_thread(logs.read_tail, settings, run_id, tail)
    else:
        start = await asyncio.to_thread(logs.read_all, settings, run_id)
    media = "text/plain; charset=utf-8"
    if not follow or run.state in FINISHED:
        return Response(start, media_type=media)
    async def is_running() -> bool:
        if await request.is_disconnected():
            return False
        async with maker() as check:
            state = await service.run_state(check, run_id)
        return state is not None and state not in FINISHED

    # Only this host's file has lines (the database copy failed): follow the file. A run
    # with no lines anywhere yet is followed in the database, where they will land.
    local_only = not in_db and bool(start)
    stream = (
        logs.follow(settings, run_id, is_running, start) if local_only
        else logstore.follow(maker, run_id, is_running, start, after)
    )
    return StreamingResponse(
        stream, media_type=media,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/jobs", response_model=JobList, summary="Queued and running runs in scope")
async def list_jobs(
    principal: Caller, session: SessionDep,
    profile_id: Annotated[DbId | None, Query()] = None,
) -> JobList:
    return await service.list_jobs(session, principal, profile_id=profile_id)
