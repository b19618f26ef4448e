"""Run states, their legal transitions, and the one pure function that decides an outcome.

queued → running → succeeded | failed | cancelled | timed_out | interrupted
queued → cancelled (cancelled before a worker claimed it)

A transition outside this graph is a bug: `check_transition` raises, so tests fail
loudly, and every applied transition is logged.
"""

from __future__ import annotations

import logging
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


def outcome(
    reason: str | None, failure: str | None, returncode: int | None, report: dict[str, Any],
) -> tuple[RunState, list[str]]:
    """The final state of a run whose child is done, and the errors the operator sees.

    `reason` is why the run layer stopped the child (cancelled, timed_out, interrupted),
    `failure` what went wrong around it (a dispatcher error), `returncode` the child's
    exit code, `report` the engine's report (empty when there is none)."""
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
    return RunState.FAILED, [*errors, f"engine exited with code {returncode}; see the run log"]
