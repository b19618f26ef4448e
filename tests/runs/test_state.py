"""Run states: the outcome function and the transition graph, without processes."""

from __future__ import annotations

import pytest

from edl_api.runs.state import (
    ACTIVE,
    FINISHED,
    IllegalTransition,
    RunState,
    check_transition,
    outcome,
)

FAILED_SOURCE = {"sources": [{"name": "feodo", "error": "HTTP 500"}, {"name": "ok"}]}


@pytest.mark.parametrize(
    ("reason", "failure", "returncode", "report", "expected"),
    [
        (None, None, 0, {}, (RunState.SUCCEEDED, [])),
        # an optional source that failed: the run succeeds and says so
        (None, None, 0, FAILED_SOURCE, (RunState.SUCCEEDED, ["source feodo: HTTP 500"])),
        (None, None, 2, FAILED_SOURCE, (RunState.FAILED, ["source feodo: HTTP 500"])),
        (None, None, 2, {}, (RunState.FAILED, ["a required source failed"])),
        (None, None, 1, {},
         (RunState.FAILED, ["engine exited with code 1; see the run log"])),
        (None, None, -9, {},
         (RunState.FAILED, ["engine exited with code -9; see the run log"])),
        # the engine's own error that names no source (its deadline) reaches the run
        (None, None, 2, {"errors": ["run exceeded the total deadline of 5s"]},
         (RunState.FAILED, ["run exceeded the total deadline of 5s"])),
        (None, "dispatcher error: OSError", None, {},
         (RunState.FAILED, ["dispatcher error: OSError"])),
        ("cancelled", None, -15, FAILED_SOURCE,
         (RunState.CANCELLED, ["source feodo: HTTP 500"])),
        ("timed_out", None, -9, {}, (RunState.TIMED_OUT, [])),
        ("interrupted", None, -15, {},
         (RunState.INTERRUPTED, ["the service shut down while the run was running"])),
        ("interrupted", "the dispatcher stopped before the run finished", None, {},
         (RunState.INTERRUPTED, ["the dispatcher stopped before the run finished"])),
        # a stop reason wins over the exit code: a cancelled run that exited 0 is cancelled
        ("cancelled", None, 0, {}, (RunState.CANCELLED, [])),
    ],
)
def test_outcome(
    reason: str | None, failure: str | None, returncode: int | None, report: dict,
    expected: tuple[RunState, list[str]],
) -> None:
    assert outcome(reason, failure, returncode, report) == expected


def test_state_sets_partition_the_states() -> None:
    assert ACTIVE == {RunState.QUEUED, RunState.RUNNING}
    assert ACTIVE | FINISHED == set(RunState)
    assert not ACTIVE & FINISHED
    assert RunState.SUCCEEDED == "succeeded"  # stored and served as the plain string


@pytest.mark.parametrize(
    ("old", "new"),
    [("queued", "running"), ("queued", "cancelled"), ("running", "succeeded"),
     ("running", "failed"), ("running", "timed_out"), ("running", "interrupted"),
     ("running", "cancelled")],
)
def test_legal_transitions(old: str, new: str) -> None:
    assert check_transition(1, old, new) == RunState(new)


@pytest.mark.parametrize(
    ("old", "new"),
    [("succeeded", "running"), ("failed", "succeeded"), ("queued", "succeeded"),
     ("running", "queued"), ("running", "running"), ("cancelled", "queued"),
     ("running", "done")],
)
def test_illegal_transitions_fail_loudly(old: str, new: str) -> None:
    with pytest.raises(IllegalTransition):
        check_transition(7, old, new)


def test_transitions_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="edl_api.runs"):
        check_transition(42, "running", "succeeded")
    assert "run 42: running → succeeded" in caplog.text
