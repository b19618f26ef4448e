"""One `serve`/`worker` process per SQLite database; PostgreSQL takes no lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edl_api.instance_lock import InstanceLocked, acquire, lock_path
from tests.conftest import SUPER_KEY, make_settings
from tests.helpers import free_port, running_server, service_env


def test_lock_is_exclusive_names_the_holder_and_frees_on_release(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, None)
    held = acquire(settings, "serve")
    assert held is not None
    assert held.path == (tmp_path / "data" / "edl.db.lock").resolve()
    with pytest.raises(InstanceLocked) as refused:
        acquire(settings, "worker")
    message = str(refused.value)
    assert f"pid {os.getpid()}, edl-api serve" in message
    assert "PostgreSQL" in message
    held.release()
    again = acquire(settings, "worker")  # released (as at process exit): free again
    assert again is not None
    again.release()


def test_postgres_and_memory_take_no_lock(tmp_path: Path) -> None:
    assert lock_path(make_settings(tmp_path, "postgresql+asyncpg://u@h/db")) is None
    assert lock_path(make_settings(tmp_path, "sqlite+aiosqlite:///:memory:")) is None


def _start(env: dict[str, str], cwd: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edl_api", *command], env=env, cwd=cwd,
        capture_output=True, text=True, timeout=30,
    )


def test_a_second_serve_on_one_sqlite_refuses(tmp_path: Path) -> None:
    env = service_env(tmp_path, EDL_API_KEY=SUPER_KEY)
    with running_server(env, tmp_path) as (server, _):
        second = _start(env, tmp_path, "serve", "--port", str(free_port()))
        assert second.returncode == 3, second.stderr
        assert f"pid {server.pid}, edl-api serve" in second.stderr
        assert "PostgreSQL" in second.stderr
        assert server.poll() is None  # the first one goes on serving


def test_a_worker_beside_a_holder_refuses(tmp_path: Path) -> None:
    env = service_env(tmp_path)
    held = acquire(make_settings(tmp_path, None), "serve")
    assert held is not None
    try:
        refused = _start(env, tmp_path, "worker")
    finally:
        held.release()
    assert refused.returncode == 3, refused.stderr
    assert f"pid {os.getpid()}, edl-api serve" in refused.stderr
