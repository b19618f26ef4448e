"""Two hosts: two `serve` processes with their own data and log folders on one PostgreSQL
read a run's log the same, whichever of them ran it (GET, tail and follow)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import SUPER_KEY
from tests.factories import make_pipeline, make_profile
from tests.helpers import clean_env, h, launch_run, running_server, slow_yaml, wait_run


@pytest.mark.postgres
async def test_logs_read_the_same_from_both_hosts(
    tmp_path: Path, pg_database: str, upstream_port: int
) -> None:
    def host(name: str) -> dict[str, str]:
        return clean_env(
            EDL_DATABASE_URL=pg_database, EDL_API_KEY=SUPER_KEY, EDL_BCRYPT_ROUNDS="4",
            EDL_SSRF_ALLOW_CIDRS="127.0.0.0/8", EDL_DATA_DIR=str(tmp_path / name / "data"),
            EDL_LOG_DIR=str(tmp_path / name / "logs"), EDL_AUTO_REFRESH_MINUTES="0",
        )

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with running_server(host("a"), tmp_path / "a") as (server_a, base_a), \
            running_server(host("b"), tmp_path / "b") as (server_b, base_b):
        async with httpx.AsyncClient(base_url=base_a, timeout=10) as a, \
                httpx.AsyncClient(base_url=base_b, timeout=10) as b:
            # The hosts share a database other tests use too: profile names are unique.
            profile_id, _ = await make_profile(a, f"tenant-{uuid.uuid4().hex[:8]}")
            pipeline_id = await make_pipeline(a, profile_id, slow_yaml(upstream_port, 1.0))
            created = await launch_run(a, pipeline_id)
            run_id = created["id"]
            # Follow from both hosts while it runs: one of them is not running it.
            followed = {}
            for name, client in (("a", a), ("b", b)):
                async with client.stream("GET", f"/runs/{run_id}/logs?follow=true",
                                         headers=h()) as response:
                    assert response.status_code == 200
                    followed[name] = "".join([c async for c in response.aiter_text()])
            run = await wait_run(b, run_id, "succeeded", timeout=15)
            whole = {n: (await c.get(f"/runs/{run_id}/logs", headers=h())).text
                     for n, c in (("a", a), ("b", b))}
            tails = {n: (await c.get(f"/runs/{run_id}/logs?tail=2", headers=h())).text
                     for n, c in (("a", a), ("b", b))}
    ran_on = "a" if f":{server_a.pid}:" in run["worker"] else "b"
    assert f":{(server_a if ran_on == 'a' else server_b).pid}:" in run["worker"]
    other = "b" if ran_on == "a" else "a"
    assert not (tmp_path / other / "logs" / "runs" / f"run-{run_id}.log").exists()
    assert whole["a"] == whole["b"]
    assert "engine started" in whole["a"]
    assert "source slow: ok" in whole["a"]
    assert whole["a"].endswith(" dispatcher: succeeded\n")
    assert tails["a"] == tails["b"]
    assert tails["a"].count("\n") == 2
    # The first follow began while the run ran; the second may start after it ended.
    assert followed[other].endswith(" dispatcher: succeeded\n")
    assert followed["a"] == whole["a"]
    assert followed["b"] == whole["b"]
