"""Tenants see a worker's name, not its host, pid and start time (issue #12 item 10).

`/jobs` and run detail show a tenant `worker-<hex>` (stable per worker process) and no pid;
callers that see every profile (super-admins, legacy global keys) keep the full identity.
"""

from __future__ import annotations

import re
import socket
from typing import Any

import httpx

from edl_api.state import AppState
from tests.conftest import SUPER_KEY
from tests.factories import make_pipeline, make_profile
from tests.helpers import expect, get_run, h, launch_run, slow_yaml, wait_pid, wait_run


async def _job(client: httpx.AsyncClient, run_id: int, key: str) -> dict[str, Any]:
    jobs = await expect(await client.get("/jobs", headers=h(key)))
    (job,) = [j for j in jobs["items"] if j["run_id"] == run_id]
    return dict(job)


async def test_jobs_and_run_detail_show_tenants_a_worker_name_only(
    run_app: Any, rc: httpx.AsyncClient, upstream_port: int
) -> None:
    identity = AppState.of(run_app).dispatcher.identity
    profile_id, key = await make_profile(rc)
    pipeline_id = await make_pipeline(rc, profile_id, slow_yaml(upstream_port, 3))
    first = await launch_run(rc, pipeline_id, key)
    pid = await wait_pid(rc, first["id"])  # running, with an engine child

    full = await _job(rc, first["id"], SUPER_KEY)
    assert full["worker"] == identity
    assert full["pid"] == pid

    job = await _job(rc, first["id"], key)
    name = job["worker"]
    assert re.fullmatch(r"worker-[0-9a-f]{8}", name)
    assert job["pid"] is None
    detail = await get_run(rc, first["id"], key)
    assert detail["worker"] == name
    shown = str(job) + str(detail)
    for secret in (f"{socket.gethostname()}:{pid}", identity):
        assert secret not in shown
    assert (await get_run(rc, first["id"]))["worker"] == identity

    await expect(await rc.post(f"/runs/{first['id']}/cancel", headers=h(key)), 202)
    finished = await wait_run(rc, first["id"], key=key)
    assert finished["worker"] == name  # the same name once finished, and for its next run
    second = await launch_run(rc, pipeline_id, key)
    await wait_pid(rc, second["id"])
    assert (await _job(rc, second["id"], key))["worker"] == name
    await expect(await rc.post(f"/runs/{second['id']}/cancel", headers=h(key)), 202)
    await wait_run(rc, second["id"], key=key)
