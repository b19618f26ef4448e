"""The job store's consumer: claims queued runs within the caps and runs the engine.

Claiming is `claim.py` (the database is the queue); finding runs whose owner died is
`recovery.py`. Each claimed run executes `python -m edl_api.engine run …` in its own
process group, never in the event loop; its output is sanitised into the run log.
Cancel (seen by polling `cancel_requested`, so it works across processes), timeout
and shutdown terminate the group: SIGTERM, then SIGKILL after a grace period. Only a
child that exited 0, of a run neither cancelled nor timed out nor interrupted, with
`persist` set, is handed to the feed store's `publish_run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from edl_api import idempotency, metrics
from edl_api.feeds import store as feed_store
from edl_api.models import PipelineRun, utcnow
from edl_api.runs.claim import claim_runs
from edl_api.runs.logs import RunLog, Sanitiser
from edl_api.runs.recovery import interrupt_dead_runs, worker_identity
from edl_api.settings import Settings

logger = logging.getLogger("edl_api.runs")

# The child command; tests may point it at a stand-in engine.
ENGINE_COMMAND: list[str] | None = None
POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 2.0
RECOVERY_SECONDS = 10.0
HOUSEKEEPING_SECONDS = 600.0  # idempotency records past their retention are deleted
TERM_GRACE_SECONDS = 2.0
SHUTDOWN_GRACE_SECONDS = 8.0
REPORT_MAX_BYTES = 8 * 1024 * 1024


def _count_sources(snapshot: str) -> int | None:
    """How many sources the run's config has (for progress), or None if unreadable."""
    try:
        document = yaml.safe_load(snapshot)
    except yaml.YAMLError:
        return None
    sources = document.get("sources") if isinstance(document, dict) else None
    return len(sources) if isinstance(sources, list) else None


def _count_finished(run: PipelineRun, report: dict[str, Any]) -> None:
    """Prometheus: this process's finished runs, their duration, failed sources."""
    metrics.RUNS_FINISHED.labels(run.state, run.trigger).inc()
    if run.started_at is not None and run.finished_at is not None:
        seconds = (run.finished_at - run.started_at).total_seconds()
        metrics.RUN_DURATION.labels(run.state).observe(max(seconds, 0.0))
    failed = [s for s in report.get("sources") or [] if isinstance(s, dict) and s.get("error")]
    if failed:
        metrics.SOURCE_FETCH_FAILURES.inc(len(failed))


def engine_command() -> list[str]:
    return list(ENGINE_COMMAND or [sys.executable, "-m", "edl_api.engine"])


class _RunGone(Exception):
    """The claimed run was deleted before its engine started."""


@dataclass
class RunControl:
    run_id: int
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str | None = None  # cancelled | timed_out | interrupted
    lines: int = 0
    last_line: str = ""
    stage: str = "starting"
    pid: int | None = None
    sources_done: int = 0
    sources_total: int | None = None

    def progress(self) -> dict[str, Any]:
        return {
            "stage": self.stage, "sources_done": self.sources_done,
            "sources_total": self.sources_total, "lines": self.lines,
            "last_line": self.last_line,
        }

    def request_stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.stop.set()


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
        self._is_postgres = not settings.is_sqlite

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.recover(startup=True)
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

    @property
    def active_runs(self) -> list[int]:
        return list(self._tasks)

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
            await self.recover(startup=False)
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

    def _child_settings(self) -> str:
        source_dir = self.settings.source_dir
        return json.dumps({
            "ssrf_allow_cidrs": list(self.settings.ssrf_allow_cidrs),
            "ssrf_allow_hosts": list(self.settings.ssrf_allow_hosts),
            "source_dir": str(source_dir.resolve()) if source_dir is not None else None,
        })

    @staticmethod
    def _child_env() -> dict[str, str]:
        # The engine needs no API keys or database URL: only EDL_SECRET_* reach it.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("EDL_") or k.startswith("EDL_SECRET_")}
        env["PYTHONUNBUFFERED"] = "1"
        return env

    async def _execute(self, control: RunControl) -> None:
        run_id = control.run_id
        run_log = RunLog(self.settings, run_id)
        workdir = (self.settings.data_dir / "work" / f"run-{run_id}-{os.getpid()}").resolve()
        out_dir = workdir / "out"
        returncode: int | None = None
        failure: str | None = None
        try:
            async with self.sessionmaker() as session:
                run = await session.get(PipelineRun, run_id)
                if run is None:  # deleted with its pipeline: nothing to run or record
                    raise _RunGone
                snapshot = run.config_snapshot
                timeout = self._time_limit(run)
                control.sources_total = _count_sources(snapshot)
                await run_log.note(
                    f"{run.trigger} run, mode={run.mode}, persist={run.persist}, "
                    f"config {run.profile_config_id} v{run.config_version}, "
                    f"worker {self.identity}"
                )
            out_dir.mkdir(parents=True, exist_ok=True)
            config_file = workdir / "config.yaml"
            config_file.write_text(snapshot, encoding="utf-8")
            proc = await asyncio.create_subprocess_exec(
                *engine_command(), "run", "--config", str(config_file), "--out", str(out_dir),
                "--settings-json", self._child_settings(),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True,
                cwd=str(workdir), env=self._child_env(),
            )
            control.pid = proc.pid
            control.stage = "engine"
            await self._record_pid(control)
            await run_log.note(f"engine started (pid {proc.pid})")
            assert proc.stdout is not None
            pump = asyncio.create_task(self._pump(proc.stdout, run_log, control))
            returncode = await self._supervise(proc, control, timeout)
            try:
                async with asyncio.timeout(5):
                    await pump  # cancelled with us on timeout
            except TimeoutError:
                pump.cancel()
            await run_log.note(f"engine exited with code {returncode}")
        except asyncio.CancelledError:
            control.request_stop("interrupted")
            failure = "the dispatcher stopped before the run finished"
        except _RunGone:
            failure = "gone"
        except Exception as exc:
            logger.exception("run %s: dispatcher error", run_id)
            failure = f"dispatcher error: {type(exc).__name__}"
        try:
            if failure != "gone":
                await self._finish(control, returncode, failure, out_dir, run_log)
        except Exception:
            logger.exception("run %s: could not record the outcome", run_id)
        finally:
            run_log.close()
            # The out dir can hold hundreds of MB: unlink off the event loop.
            await asyncio.to_thread(shutil.rmtree, workdir, True)
            self._controls.pop(run_id, None)
            self._tasks.pop(run_id, None)
            self.wake()  # a slot is free

    async def _supervise(
        self, proc: asyncio.subprocess.Process, control: RunControl, timeout: float
    ) -> int:
        waiter = asyncio.create_task(proc.wait())
        stopper = asyncio.create_task(control.stop.wait())
        try:
            done, _ = await asyncio.wait(
                {waiter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if waiter not in done:
                control.request_stop("timed_out")
                await self._terminate(proc)
            return await waiter
        except asyncio.CancelledError:
            control.request_stop("interrupted")
            await asyncio.shield(self._terminate(proc))
            raise
        finally:
            stopper.cancel()

    @staticmethod
    async def _terminate(proc: asyncio.subprocess.Process) -> None:
        """SIGTERM the child's group, SIGKILL it after a grace period."""
        if proc.returncode is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TERM_GRACE_SECONDS):
                await asyncio.shield(proc.wait())
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()

    async def _pump(
        self, stream: asyncio.StreamReader, run_log: RunLog, control: RunControl
    ) -> None:
        pending = b""
        while True:
            chunk = await stream.read(64 * 1024)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if len(pending) > 64 * 1024:  # a runaway line without a newline
                lines.append(pending)
                pending = b""
            for raw in lines:
                await self._log_line(raw, run_log, control)
            run_log.flush()
        if pending:
            await self._log_line(pending, run_log, control)
        run_log.flush()

    async def _log_line(self, raw: bytes, run_log: RunLog, control: RunControl) -> None:
        line = self.sanitiser.line(raw)
        if not line:
            return
        control.lines += 1
        control.last_line = line[:300]
        # The engine logs "<timestamp> stage <name>"; the job view shows the stage.
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] == "stage":
            control.stage = parts[2][:40]
        elif len(parts) == 3 and parts[1] == "fetched":  # one line per fetched source
            control.sources_done += 1
        await run_log.write(line)

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
            elif state != "running":  # recovered elsewhere: stop working on it
                control.request_stop("interrupted")
        for run_id in set(ids) - seen:  # the run (or its pipeline) was deleted
            if (control := self._controls.get(run_id)) is not None:
                control.request_stop("cancelled")

    async def _heartbeat(self) -> None:
        now = utcnow()
        async with self.sessionmaker() as session, session.begin():
            for run_id, control in list(self._controls.items()):
                if control.stage in ("publishing", "indexing"):
                    continue  # its own transaction holds the row until it commits
                await session.execute(
                    update(PipelineRun)
                    .where(col(PipelineRun.id) == run_id,
                           col(PipelineRun.worker) == self.identity,
                           col(PipelineRun.state) == "running")
                    .values(heartbeat_at=now, progress=control.progress())
                )

    # ------------------------------------------------------------------ outcome

    def _read_report(self, out_dir: Path) -> dict[str, Any]:
        path = out_dir / "report.json"
        try:
            if path.stat().st_size > REPORT_MAX_BYTES:
                return {"error": "report too large"}
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _source_errors(self, report: dict[str, Any]) -> list[str]:
        errors = []
        for source in report.get("sources") or []:
            if isinstance(source, dict) and source.get("error"):
                name = self.sanitiser.line(str(source.get("name")))
                errors.append(f"source {name}: {self.sanitiser.line(str(source['error']))}")
        return errors

    async def _finish(
        self, control: RunControl, returncode: int | None, failure: str | None,
        out_dir: Path, run_log: RunLog,
    ) -> None:
        run_id = control.run_id
        report = await asyncio.to_thread(self._read_report, out_dir)
        errors = self._source_errors(report)
        reason = control.reason
        if reason == "cancelled":
            state = "cancelled"
        elif reason == "timed_out":
            state = "timed_out"
        elif reason == "interrupted":
            state = "interrupted"
            errors.append(failure or "the service shut down while the run was running")
        elif failure is not None:
            state = "failed"
            errors.append(failure)
        elif returncode == 0:
            state = "succeeded"
        elif returncode == 2:
            state = "failed"
            if not errors:
                errors.append("a required source failed")
        else:
            state = "failed"
            errors.append(f"engine exited with code {returncode}; see the run log")
        publish_started: float | None = None
        async with self.sessionmaker() as session:
            run = await self._own_run(session, run_id)
            if run is None:
                await run_log.note("no longer owned by this worker; not recorded")
                return
            if state == "timed_out":
                errors.append(f"timed out after {self._time_limit(run):g} s")
            self._apply(run, state, report, errors)
            if state == "succeeded" and run.persist:
                control.stage = "publishing"
                await run_log.note(f"storing artifacts (mode={run.mode})")
                publish_started = time.monotonic()
                feeds_live = False
                try:
                    pending = await feed_store.publish_feeds(session, run, out_dir)
                    if pending is not None:
                        # The feeds go live now; the run ends once the indicator store
                        # (search, provenance) has followed, in a second transaction.
                        run = await self._commit_feeds(session, run, control, run_log,
                                                       publish_started)
                        feeds_live = True
                        if run is None:
                            return
                        await feed_store.write_indicators(session, run, pending)
                    await session.flush()
                except Exception as exc:
                    logger.exception("run %s: publishing failed", run_id)
                    await session.rollback()
                    run = await self._own_run(session, run_id)
                    if run is None:
                        return
                    detail = self.sanitiser.line(f"{type(exc).__name__}: {exc}")[:300]
                    if feeds_live:  # what is served is this run's: it succeeded
                        feeds = (run.counts or {}).get("feeds")
                        self._apply(run, "succeeded", report, [
                            *errors, f"indicator store not updated: {detail} "
                            "(search shows the previous run's entries until the next run)",
                        ])
                        run.counts = {**run.counts, "feeds": feeds}
                    else:
                        self._apply(run, "failed", report,
                                    [*errors, f"publishing failed: {detail}"])
            # The notes go first: whoever sees the final state (GET logs, follow) sees them.
            if publish_started is not None:
                await run_log.note(
                    f"publishing took {time.monotonic() - publish_started:.1f} s"
                )
            await run_log.note(run.state)
            await session.commit()
        _count_finished(run, report)
        if run.persist:
            await self._prune_artifacts(run)

    def _time_limit(self, run: PipelineRun) -> float:
        """The run's own timeout_seconds, else EDL_RUN_TIMEOUT_SECONDS."""
        return run.timeout_seconds or self.settings.run_timeout_seconds

    async def _prune_artifacts(self, run: PipelineRun) -> None:
        """Drop old runs' artifact bytes once this run is recorded (its own transaction:
        a failure here is logged and never changes the run's outcome)."""
        try:
            async with self.sessionmaker() as session, session.begin():
                pruned = await feed_store.prune_artifacts(
                    session, run.pipeline_id, self.settings.artifact_keep_runs
                )
        except Exception:
            logger.exception("run %s: pruning old artifacts failed", run.id)
            return
        if pruned:
            logger.info("pipeline %s: dropped the bytes of %d old artifact(s)",
                        run.pipeline_id, pruned)

    async def _commit_feeds(
        self, session: AsyncSession, run: PipelineRun, control: RunControl, run_log: RunLog,
        started: float,
    ) -> PipelineRun | None:
        """Commit the repointed feeds with the run still `running` (stage `indexing`),
        then take the run row again with its final state restored."""
        assert run.id is not None
        final = (run.state, run.finished_at, run.progress)
        run.state, run.finished_at = "running", None
        run.progress = {**run.progress, "stage": "indexing"}
        control.stage = "indexing"
        await run_log.note(
            f"feeds live after {time.monotonic() - started:.1f} s; updating the indicator store"
        )
        await session.commit()
        owned = await self._own_run(session, run.id)
        if owned is not None:
            owned.state, owned.finished_at, owned.progress = final
        return owned

    async def _own_run(self, session: AsyncSession, run_id: int) -> PipelineRun | None:
        run = (
            await session.execute(
                select(PipelineRun).where(col(PipelineRun.id) == run_id).with_for_update()
            )
        ).scalar_one_or_none()
        if run is None or run.state != "running" or run.worker != self.identity:
            return None
        return run

    @staticmethod
    def _apply(run: PipelineRun, state: str, report: dict[str, Any], errors: list[str]) -> None:
        run.state = state
        run.finished_at = utcnow()
        run.report = report
        counts = report.get("counts")
        run.counts = counts if isinstance(counts, dict) else {}
        run.errors = [*run.errors, *errors]
        run.pid = None
        run.progress = {**run.progress, "stage": "finished"}

    # ------------------------------------------------------------------ recovery

    async def recover(self, *, startup: bool = False) -> list[int]:
        """Interrupt runs whose owner died; kill their orphan children on this host."""
        return await interrupt_dead_runs(self.settings, self.sessionmaker, self.identity)
