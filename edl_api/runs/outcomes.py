"""A run's outcome always lands: decided once, kept on disk, committed when the database can.

The dispatcher decides an `Outcome` (state, errors, report) when a run's engine is done,
writes it to `DATA_DIR/work/outcome-run-<id>.json` (next to the run's work folder), then
commits it, retrying with backoff (`RETRY_FIRST_SECONDS` doubling to `RETRY_CAP_SECONDS`)
while the database refuses. The file is removed once the row took it. A restart (recovery
of a dead owner's run) or this process's watchdog (a run of ours whose task is gone)
applies the file instead of calling the run `interrupted`.

`failure_text` is the one way a run's `errors` describe an exception: a database error
says "database unavailable while publishing (error id …)", never its SQL or driver class;
the whole detail goes to api.log under that id.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from edl_api import metrics
from edl_api.alerts import events as alert_events
from edl_api.errors import database_unavailable, log_unexpected
from edl_api.models import PipelineRun, utcnow
from edl_api.runs.claim import owned_run
from edl_api.runs.state import RunState, check_transition
from edl_api.settings import Settings

logger = logging.getLogger("edl_api.runs")

RETRY_FIRST_SECONDS = 0.5
# Small enough that a run lands within a few seconds of the database coming back.
RETRY_CAP_SECONDS = 5.0
OUTCOME_FILE_MAX_BYTES = 16 * 1024 * 1024


@dataclass
class Outcome:
    """What a run ended with, as the dispatcher decided it (errors already sanitised)."""

    run_id: int
    worker: str
    state: RunState
    errors: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    finished_at: datetime = field(default_factory=utcnow)

    def to_json(self) -> str:
        return json.dumps({
            "run_id": self.run_id, "worker": self.worker, "state": str(self.state),
            "errors": self.errors, "report": self.report,
            "finished_at": self.finished_at.isoformat(),
        })

    @classmethod
    def from_json(cls, text: str) -> Outcome:
        data = json.loads(text)
        return cls(
            run_id=int(data["run_id"]), worker=str(data["worker"]),
            state=RunState(data["state"]),
            errors=[str(e) for e in data.get("errors") or []],
            report=data.get("report") if isinstance(data.get("report"), dict) else {},
            finished_at=datetime.fromisoformat(data["finished_at"]),
        )


# --------------------------------------------------------------------------- the file


def outcome_path(settings: Settings, run_id: int) -> Path:
    # Not `run-<id>-*`: that is the work folder, which is removed before the outcome lands.
    return settings.data_dir / "work" / f"outcome-run-{run_id}.json"


def save(settings: Settings, outcome: Outcome) -> bool:
    """Write the outcome file atomically; False (logged) when the disk refuses — the
    outcome is still retried from memory."""
    path = outcome_path(settings, outcome.run_id)
    tmp = path.with_suffix(".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(outcome.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except (OSError, TypeError, ValueError) as exc:
        logger.warning("run %s: could not write %s (%s); the outcome is kept in memory",
                       outcome.run_id, path, f"{type(exc).__name__}: {exc}"[:200])
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return False
    return True


def load(settings: Settings, run_id: int) -> Outcome | None:
    """The run's outcome file, or None when there is none or it cannot be read."""
    path = outcome_path(settings, run_id)
    try:
        if path.stat().st_size > OUTCOME_FILE_MAX_BYTES:
            return None
        outcome = Outcome.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("run %s: unreadable outcome file %s: %s", run_id, path, exc)
        return None
    return outcome if outcome.run_id == run_id else None


def discard(settings: Settings, run_id: int) -> None:
    try:
        outcome_path(settings, run_id).unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("run %s: could not remove its outcome file: %s", run_id, exc)


# --------------------------------------------------------------------------- the row


def count_finished(run: PipelineRun, report: dict[str, Any]) -> None:
    """Prometheus: this process's finished runs, their duration, failed sources."""
    metrics.RUNS_FINISHED.labels(run.state, run.trigger).inc()
    if run.started_at is not None and run.finished_at is not None:
        seconds = (run.finished_at - run.started_at).total_seconds()
        metrics.RUN_DURATION.labels(run.state).observe(max(seconds, 0.0))
    failed = [s for s in report.get("sources") or [] if isinstance(s, dict) and s.get("error")]
    if failed:
        metrics.SOURCE_FETCH_FAILURES.inc(len(failed))


async def apply(session: AsyncSession, outcome: Outcome, owner: str) -> PipelineRun | None:
    """Write the outcome on the run's row and commit, while `owner` still holds the run
    (None, nothing written, once it does not)."""
    run = await owned_run(session, outcome.run_id, owner)
    if run is None:
        return None
    report = outcome.report
    run.state = check_transition(run.id, run.state, outcome.state)
    run.finished_at = outcome.finished_at
    run.report = report
    engine_counts = report.get("counts")
    counts = dict(engine_counts) if isinstance(engine_counts, dict) else {}
    if outcome.state is not RunState.SUCCEEDED and isinstance(counts.get("published"), dict):
        # The engine counted what it built; a run that did not succeed published none.
        counts["published"] = dict.fromkeys(counts["published"], 0)
    # Publishing already wrote the feeds' and the indicator store's summaries.
    run.counts = {**counts, **run.counts}
    run.errors = [*run.errors, *outcome.errors]
    run.pid = None
    run.progress = {**run.progress, "stage": "finished"}
    await alert_events.run_finished(session, run, report)  # the outbox, in this transaction
    await session.commit()
    return run


async def record(
    sessionmaker: async_sessionmaker[AsyncSession], outcome: Outcome, owner: str
) -> PipelineRun | None:
    """One attempt at committing the outcome (raises what the database raised)."""
    async with sessionmaker() as session:
        run = await apply(session, outcome, owner)
    if run is not None:
        count_finished(run, outcome.report)
    return run


def is_transient(exc: BaseException) -> bool:
    """A failure worth retrying: the database (or the disk under it) refused for now. A
    bug (an illegal transition, a TypeError) is not retried."""
    return (
        isinstance(exc, SQLAlchemyError | OSError | TimeoutError | ConnectionError)
        or database_unavailable(exc) is not None
        or type(exc).__module__.split(".", 1)[0] in ("asyncpg", "sqlite3", "aiosqlite")
    )


def retry_delay(previous: float | None) -> float:
    """The wait before the next attempt: RETRY_FIRST_SECONDS, doubling up to the cap."""
    if previous is None:
        return RETRY_FIRST_SECONDS
    return min(previous * 2, RETRY_CAP_SECONDS)


# --------------------------------------------------------------------------- error text


def _is_database_error(exc: BaseException) -> bool:
    return (
        isinstance(exc, SQLAlchemyError)
        or database_unavailable(exc) is not None
        or type(exc).__module__.split(".", 1)[0] in ("asyncpg", "sqlite3", "aiosqlite")
    )


def failure_text(exc: BaseException, run_id: int, doing: str) -> str:
    """What a run's `errors` say about `exc` while `doing` ("publishing"): never a SQL
    statement or a driver class. The full detail is logged (api.log) under the error id."""
    error_id = log_unexpected(exc, {"type": "run", "method": f"run {run_id}", "path": doing})
    if _is_database_error(exc):
        what = "unavailable" if database_unavailable(exc) is not None else "error"
        return f"database {what} while {doing} (error id {error_id})"
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{type(exc).__name__}: {exc.strerror}"
    else:
        text = f"{type(exc).__name__}: {exc}".split("\n", 1)[0]
    return f"{doing} failed: {text[:200]} (error id {error_id})"
