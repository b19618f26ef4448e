"""The job store's consumer: claims queued runs within the caps and sees each one through.

Claiming is `claim.py` (the database is the queue), the engine child is `child.py`,
finding runs whose owner died is `recovery.py`, publishing is `feeds.publish`. A claimed
run: its engine runs in its own process group, never in the event loop; cancel (seen by
polling `cancel_requested`, so it works across processes), timeout and shutdown stop
it. `state.outcome` decides the final state; a succeeded run with `persist` set is
handed to `feeds.publish.publish`; the dispatcher records what comes back.
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

from edl_api import idempotency, metrics
from edl_api.feeds.publish import PublishOptions, PublishOutcome, publish
from edl_api.models import PipelineRun, utcnow
from edl_api.runs.child import EngineChild, RunControl, RunSanitiser, engine_settings
from edl_api.runs.claim import claim_runs, owned_run
from edl_api.runs.logs import RunLog, Sanitiser
from edl_api.runs.reach import ReachError, load_reach
from edl_api.runs.recovery import interrupt_dead_runs, worker_identity
from edl_api.runs.service import public_worker_name
from edl_api.runs.state import RunState, check_transition, outcome
from edl_api.settings import Settings

logger = logging.getLogger("edl_api.runs")

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 2.0
RECOVERY_SECONDS = 10.0
HOUSEKEEPING_SECONDS = 600.0  # idempotency records past their retention are deleted
SHUTDOWN_GRACE_SECONDS = 8.0
REPORT_MAX_BYTES = 8 * 1024 * 1024
# Stages whose transaction holds the run row until it commits: no heartbeat meanwhile.
LOCKED_STAGES = frozenset({"publishing", "indexing"})


def _count_finished(run: PipelineRun, report: dict[str, Any]) -> None:
    """Prometheus: this process's finished runs, their duration, failed sources."""
    metrics.RUNS_FINISHED.labels(run.state, run.trigger).inc()
    if run.started_at is not None and run.finished_at is not None:
        seconds = (run.finished_at - run.started_at).total_seconds()
        metrics.RUN_DURATION.labels(run.state).observe(max(seconds, 0.0))
    failed = [s for s in report.get("sources") or [] if isinstance(s, dict) and s.get("error")]
    if failed:
        metrics.SOURCE_FETCH_FAILURES.inc(len(failed))


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
            except Exception:
                logger.exception("dispatcher tick failed")
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can lose a cancel that
            # lands as its timeout fires, and stop() then waits on this task forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._wake.wait()
            self._wake.clear()

    async def tick(self) -> None:
        now = time.monotonic()
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
        """Delete idempotency records older than EDL_IDEMPOTENCY_RETENTION_HOURS (each
        process may do it: the delete is idempotent)."""
        async with self.sessionmaker() as session, session.begin():
            removed = await idempotency.prune(
                session, self.settings.idempotency_retention_hours
            )
        if removed:
            logger.info("deleted %d expired idempotency record(s)", removed)
        return removed

    # ------------------------------------------------------------------ claiming

    async def claim(self) -> list[int]:
        return await claim_runs(self.settings, self.sessionmaker, self.identity)

    # ------------------------------------------------------------------ running

    def _start_run(self, run_id: int) -> None:
        control = RunControl(run_id)
        self._controls[run_id] = control
        self._tasks[run_id] = asyncio.create_task(self._execute(control), name=f"run-{run_id}")

    async def _execute(self, control: RunControl) -> None:
        run_id = control.run_id
        run_log = RunLog(self.settings, run_id)
        workdir = (self.settings.data_dir / "work" / f"run-{run_id}-{os.getpid()}").resolve()
        returncode: int | None = None
        failure: str | None = None
        time_limit = self.settings.run_timeout_seconds
        persist = False
        try:
            async with self.sessionmaker() as session:
                run = await session.get(PipelineRun, run_id)
                if run is None:  # deleted with its pipeline: nothing to run or record
                    raise _RunGone
                snapshot, persist = run.config_snapshot, run.persist
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
            await child.start(
                workdir, snapshot, engine_settings(self.settings, time_limit, reach)
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
        except Exception as exc:
            logger.exception("run %s: dispatcher error", run_id)
            failure = f"dispatcher error: {type(exc).__name__}"
        try:
            if failure != "gone":
                await self._finish(control, returncode, failure, workdir / "out", run_log,
                                   time_limit, persist)
        except Exception:
            logger.exception("run %s: could not record the outcome", run_id)
        finally:
            run_log.close()
            # The out dir can hold hundreds of MB: unlink off the event loop.
            await asyncio.to_thread(shutil.rmtree, workdir, True)
            self._controls.pop(run_id, None)
            self._tasks.pop(run_id, None)
            self.wake()  # a slot is free

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
    ) -> None:
        """Decide the outcome, publish a succeeded run, record. Whether this worker still
        owns the run is checked where it writes (`publish`, `_record`)."""
        report = await asyncio.to_thread(read_report, out_dir)
        state, errors = outcome(control.reason, failure, returncode, report)
        if state is RunState.TIMED_OUT:
            errors.append(f"timed out after {time_limit:g} s")
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
        """Commit the run's final state (the run log says it first: whoever sees the final
        state, GET logs or follow, sees the notes)."""
        async with self.sessionmaker() as session:
            run = await owned_run(session, control.run_id, self.identity)
            if run is None:
                await run_log.note("no longer owned by this worker; not recorded")
                return
            run.state = check_transition(run.id, run.state, state)
            run.finished_at = utcnow()
            run.report = report
            engine_counts = report.get("counts")
            counts = dict(engine_counts) if isinstance(engine_counts, dict) else {}
            if state is not RunState.SUCCEEDED and isinstance(counts.get("published"), dict):
                # The engine counted what it built; a run that did not succeed published none.
                counts["published"] = dict.fromkeys(counts["published"], 0)
            # Publishing already wrote the feeds' and the indicator store's summaries.
            run.counts = {**counts, **run.counts}
            run.errors = [*run.errors, *(self.sanitiser.line(e) for e in errors)]
            run.pid = None
            run.progress = {**run.progress, "stage": "finished"}
            await run_log.note(run.state)
            await session.commit()
        _count_finished(run, report)

    def _time_limit(self, run: PipelineRun) -> float:
        """The run's own timeout_seconds, else EDL_RUN_TIMEOUT_SECONDS."""
        return run.timeout_seconds or self.settings.run_timeout_seconds

    # ------------------------------------------------------------------ recovery

    async def recover(self) -> list[int]:
        """Interrupt runs whose owner died; kill their orphan children on this host."""
        return await interrupt_dead_runs(self.settings, self.sessionmaker, self.identity)
