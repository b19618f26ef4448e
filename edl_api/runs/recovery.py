"""Which `running` runs lost their owner, and cleaning up after them.

A worker is `host:pid:start`. On the same host the owner is alive when that pid exists
with that start time (a reused pid does not count); on another host only the
heartbeat can tell, and it is stale after STALE_AFTER_SECONDS. A dead owner's run
becomes `interrupted` and, on this host, its engine child (still running in its own
process group after a kill -9 of the parent) is killed — only after its command line
proves it is that run's engine. An outcome the dead worker decided but could not commit
(`outcomes.py`'s file) is applied instead. Runs of this process are the dispatcher's
watchdog's (`resolve_orphan_run`): a live owner whose task is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
from datetime import timedelta

import psutil
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from edl_api.alerts import events as alert_events
from edl_api.feeds.publish import state_after_owner_died
from edl_api.models import PipelineRun, utcnow
from edl_api.runs import outcomes
from edl_api.runs.logs import RunLog
from edl_api.runs.retry import retry_interrupted
from edl_api.runs.state import RunState, check_transition
from edl_api.settings import Settings

logger = logging.getLogger("edl_api.runs")

STALE_AFTER_SECONDS = 30.0


def _process_start(pid: int) -> int | None:
    try:
        return int(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        return None


def worker_identity(pid: int | None = None) -> str:
    """host:pid:start of this process (or of another local `pid`) — unique per process, and
    checkable for liveness on the same host."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_process_start(pid) or 0}"


def owner_is_dead(worker: str | None) -> bool | None:
    """True/False for a worker on this host, None when it lives elsewhere (use heartbeat)."""
    if not worker:
        return True
    parts = worker.rsplit(":", 2)
    if len(parts) != 3:
        return True
    host, pid_text, start_text = parts
    if host != socket.gethostname():
        return None
    try:
        pid, start = int(pid_text), int(start_text)
    except ValueError:
        return True
    started = _process_start(pid)
    return started is None or abs(started - start) > 1


def kill_orphan_child(run_id: int, pid: int | None) -> bool:
    """Kill a dead owner's engine child (and its group) if it is still there."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        cmdline = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    # Only a process that is provably that run's engine: never a reused pid.
    if not any(f"run-{run_id}-" in part for part in cmdline):
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
        proc.kill()
    with contextlib.suppress(psutil.Error):
        proc.wait(timeout=3)
    return True


async def apply_outcome_file(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], run_id: int,
    worker: str,
) -> bool:
    """The outcome `worker` decided for the run but could not commit (its file, written
    before the database was tried): applied while `worker` still holds the run."""
    found = await asyncio.to_thread(outcomes.load, settings, run_id)
    if found is None or found.worker != worker:
        return False
    run = await outcomes.record(sessionmaker, found, worker)
    await asyncio.to_thread(outcomes.discard, settings, run_id)
    if run is None:
        return False
    logger.warning("run %s: applied the outcome %s its worker %s left in its file",
                   run_id, found.state, worker)
    run_log = RunLog(settings, run_id, sessionmaker=sessionmaker)
    await run_log.note(f"{found.state} (recorded from the outcome worker {worker} left)")
    await run_log.aclose()
    return True


async def resolve_orphan_run(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], run_id: int,
    worker: str, reason: str,
) -> bool:
    """A `running` run of `worker` that nothing runs any more (the watchdog's case: its
    owner is alive but its task is gone): its outcome file, else what `state_after_owner_died`
    says, with `reason` when that is `interrupted`."""
    if await apply_outcome_file(settings, sessionmaker, run_id, worker):
        return True
    async with sessionmaker() as session, session.begin():
        state, error = await state_after_owner_died(session, run_id, worker)
        if state is RunState.INTERRUPTED:
            error = reason
        result = await session.execute(
            update(PipelineRun)
            .where(col(PipelineRun.id) == run_id, col(PipelineRun.state) == RunState.RUNNING,
                   col(PipelineRun.worker) == worker)
            .values(state=state, finished_at=utcnow(), pid=None, errors=[error],
                    progress={"stage": "finished"})
        )
        if result.rowcount:  # type: ignore[attr-defined]
            await alert_events.run_ended(session, run_id)
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    check_transition(run_id, RunState.RUNNING, state)
    run_log = RunLog(settings, run_id, sessionmaker=sessionmaker)
    await run_log.note(f"{state} ({reason})")
    await run_log.aclose()
    return True


async def interrupt_dead_runs(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], identity: str
) -> list[int]:
    """Interrupt runs whose owner died; kill their orphan children on this host."""
    stale_before = utcnow() - timedelta(seconds=STALE_AFTER_SECONDS)
    async with sessionmaker() as session:
        rows = (
            await session.execute(
                select(col(PipelineRun.id), col(PipelineRun.worker), col(PipelineRun.pid),
                       col(PipelineRun.heartbeat_at))
                .where(col(PipelineRun.state) == RunState.RUNNING)
            )
        ).all()
    recovered: list[int] = []
    for row_id, worker, pid, heartbeat_at in rows:
        run_id = int(row_id or 0)
        if worker == identity:
            continue
        dead = owner_is_dead(worker)
        if dead is None:  # another host: only the heartbeat can tell
            dead = heartbeat_at is None or heartbeat_at < stale_before
        if not dead:
            continue
        if owner_is_dead(worker) is not None:
            killed = await asyncio.to_thread(kill_orphan_child, run_id, pid)
            if killed:
                logger.warning("run %s: killed orphan engine pid %s", run_id, pid)
            for stale in (settings.data_dir / "work").glob(f"run-{run_id}-*"):
                shutil.rmtree(stale, ignore_errors=True)
            # What the dead worker decided but could not commit beats "interrupted".
            if await apply_outcome_file(settings, sessionmaker, run_id, str(worker)):
                recovered.append(run_id)
                continue
        async with sessionmaker() as session, session.begin():
            state, error = await state_after_owner_died(session, run_id, worker)
            result = await session.execute(
                update(PipelineRun)
                .where(col(PipelineRun.id) == run_id, col(PipelineRun.state) == RunState.RUNNING,
                       col(PipelineRun.worker) == worker)
                .values(state=state, finished_at=utcnow(), pid=None, errors=[error])
            )
            if result.rowcount:  # type: ignore[attr-defined]
                await alert_events.run_ended(session, run_id)
        if result.rowcount:  # type: ignore[attr-defined]
            check_transition(run_id, RunState.RUNNING, state)
            recovered.append(run_id)
            retried = await retry_interrupted(sessionmaker, [run_id], settings.retry_interrupted)
            then = f"; retried as run {retried[run_id]}" if run_id in retried else ""
            run_log = RunLog(settings, run_id, sessionmaker=sessionmaker)
            await run_log.note(f"{state} (worker {worker} is gone){then}")
            await run_log.aclose()
    if recovered:
        logger.warning("interrupted %d run(s) left by dead workers: %s",
                       len(recovered), recovered)
    return recovered
