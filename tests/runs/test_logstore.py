"""Run logs in the database: what every host reads (whole, tail, follow), and log writes
that fail (a log folder that is not one, a database that refuses) are skipped, counted
and warned once, never failing the run."""

from __future__ import annotations

import asyncio
import gzip
import logging
import shutil
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlmodel import col

from edl_api.metrics import PROCESS_REGISTRY
from edl_api.models import PipelineRun, RunLogChunk, utcnow
from edl_api.runs import logstore
from edl_api.runs.logs import RunLog
from edl_api.settings import Settings
from edl_api.state import AppState
from tests.conftest import asgi_client, make_settings, running_app
from tests.factories import make_pipeline, make_profile
from tests.helpers import h, launch_run, wait_run


def _failures(target: str) -> float:
    value = PROCESS_REGISTRY.get_sample_value(
        "edl_run_log_write_failures_total", {"target": target}
    )
    return value or 0.0


async def _queued_run(rc: httpx.AsyncClient, app: Any) -> int:
    await AppState.of(app).dispatcher.stop()  # the test writes this run's log itself
    profile_id, _ = await make_profile(rc)
    return int((await launch_run(rc, await make_pipeline(rc, profile_id)))["id"])


async def _set_state(app: Any, run_id: int, state: str) -> None:
    async with AppState.of(app).sessionmaker() as session, session.begin():
        await session.execute(
            update(PipelineRun).where(col(PipelineRun.id) == run_id).values(
                state=state, worker="far-away:10:1", heartbeat_at=utcnow() + timedelta(hours=1)
            )
        )


async def test_the_database_copy_is_what_every_host_reads(
    rc: httpx.AsyncClient, run_app: Any, run_settings: Settings
) -> None:
    run_id = await _queued_run(rc, run_app)
    maker = AppState.of(run_app).sessionmaker
    run_log = RunLog(run_settings, run_id, sessionmaker=maker)
    lines = [f"line {i:05d} " + "x" * 60 for i in range(3000)]  # ~200 KiB: several chunks
    for line in lines:
        await run_log.write(line, to_engine_log=False)
    await run_log.note("succeeded")
    await run_log.aclose()
    async with maker() as session:
        chunks = (await session.execute(
            select(func.count()).where(col(RunLogChunk.run_id) == run_id)
        )).scalar_one()
    assert chunks >= 3

    # Another host has none of this host's files: it reads the same from the database.
    shutil.rmtree(run_settings.log_dir / "runs")
    text = (await rc.get(f"/runs/{run_id}/logs", headers=h())).text.splitlines()
    assert text[:-1] == lines
    assert text[-1].endswith(" dispatcher: succeeded")
    tail = (await rc.get(f"/runs/{run_id}/logs?tail=3", headers=h())).text.splitlines()
    assert tail == text[-3:]
    assert (await rc.get(f"/runs/{run_id}/logs?tail=2000", headers=h())).text.splitlines() \
        == text[-2000:]
    assert (await rc.get(f"/runs/{run_id}/logs?tail=0", headers=h())).text == ""
    # A log reopened later (recovery's note on another process) goes on after the last chunk.
    again = RunLog(run_settings, run_id, sessionmaker=maker)
    await again.note("interrupted (worker x is gone)")
    await again.aclose()
    assert (await rc.get(f"/runs/{run_id}/logs?tail=1", headers=h())).text.endswith(
        "dispatcher: interrupted (worker x is gone)\n"
    )


async def test_follow_streams_database_chunks_until_the_run_ends(
    rc: httpx.AsyncClient, run_app: Any, run_settings: Settings
) -> None:
    run_id = await _queued_run(rc, run_app)
    await _set_state(run_app, run_id, "running")
    run_log = RunLog(run_settings, run_id, sessionmaker=AppState.of(run_app).sessionmaker)
    await run_log.note("engine started")
    shutil.rmtree(run_settings.log_dir / "runs")  # only the database has it
    received: list[str] = []

    async def follow() -> None:
        async with rc.stream("GET", f"/runs/{run_id}/logs?follow=true", headers=h()) as resp:
            assert resp.status_code == 200
            async for chunk in resp.aiter_text():
                received.append(chunk)

    reader = asyncio.create_task(follow())
    for i in range(3):
        await asyncio.sleep(0.35)
        await run_log.note(f"step {i}")
    await run_log.note("succeeded")  # before the state, as the dispatcher does
    await _set_state(run_app, run_id, "succeeded")
    await asyncio.wait_for(reader, timeout=5)
    await run_log.aclose()
    text = "".join(received)
    assert [line.split(" dispatcher: ")[1] for line in text.splitlines()] == [
        "engine started", "step 0", "step 1", "step 2", "succeeded",
    ]


async def test_a_database_that_refuses_log_writes_does_not_hold_the_caller(
    rc: httpx.AsyncClient, run_app: Any, run_settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    run_id = await _queued_run(rc, run_app)

    def broken() -> Any:
        raise ConnectionRefusedError("database unavailable")

    before = _failures("db")
    run_log = RunLog(run_settings, run_id, sessionmaker=broken)  # type: ignore[arg-type]
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="edl_api.runs"):
        for i in range(5):
            await run_log.note(f"note {i}")
        await run_log.aclose()
    assert time.monotonic() - started < 2  # a failed write is given up at once
    assert _failures("db") - before >= 5
    warnings = [r for r in caplog.records if f"run {run_id}: log writes" in r.getMessage()]
    assert len(warnings) == 1
    # The file copy still has the lines (this host's GET reads it: nothing in the database).
    text = (await rc.get(f"/runs/{run_id}/logs", headers=h())).text
    assert "dispatcher: note 4" in text


async def test_a_log_folder_that_refuses_writes_does_not_stop_runs(
    tmp_path: Path, database_url: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, database_url, ssrf_allow_cidrs="127.0.0.0/8")
    settings.log_dir.mkdir(parents=True)
    (settings.log_dir / "runs").write_text("not a folder")  # every run log write fails
    before = _failures("file")
    with caplog.at_level(logging.WARNING, logger="edl_api.runs"):
        async with running_app(settings) as app, asgi_client(app) as client:
            profile_id, _ = await make_profile(client)
            pipeline_id = await make_pipeline(client, profile_id)
            runs = [await launch_run(client, pipeline_id) for _ in range(2)]
            for run in runs:
                assert (await wait_run(client, run["id"], "succeeded", timeout=10))["errors"] == []
                text = (await client.get(f"/runs/{run['id']}/logs", headers=h())).text
                assert "engine started" in text
                assert text.endswith(" dispatcher: succeeded\n")
    assert _failures("file") - before >= 2
    for run in runs:
        warned = [r for r in caplog.records if f"run {run['id']}: log writes" in r.getMessage()]
        assert len(warned) == 1, warned


async def test_chunk_writer_bounds_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logstore, "RUN_MAX_BYTES", 1000)
    written: list[bytes] = []

    class Writer(logstore.ChunkWriter):
        async def _write(self, content: bytes, lines: int) -> None:
            written.append(content)

    writer = Writer(None, 1, lambda *_: None)  # type: ignore[arg-type]
    for i in range(100):
        writer.append(f"{i:03d} " + "z" * 40)
    await writer.aclose()
    text = b"".join(gzip.decompress(c) for c in written).decode().splitlines()
    assert len(text) < 30
    assert "line(s) past the run log's" in text[-1]
