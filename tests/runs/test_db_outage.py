"""Real `edl-api serve` processes: the database goes away across a run's end; once it is
back the run reaches a terminal state within 10 s and the pipeline's next run starts.

PostgreSQL: the test's own database refuses connections (`ALLOW_CONNECTIONS false`, its
backends terminated). SQLite: root ignores file modes, so the disk itself is full — the
data folder is a small tmpfs (skipped where one cannot be mounted)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SUPER_KEY, _pg_admin
from tests.factories import make_pipeline, make_profile
from tests.helpers import h, launch_run, running_server, service_env, slow_yaml, wait_pid

FINISHED = {"succeeded", "failed", "cancelled", "timed_out", "interrupted"}
FORBIDDEN_IN_ERRORS = ("INSERT", "UPDATE ", "SELECT", "[SQL", "Error (", "asyncpg.", "sqlite3.")


async def _state(client: httpx.AsyncClient, run_id: int) -> dict[str, Any] | None:
    """The run, or None while the API cannot answer (the database is still coming back)."""
    with contextlib.suppress(httpx.HTTPError):
        r = await client.get(f"/runs/{run_id}", headers=h())
        if r.status_code == 200:
            return r.json()  # type: ignore[no-any-return]
    return None


async def _until(client: httpx.AsyncClient, run_id: int, states: set[str], within: float
                 ) -> dict[str, Any]:
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        last = await _state(client, run_id)
        if last is not None and last["state"] in states:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} not {states} within {within} s: {last}")


async def _outage_across_a_runs_end(
    base: str, upstream_port: int, cut: Any, restore: Any
) -> tuple[float, dict[str, Any]]:
    """Start a run whose source answers after 2 s and a second one queued behind it, cut
    the database while the first runs, restore it after its engine ended. Returns the
    seconds from restore to the first run's terminal state, and that run."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        profile_id, _ = await make_profile(client)
        pipeline_id = await make_pipeline(client, profile_id, slow_yaml(upstream_port, 2))
        first = await launch_run(client, pipeline_id, persist=True)
        second = await launch_run(client, pipeline_id)
        await wait_pid(client, first["id"])
        await cut()
        await asyncio.sleep(4)  # the engine ends meanwhile: its outcome cannot be committed
        await restore()
        restored = time.monotonic()
        run = await _until(client, first["id"], FINISHED, within=10)
        took = time.monotonic() - restored
        await _until(client, second["id"], {"running", *FINISHED}, within=10)
    return took, run


def _assert_clean(run: dict[str, Any]) -> None:
    for error in run["errors"]:
        assert not any(bad in error for bad in FORBIDDEN_IN_ERRORS), error


@pytest.mark.postgres
async def test_postgres_outage_across_a_runs_end(
    tmp_path: Path, upstream_port: int, own_pg_database: tuple[str, str]
) -> None:
    name, url = own_pg_database

    async def cut() -> None:
        await _pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await _pg_admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")

    async def restore() -> None:
        await _pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

    env = service_env(tmp_path, EDL_API_KEY=SUPER_KEY, EDL_SSRF_ALLOW_CIDRS="127.0.0.0/8",
                      EDL_DATABASE_URL=url)
    with running_server(env, tmp_path, log=tmp_path / "server.out") as (_, base):
        took, run = await _outage_across_a_runs_end(base, upstream_port, cut, restore)
    assert took < 10, f"terminal {took:.1f} s after the database returned: {run}"
    _assert_clean(run)


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill ({mounted.stderr.decode().strip()}); "
                    "SQLite ignores file modes for root, so there is no other outage")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(folder: Path) -> Path:
    """Write until the disk is full; the file to delete to free it again."""
    filler = folder / "filler"
    chunk = b"\0" * (1024 * 1024)
    with contextlib.suppress(OSError), filler.open("wb") as handle:
        while True:
            handle.write(chunk)
            handle.flush()
    with contextlib.suppress(OSError), (folder / "filler-tail").open("wb") as handle:
        while True:  # the last partial MiB
            handle.write(b"\0" * 4096)
            handle.flush()
    return filler


async def test_sqlite_full_disk_across_a_runs_end(tmp_path: Path, upstream_port: int) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill needs root")
    with _tmpfs(tmp_path / "data", "48m") as data:
        env = service_env(tmp_path, EDL_API_KEY=SUPER_KEY, EDL_SSRF_ALLOW_CIDRS="127.0.0.0/8",
                          EDL_DATA_DIR=str(data))
        fillers: list[Path] = []

        async def cut() -> None:
            fillers.append(await asyncio.to_thread(_fill, data))

        async def restore() -> None:
            for filler in fillers:
                filler.unlink()
            (data / "filler-tail").unlink(missing_ok=True)

        with running_server(env, tmp_path, log=tmp_path / "server.out") as (_, base):
            took, run = await _outage_across_a_runs_end(base, upstream_port, cut, restore)
    assert took < 10, f"terminal {took:.1f} s after the database returned: {run}"
    _assert_clean(run)
