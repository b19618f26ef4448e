"""The job store's consumer: claims queued runs within the caps and sees each one through.

Claiming is `claim.py` (the database is the queue), the engine child is `child.py`,
finding runs whose owner died is `recovery.py`, publishing is `feeds.publish`. A claimed
run: its engine runs in its own process group, never in the event loop; cancel (seen by
polling `cancel_requested`, so it works across processes), timeout and shutdown stop
it. `state.outcome` decides the final state; a succeeded run with `persist` set is
handed to `feeds.publish.publish`; the dispatcher records what comes back, retrying
until the database takes it (`outcomes.py`: the outcome also waits in a file for a
restart). A watchdog resolves rows this process owns whose task is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from edl_api import idempotency
from edl_api.feeds.explain import store_record
from edl_api.feeds.publish import PublishOptions, PublishOutcome, publish
from edl_api.models import PipelineRun, utcnow
from edl_api.profiles import lifecycle
from edl_api.runs import outcomes, sourcestate
from edl_api.runs.child import EngineChild, RunControl, RunSanitiser, engine_settings
from edl_api.runs.claim import claim_runs
from edl_api.runs.logs import RunLog, Sanitiser
from edl_api.runs.outcomes import Outcome, failure_text
from edl_api.runs.reach import ReachError, load_reach
from edl_api.runs.recovery import interrupt_dead_runs, resolve_orphan_run, worker_identity
from edl_api.runs.service import public_worker_name
from edl_api.runs.state import RunState, outcome
from edl_api.settings import Settings

logger = logging.getLogger("edl_api.runs")

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 2.0
RECOVERY_SECONDS = 10.0
HOUSEKEEPING_SECONDS = 600.0  # idempotency records past their retention are deleted
WATCHDOG_SECONDS = 2.0  # how often rows of ours without a live task are looked for
# Outcomes retried from memory at once; past this, one waits in its file for the watchdog.
MAX_PENDING_OUTCOMES = 256
TICK_FAILURE_LOG_SECONDS = 60.0  # a failing tick (database down) is logged this often
SHUTDOWN_GRACE_SECONDS = 8.0
REPORT_MAX_BYTES = 8 * 1024 * 1024
# Stages whose transaction holds the run row until it commits: no heartbeat meanwhile.
LOCKED_STAGES = frozenset({"publishing", "indexing"})


def read_report(out_dir: Path) -> dict[str, Any]:
    """The engine's report.json ({} when there is none or it cannot be read)."""
    path = out_dir / "report.json"
    try:
        if path.stat().st_size > REPORT_MAX_BYTES:
            return {"error": "report too large"}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _short(exc: BaseException) -> str:
    """One line for api.log (no statement: SQLAlchemy's text carries it past line one)."""
    return f"{type(exc).__name__}: {exc}".split("\n", 1)[0][:300]


class _RunGone(Exception):
    """The claimed run was deleted before its engine started."""


class Dispatcher:
    def __init__(
        self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], *,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.identity = worker_identity()
        self.poll_seconds = poll_seconds
        self.sanitiser = Sanitiser(settings)
        self._wake = asyncio.Event()
        self._controls: dict[int, RunControl] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._claiming = False
        self._last_heartbeat = 0.0
        self._last_recovery = 0.0
        self._last_housekeeping = 0.0
        self._last_watchdog = 0.0
        self._pending: set[int] = set()  # runs whose outcome waits for the database
        self._failing_since: float | None = None
        self._failure_logged = 0.0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.recover()
        self._claiming = True
        self._last_recovery = time.monotonic()
        self._loop_task = asyncio.create_task(self._loop(), name="edl-dispatcher")
        logger.info("dispatcher %s started", self.identity)

    async def stop(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Stop claiming, end in-flight children within `grace`, mark them interrupted."""
        self._claiming = False
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for control in self._controls.values():
            control.request_stop("interrupted")
        tasks = list(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)
        logger.info("dispatcher %s stopped", self.identity)

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._tick_failed(exc)
            else:
                self._tick_worked()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can lose a cancel that
            # lands as its timeout fires, and stop() then waits on this task forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._wake.wait()
            self._wake.clear()

    def _tick_failed(self, exc: Exception) -> None:
        """Log a failing tick once, then every TICK_FAILURE_LOG_SECONDS (a database outage
        fails every tick; the loop keeps going and recovers by itself)."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
            logger.error("dispatcher tick failed (retrying every %g s): %s", self.poll_seconds,
                         f"{type(exc).__name__}: {exc}".split("\n", 1)[0][:300], exc_info=exc)
            self._failure_logged = now
        elif now - self._failure_logged >= TICK_FAILURE_LOG_SECONDS:
            self._failure_logged = now
            logger.warning("dispatcher tick still failing after %.0f s: %s",
                           now - self._failing_since,
                           f"{type(exc).__name__}: {exc}".split("\n", 1)[0][:300])

    def _tick_worked(self) -> None:
        if self._failing_since is not None:
            logger.warning("dispatcher tick works again after %.1f s",
                           time.monotonic() - self._failing_since)
            self._failing_since = None

    async def tick(self) -> None:
        now = time.monotonic()
        if now - self._last_watchdog >= WATCHDOG_SECONDS:
            self._last_watchdog = now
            await self.watchdog()
        if self._controls:
            await self._check_cancels()
            if now - self._last_heartbeat >= HEARTBEAT_SECONDS:
                self._last_heartbeat = now
                await self._heartbeat()
        if now - self._last_recovery >= RECOVERY_SECONDS:
            self._last_recovery = now
            await self.recover()
        if now - self._last_housekeeping >= HOUSEKEEPING_SECONDS:
            self._last_housekeeping = now
            await self.housekeeping()
        if self._claiming:
            for run_id in await self.claim():
                self._start_run(run_id)

    async def housekeeping(self) -> int:
        """Delete idempotency records older than EDL_IDEMPOTENCY_RETENTION_HOURS, and the
        profiles deleted more than EDL_DELETED_RETENTION_DAYS ago (each process may do it:
        the deletes are idempotent)."""
        async with self.sessionmaker() as session, session.begin():
            removed = await idempotency.prune(
                session, self.settings.idempotency_retention_hours
            )
        if removed:
            logger.info("deleted %d expired idempotency record(s)", removed)
        async with self.sessionmaker() as session, session.begin():
            purged = await lifecycle.purge_deleted(session, self.settings.deleted_retention_days)
        if purged:
            logger.info("purged deleted profile(s) %s (EDL_DELETED_RETENTION_DAYS=%s)",
                        purged, self.settings.deleted_retention_days)
        return removed

    # ------------------------------------------------------------------ claiming

    async def claim(self) -> list[int]:
        return await claim_runs(self.settings, self.sessionmaker, self.identity)

    # ------------------------------------------------------------------ running

    def _start_run(self, run_id: int) -> None:
        control = RunControl(run_id)
        self._controls[run_id] = control
        self._tasks[run_id] = asyncio.create_task(self._guarded(control), name=f"run-{run_id}")

    async def _guarded(self, control: RunControl) -> None:
        """Whatever happens to the run's task, its slot is freed; a run left without an
        outcome (a bug escaped `_execute`) is resolved by the watchdog."""
        try:
            await self._execute(control)
        except Exception:
            logger.exception("run %s: the run's task failed; the watchdog resolves it",
                             control.run_id)
        finally:
            self._controls.pop(control.run_id, None)
            self._tasks.pop(control.run_id, None)
            self.wake()  # a slot is free

    async def _execute(self, control: RunControl) -> None:
        run_id = control.run_id
        run_log = RunLog(self.settings, run_id, sessionmaker=self.sessionmaker)
        workdir = (self.settings.data_dir / "work" / f"run-{run_id}-{os.getpid()}").resolve()
        returncode: int | None = None
        failure: str | None = None
        time_limit = self.settings.run_timeout_seconds
        persist = False
        keep_state = False
        try:
            async with self.sessionmaker() as session:
                run = await session.get(PipelineRun, run_id)
                if run is None:  # deleted with its pipeline: nothing to run or record
                    raise _RunGone
                snapshot, persist = run.config_snapshot, run.persist
                # Only a full, persisted run moves its sources' cursors; every run reads them.
                keep_state = persist and run.mode == "full"
                state = await sourcestate.load(session, run.pipeline_id)
                time_limit = self._time_limit(run)
                await run_log.note(
                    f"{run.trigger} run, mode={run.mode}, persist={run.persist}, "
                    f"config {run.profile_config_id} v{run.config_version}, "
                    f"worker {public_worker_name(self.identity)}, time limit {time_limit:g} s"
                )
                # Its profile's secrets, grants and folder: nothing of another profile's.
                reach = await load_reach(session, self.settings, run.profile_id, snapshot)
            if reach.secrets:
                await run_log.note(f"secrets: {', '.join(sorted(reach.secrets))}")
            sanitiser = RunSanitiser(self.sanitiser, reach.secrets.values())
            child = EngineChild(control, run_log, sanitiser)
            workdir.mkdir(parents=True, exist_ok=True)
            state_file = workdir / sourcestate.STATE_FILE
            await asyncio.to_thread(sourcestate.write_file, state_file, state)
            await child.start(
                workdir, snapshot, engine_settings(self.settings, time_limit, reach), state_file
            )
            await self._record_pid(control)
            await run_log.note("engine started")
            returncode = await child.wait(time_limit)
            await run_log.note(f"engine exited with code {returncode}")
        except asyncio.CancelledError:
            control.request_stop("interrupted")
            failure = "the dispatcher stopped before the run finished"
        except _RunGone:
            failure = "gone"
        except ReachError as exc:
            failure = str(exc)
            await run_log.note(f"not started: {failure}")
        except Exception as exc:  # a full disk, the database gone: said without SQL
            failure = f"dispatcher error: {failure_text(exc, run_id, 'starting the run')}"
        try:
            if failure != "gone":
                await self._finish(control, returncode, failure, workdir / "out", run_log,
                                   time_limit, persist, keep_state)
        finally:
            run_log.close()
            # The out dir can hold hundreds of MB: unlink off the event loop.
            await asyncio.to_thread(shutil.rmtree, workdir, True)

    async def _record_pid(self, control: RunControl) -> None:
        run_id, pid = control.run_id, control.pid
        async with self.sessionmaker() as session, session.begin():
            await session.execute(
                update(PipelineRun)
                .where(col(PipelineRun.id) == run_id, col(PipelineRun.worker) == self.identity)
                .values(pid=pid, progress=control.progress())
            )

    async def _check_cancels(self) -> None:
        ids = list(self._controls)
        async with self.sessionmaker() as session:
            rows = (
                await session.execute(
                    select(col(PipelineRun.id), col(PipelineRun.state),
                           col(PipelineRun.cancel_requested))
                    .where(col(PipelineRun.id).in_(ids))
                )
            ).all()
        seen = set()
        for row_id, state, cancel_requested in rows:
            run_id = int(row_id or 0)
            seen.add(run_id)
            control = self._controls.get(run_id)
            if control is None:
                continue
            if cancel_requested:
                control.request_stop("cancelled")
            elif state != RunState.RUNNING:  # recovered elsewhere: stop working on it
                control.request_stop("interrupted")
        for run_id in set(ids) - seen:  # the run (or its pipeline) was deleted
            if (control := self._controls.get(run_id)) is not None:
                control.request_stop("cancelled")

    async def _heartbeat(self) -> None:
        now = utcnow()
        async with self.sessionmaker() as session, session.begin():
            for run_id, control in list(self._controls.items()):
                if control.stage in LOCKED_STAGES:
                    continue  # its own transaction holds the row until it commits
                await session.execute(
                    update(PipelineRun)
                    .where(col(PipelineRun.id) == run_id,
                           col(PipelineRun.worker) == self.identity,
                           col(PipelineRun.state) == RunState.RUNNING)
                    .values(heartbeat_at=now, progress=control.progress())
                )

    # ------------------------------------------------------------------ outcome

    async def _finish(
        self, control: RunControl, returncode: int | None, failure: str | None,
        out_dir: Path, run_log: RunLog, time_limit: float, persist: bool,
        keep_state: bool = False,
    ) -> None:
        """Decide the outcome, publish a succeeded run, record. Whether this worker still
        owns the run is checked where it writes (`publish`, `_record`)."""
        report = await asyncio.to_thread(read_report, out_dir)
        await store_record(self.sessionmaker, control.run_id, out_dir)  # explain, every run
        state, errors = outcome(control.reason, failure, returncode, report,
                                control.last_error or None)
        if state is RunState.TIMED_OUT:
            errors.append(f"timed out after {time_limit:g} s")
        if state is RunState.SUCCEEDED and keep_state:
            # Before publishing: the state holds every current entry, so a feed the guard
            # holds back loses nothing by the cursor having moved.
            await sourcestate.save(self.sessionmaker, control.run_id, out_dir)
        if state is RunState.SUCCEEDED and persist:
            published = await self._publish(control, run_log, out_dir, report)
            if published is None:
                return
            state, errors = published.state, [*errors, *published.errors]
        await self._record(control, state, errors, report, run_log)

    async def _publish(
        self, control: RunControl, run_log: RunLog, out_dir: Path, report: dict[str, Any]
    ) -> PublishOutcome | None:
        async def on_stage(stage: str, note: str) -> None:
            control.stage = stage
            await run_log.note(note)

        published = await publish(
            self.sessionmaker, control.run_id, out_dir, owner=self.identity,
            options=PublishOptions.from_report(report),
            keep_runs=self.settings.artifact_keep_runs, on_stage=on_stage,
        )
        if not published.owned:
            await run_log.note("no longer owned by this worker; not recorded")
            return None
        await run_log.note(f"publishing took {published.seconds:.1f} s")
        return published

    async def _record(
        self, control: RunControl, state: RunState, errors: list[str], report: dict[str, Any],
        run_log: RunLog,
    ) -> None:
        """Commit the run's final state, retrying until the database takes it.

        The outcome goes to its file first (a restart applies it), and the run log says the
        state before it is committed (whoever sees the final state sees the notes); a log
        write never raises, and is never made while the run's row is locked."""
        result = Outcome(control.run_id, self.identity, state,
                         [self.sanitiser.line(e) for e in errors], report)
        saved = await asyncio.to_thread(outcomes.save, self.settings, result)
        await run_log.note(str(state))
        control.stage = "recording"
        delay: float | None = None
        attempts = 0
        self._pending.add(control.run_id)
        try:
            while True:
                try:
                    run = await outcomes.record(self.sessionmaker, result, self.identity)
                    break
                except Exception as exc:
                    if not outcomes.is_transient(exc):
                        raise  # a bug: the watchdog applies the file
                    if saved and len(self._pending) > MAX_PENDING_OUTCOMES:
                        logger.warning("run %s: outcome not recorded (%s); %d outcomes "
                                       "pending, this one waits in its file", control.run_id,
                                       _short(exc), len(self._pending))
                        return
                    delay = outcomes.retry_delay(delay)
                    attempts += 1
                    if attempts % 20 == 1:  # the first failure, then about every 100 s
                        logger.warning("run %s: outcome %s not recorded yet (attempt %d: %s); "
                                       "retrying", control.run_id, state, attempts, _short(exc))
                    await asyncio.sleep(delay)
        finally:
            self._pending.discard(control.run_id)
        await asyncio.to_thread(outcomes.discard, self.settings, control.run_id)
        if run is None:
            await run_log.note("no longer owned by this worker; not recorded")
        elif delay is not None:
            logger.warning("run %s: outcome %s recorded after the database came back",
                           control.run_id, state)

    def _time_limit(self, run: PipelineRun) -> float:
        """The run's own timeout_seconds, else EDL_RUN_TIMEOUT_SECONDS."""
        return run.timeout_seconds or self.settings.run_timeout_seconds

    # ------------------------------------------------------------------ recovery

    async def recover(self) -> list[int]:
        """Interrupt runs whose owner died; kill their orphan children on this host."""
        return await interrupt_dead_runs(self.settings, self.sessionmaker, self.identity)

    async def watchdog(self) -> list[int]:
        """Resolve rows this process owns (`running`, worker = us) that no task of ours is
        running: their outcome file if they have one, else `interrupted`."""
        async with self.sessionmaker() as session:
            owned = (await session.execute(
                select(col(PipelineRun.id))
                .where(col(PipelineRun.state) == RunState.RUNNING,
                       col(PipelineRun.worker) == self.identity)
            )).scalars().all()
        resolved = []
        for run_id in (int(i) for i in owned if i is not None):
            if run_id in self._tasks:
                continue
            if await resolve_orphan_run(self.settings, self.sessionmaker, run_id,
                                        self.identity, "its task ended without an outcome"):
                resolved.append(run_id)
        if resolved:
            logger.warning("watchdog: resolved %d run(s) of this process that had no task: %s",
                           len(resolved), resolved)
        return resolved
