"""Real OS processes: restart recovery after kill -9, and two workers on one PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import func, select

from edl_api.models import PipelineRun
from edl_api.state import AppState
from tests.conftest import SUPER_KEY, asgi_client, make_settings, running_app
from tests.factories import make_pipeline, make_profile
from tests.helpers import (
    clean_env,
    free_port,
    get_run,
    h,
    launch_run,
    pid_gone,
    running_server,
    service_env,
    slow_yaml,
    stop,
    wait_pid,
    wait_run,
)


async def test_restart_recovery_after_kill_9(tmp_path: Path, upstream_port: int) -> None:
    port = free_port()
    env = service_env(tmp_path, EDL_API_KEY=SUPER_KEY, EDL_SSRF_ALLOW_CIDRS="127.0.0.0/8")
    output = tmp_path / "server.out"
    with running_server(env, tmp_path, port=port, log=output) as (server, base):
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            profile_id, _ = await make_profile(client, f"tenant-{uuid.uuid4().hex[:8]}")
            pipeline_id = await make_pipeline(client, profile_id, slow_yaml(upstream_port, 600))
            created = await launch_run(client, pipeline_id, persist=True)
            child = await wait_pid(client, created["id"])
        server.kill()  # kill -9: no shutdown hook runs
        server.wait()
    assert not pid_gone(child), "the orphan should outlive its killed parent"

    with running_server(env, tmp_path, port=port, log=output) as (_, base):
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            run = await wait_run(client, created["id"], "interrupted", timeout=5)
            assert run["errors"]
            assert run["finished_at"]
            log = (await client.get(f"/runs/{created['id']}/logs", headers=h())).text
            assert "interrupted" in log
            # Its process died, so it is re-queued once (EDL_RETRY_INTERRUPTED=1).
            retry_id = run["retried_by_run_id"]
            assert retry_id is not None, run
            retry = await get_run(client, retry_id)
            assert retry["retry_of_run_id"] == created["id"]
            assert retry["pipeline_id"] == pipeline_id
            assert retry["state"] in ("queued", "running"), retry
        assert pid_gone(child)


@pytest.mark.postgres
async def test_two_workers_on_postgres_never_share_a_run(
    tmp_path: Path, pg_database: str, upstream_port: int
) -> None:
    settings = make_settings(tmp_path, pg_database, ssrf_allow_cidrs="127.0.0.0/8")
    async with running_app(settings) as app:
        await AppState.of(app).dispatcher.stop()  # only the two worker processes claim
        async with asgi_client(app) as client:
            run_ids = []
            for label in ("a", "b"):
                # The session's shared database may hold an "a" already: names are unique.
                profile_id, _ = await make_profile(client, f"{label}-{uuid.uuid4().hex[:8]}")
                for index in range(3):
                    pipeline_id = await make_pipeline(
                        client, profile_id, slow_yaml(upstream_port, 0.6),
                        name=f"{label}{index}", concurrency_limit=2,
                    )
                    for _ in range(2):
                        run_ids.append((await launch_run(client, pipeline_id))["id"])

        env = clean_env(
            EDL_DATABASE_URL=pg_database, EDL_LOG_DIR=str(tmp_path / "logs"),
            EDL_SSRF_ALLOW_CIDRS="127.0.0.0/8", EDL_MAX_CONCURRENT_RUNS_TOTAL="3",
            EDL_MAX_CONCURRENT_RUNS_PER_PROFILE="3",
        )
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "edl_api", "worker"],
                env={**env, "EDL_DATA_DIR": str(tmp_path / f"worker{i}")},
                stdout=(tmp_path / f"worker{i}.out").open("wb"), stderr=subprocess.STDOUT,
            )
            for i in range(2)
        ]
        try:
            peak = 0
            deadline = time.monotonic() + 45
            maker = AppState.of(app).sessionmaker
            while True:
                async with maker() as session:
                    states = dict((await session.execute(
                        select(PipelineRun.state, func.count()).group_by(PipelineRun.state)
                    )).all())
                peak = max(peak, states.get("running", 0))
                assert states.get("running", 0) <= 3, states
                if states.get("succeeded", 0) == len(run_ids):
                    break
                assert time.monotonic() < deadline, states
                assert all(w.poll() is None for w in workers), "a worker died"
                await asyncio.sleep(0.05)
            assert peak == 3
            async with maker() as session:
                runs: list[Any] = list((await session.execute(select(PipelineRun))).scalars())
            identities = {r.worker for r in runs}
            assert len(identities) <= 2
            assert all(r.worker and r.worker.split(":")[1] in
                       {str(w.pid) for w in workers} for r in runs)
            for run_id in run_ids:
                log = (tmp_path / "logs" / "runs" / f"run-{run_id}.log").read_text()
                assert log.count("engine started") == 1, log
        finally:
            for worker in workers:
                stop(worker)
        for worker in workers:
            assert worker.returncode == 0
            for child in psutil.Process(os.getpid()).children(recursive=True):
                assert child.pid != worker.pid
