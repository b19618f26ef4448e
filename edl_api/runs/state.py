"""Run states, their legal transitions, and the one pure function that decides an outcome.

queued → running → succeeded | failed | cancelled | timed_out | interrupted
queued → cancelled (cancelled before a worker claimed it)

A transition outside this graph is a bug: `check_transition` raises, so tests fail
loudly, and every applied transition is logged.
"""

from __future__ import annotations

import logging
import re
from enum import StrEnum
from typing import Any

logger = logging.getLogger("edl_api.runs")


class RunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"


ACTIVE: frozenset[RunState] = frozenset({RunState.QUEUED, RunState.RUNNING})
FINISHED: frozenset[RunState] = frozenset(set(RunState) - ACTIVE)

TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.QUEUED: frozenset({RunState.RUNNING, RunState.CANCELLED}),
    RunState.RUNNING: FINISHED,
    **{state: frozenset() for state in FINISHED},
}

# Why the run layer stopped a child (`StopReason`); each maps to its final state.
STOP_STATES: dict[str, RunState] = {
    "cancelled": RunState.CANCELLED,
    "timed_out": RunState.TIMED_OUT,
    "interrupted": RunState.INTERRUPTED,
}

# The engine's exit codes (edl_api.engine.__main__).
ENGINE_OK, ENGINE_CRASH, ENGINE_NOT_OK = 0, 1, 2


class IllegalTransition(RuntimeError):
    """A run was moved along an edge the state graph does not have (a bug)."""


def check_transition(run_id: int | None, old: str, new: str) -> RunState:
    """The new state if `old → new` is legal; raises IllegalTransition otherwise."""
    try:
        before, after = RunState(old), RunState(new)
    except ValueError as exc:
        raise IllegalTransition(f"run {run_id}: unknown state in {old!r} → {new!r}") from exc
    if after not in TRANSITIONS[before]:
        raise IllegalTransition(f"run {run_id}: {before} → {after} is not a legal transition")
    logger.info("run %s: %s → %s", run_id, before, after)
    return after


def engine_errors(report: dict[str, Any]) -> list[str]:
    """`source NAME: ERROR` for every failed source (optional ones too), then the engine's
    own errors that name no source (a deadline exceeded)."""
    errors = [
        f"source {source.get('name')}: {source['error']}"
        for source in report.get("sources") or []
        if isinstance(source, dict) and source.get("error")
    ]
    errors += [
        error for error in report.get("errors") or []
        if isinstance(error, str) and not error.startswith("source ")
    ]
    return errors


# A line of the engine's output that says what went wrong: a traceback's last line
# (`OSError: [Errno 28] No space left on device`), or any line naming an error.
_ERROR_LINE = re.compile(
    r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)\b.*"
    r"|.*\b(?:error|errno|failed|crashed|no space left|killed)\b.*)$",
    re.IGNORECASE,
)
_TRACEBACK_FRAME = re.compile(r'^(?:File "|Traceback \(most recent call last\))')
_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+")
ERROR_LINE_CHARS = 300


def error_line(line: str) -> str | None:
    """The engine output line without its time stamp when it is worth quoting as the
    reason a run failed (a traceback's frames are not), else None."""
    text = _STAMP.sub("", line).strip()
    if not text or _TRACEBACK_FRAME.match(text) or not _ERROR_LINE.match(text):
        return None
    return text[:ERROR_LINE_CHARS]


def outcome(
    reason: str | None, failure: str | None, returncode: int | None, report: dict[str, Any],
    last_error: str | None = None,
) -> tuple[RunState, list[str]]:
    """The final state of a run whose child is done, and the errors the operator sees.

    `reason` is why the run layer stopped the child (cancelled, timed_out, interrupted),
    `failure` what went wrong around it (a dispatcher error), `returncode` the child's
    exit code, `report` the engine's report (empty when there is none), `last_error` the
    engine's last output line that looked like an error (`error_line`)."""
    errors = engine_errors(report)
    if reason is not None:
        state = STOP_STATES[reason]
        if state is RunState.INTERRUPTED:
            errors.append(failure or "the service shut down while the run was running")
        return state, errors
    if failure is not None:
        return RunState.FAILED, [*errors, failure]
    if returncode == ENGINE_OK:
        return RunState.SUCCEEDED, errors
    if returncode == ENGINE_NOT_OK:
        return RunState.FAILED, errors or ["a required source failed"]
    if last_error:  # what the engine said last beats "see the run log"
        return RunState.FAILED, [*errors, f"engine exited with code {returncode}: {last_error}"]
    return RunState.FAILED, [*errors, f"engine exited with code {returncode}; see the run log"]
