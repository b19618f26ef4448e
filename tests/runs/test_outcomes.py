"""Outcomes always land (issue #14): retried until the database takes them, kept in a file
a restart applies, resolved by the watchdog when a run's task is gone; errors quote the
engine's last error line and never carry SQL."""

from __future__ import annotations

import asyncio
import errno
import logging
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from edl_api.models import PipelineRun, utcnow
from edl_api.runs import child as child_module
from edl_api.runs import outcomes
from edl_api.runs.outcomes import Outcome
from edl_api.runs.recovery import worker_identity
from edl_api.runs.state import RunState, error_line, outcome
from edl_api.state import AppState
from tests.factories import make_pipeline, make_profile
from tests.helpers import get_run, launch_run, wait_run

INSERT_SQL = "INSERT INTO artifacts (run_id, content) VALUES (?, ?)"


def _db_down() -> OperationalError:
    full = sqlite3.OperationalError("database or disk is full")
    return OperationalError(INSERT_SQL, (1, b"x"), full)


async def _mark_running(app: Any, run_id: int, worker: str) -> None:
    async with AppState.of(app).sessionmaker() as session, session.begin():
        await session.execute(
            update(PipelineRun).where(PipelineRun.id == run_id).values(
                state="running", worker=worker, started_at=utcnow(), heartbeat_at=utcnow(),
            )
        )


# --------------------------------------------------------------------------- pure parts


def test_error_line_picks_what_went_wrong() -> None:
    assert error_line("2026-01-01T00:00:00Z   OSError: [Errno 28] No space left on device") == (
        "OSError: [Errno 28] No space left on device"
    )
    assert error_line("2026-01-01T00:00:00Z engine crashed: OSError") == "engine crashed: OSError"
    assert error_line('  File "/x/engine/store.py", line 3, in write') is None
    assert error_line("Traceback (most recent call last):") is None
    assert error_line("2026-01-01T00:00:00Z source a: 1200 lines") is None


def test_outcome_quotes_the_engines_last_error() -> None:
    state, errors = outcome(None, None, 1, {}, "OSError: [Errno 28] No space left on device")
    assert state is RunState.FAILED
    assert errors == ["engine exited with code 1: OSError: [Errno 28] No space left on device"]


def test_failure_text_never_carries_sql(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="edl_api"):
        text = outcomes.failure_text(_db_down(), 7, "publishing")
    assert text.startswith("database unavailable while publishing (error id ")
    assert "INSERT" not in text
    assert "OperationalError" not in text
    error_id = text.rsplit(" ", 1)[1].rstrip(")")
    assert any(error_id in r.getMessage() for r in caplog.records), "api.log has the id"
    disk = outcomes.failure_text(OSError(errno.ENOSPC, "No space left on device", "/w"), 7,
                                 "starting the run")
    assert disk.startswith("starting the run failed: OSError: No space left on device")


# --------------------------------------------------------------------------- a real run


async def test_an_outcome_the_database_refuses_lands_when_it_returns(
    rc: httpx.AsyncClient, run_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = AppState.of(run_app)
    real = outcomes.record
    down: dict[str, float] = {}  # the database refuses for 1.5 s from the first attempt
    files: list[bool] = []

    async def flaky(maker: Any, result: Outcome, owner: str) -> Any:
        files.append(outcomes.outcome_path(state.settings, result.run_id).is_file())
        down.setdefault("until", time.monotonic() + 1.5)
        if time.monotonic() < down["until"]:
            raise _db_down()
        return await real(maker, result, owner)

    monkeypatch.setattr(outcomes, "record", flaky)
    profile_id, _ = await make_profile(rc)
    pipeline_id = await make_pipeline(rc, profile_id)
    first = await launch_run(rc, pipeline_id)
    second = await launch_run(rc, pipeline_id)  # concurrency 1: waits for the first
    await wait_run(rc, first["id"], "running", timeout=8)
    while "until" not in down:
        await asyncio.sleep(0.05)
    # while the outcome waits the watchdog must not take it: its task is alive
    assert await state.dispatcher.watchdog() == []
    done = await wait_run(rc, first["id"], timeout=10)
    back_after = time.monotonic() - down["until"]
    assert done["state"] == "succeeded", done
    assert back_after < 6, f"landed {back_after:.1f} s after the database returned"
    assert len(files) >= 2, "retried while the database refused"
    assert all(files), "the outcome waits in its file while retried"
    assert not outcomes.outcome_path(state.settings, first["id"]).exists()
    assert (await wait_run(rc, second["id"], timeout=8))["state"] == "succeeded"


async def test_the_engines_last_error_line_is_the_runs_error(
    rc: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = (
        "import sys\n"
        "print('2026-01-01T00:00:00Z engine crashed: OSError')\n"
        "print('2026-01-01T00:00:00Z   Traceback (most recent call last):')\n"
        "print('2026-01-01T00:00:00Z     File \"store.py\", line 9, in write')\n"
        "print('2026-01-01T00:00:00Z   OSError: [Errno 28] No space left on device')\n"
        "sys.exit(1)\n"
    )
    monkeypatch.setattr(child_module, "ENGINE_COMMAND", [sys.executable, "-c", script])
    profile_id, _ = await make_profile(rc)
    run = await wait_run(rc, (await launch_run(rc, await make_pipeline(rc, profile_id)))["id"])
    assert run["state"] == "failed"
    assert run["errors"] == [
        "engine exited with code 1: OSError: [Errno 28] No space left on device"
    ]


async def test_a_full_disk_fails_the_run_clearly_and_the_next_one_runs(
    rc: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = child_module.EngineChild.start
    full = {"on": True}

    async def start(self: Any, workdir: Path, *args: Any) -> Any:
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device", str(workdir))
        return await real(self, workdir, *args)

    monkeypatch.setattr(child_module.EngineChild, "start", start)
    profile_id, _ = await make_profile(rc)
    pipeline_id = await make_pipeline(rc, profile_id)
    failed = await wait_run(rc, (await launch_run(rc, pipeline_id))["id"], timeout=8)
    assert failed["state"] == "failed"
    [error] = failed["errors"]
    assert "No space left on device" in error
    assert "error id" in error
    full["on"] = False  # space freed: no restart needed
    after = await wait_run(rc, (await launch_run(rc, pipeline_id))["id"], timeout=8)
    assert after["state"] == "succeeded"


# --------------------------------------------------------------------------- no live task


async def test_the_watchdog_resolves_runs_of_ours_that_no_task_runs(
    rc: httpx.AsyncClient, run_app: Any
) -> None:
    state = AppState.of(run_app)
    dispatcher = state.dispatcher
    await dispatcher.stop()
    profile_id, _ = await make_profile(rc)
    pipeline_id = await make_pipeline(rc, profile_id, concurrency_limit=3)
    plain, with_file, elsewhere = [(await launch_run(rc, pipeline_id))["id"] for _ in range(3)]
    for run_id in (plain, with_file):
        await _mark_running(run_app, run_id, dispatcher.identity)
    await _mark_running(run_app, elsewhere, "far-away:10:1")  # not ours: untouched
    outcomes.save(state.settings, Outcome(with_file, dispatcher.identity, RunState.FAILED,
                                          ["source a: HTTP 503"], {"ok": False}))
    assert sorted(await dispatcher.watchdog()) == sorted([plain, with_file])
    lost = await get_run(rc, plain)
    assert lost["state"] == "interrupted"
    assert lost["errors"] == ["its task ended without an outcome"]
    kept = await get_run(rc, with_file)
    assert (kept["state"], kept["errors"]) == ("failed", ["source a: HTTP 503"])
    assert not outcomes.outcome_path(state.settings, with_file).exists()
    assert (await get_run(rc, elsewhere))["state"] == "running"
    assert await dispatcher.watchdog() == []


async def test_a_restart_applies_the_outcome_a_dead_worker_left(
    rc: httpx.AsyncClient, run_app: Any
) -> None:
    state = AppState.of(run_app)
    dispatcher = state.dispatcher
    await dispatcher.stop()
    profile_id, _ = await make_profile(rc)
    pipeline_id = await make_pipeline(rc, profile_id, concurrency_limit=2)
    decided, undecided = [(await launch_run(rc, pipeline_id))["id"] for _ in range(2)]
    dead = f"{worker_identity().rsplit(':', 2)[0]}:{2**22 + 12345}:1"
    for run_id in (decided, undecided):
        await _mark_running(run_app, run_id, dead)
    finished = utcnow()
    outcomes.save(state.settings, Outcome(decided, dead, RunState.SUCCEEDED, [],
                                          {"counts": {"published": {"ipv4": 1}}}, finished))
    assert sorted(await dispatcher.recover()) == sorted([decided, undecided])
    run = await get_run(rc, decided)
    assert run["state"] == "succeeded", run
    assert run["errors"] == []
    assert run["finished_at"].startswith(finished.isoformat()[:19])
    assert (await get_run(rc, undecided))["state"] == "interrupted"
    assert not outcomes.outcome_path(state.settings, decided).exists()
