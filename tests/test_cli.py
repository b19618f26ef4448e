"""The operator's commands, run as real processes on loopback."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.helpers import h, running_server, service_env

KEY_RE = re.compile(r"^edla_[0-9A-Za-z]{50}$")


def _cli(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edl_api", *args], env=service_env(tmp_path, **extra),
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )


def test_migrate_and_create_admin(tmp_path: Path) -> None:
    migrated = _cli(tmp_path, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "database at head" in migrated.stdout
    assert (tmp_path / "data" / "edl.db").exists()
    created = _cli(tmp_path, "create-admin", "--name", "ops", "--super")
    assert created.returncode == 0, created.stderr
    assert KEY_RE.match(created.stdout.strip())
    bad = _cli(tmp_path, "create-admin", "--name", "x", "--role", "root")
    assert bad.returncode == 2


def test_serve_end_to_end_and_clean_log(tmp_path: Path) -> None:
    key = _cli(tmp_path, "create-admin", "--name", "ops", "--super").stdout.strip()
    with running_server(service_env(tmp_path), tmp_path) as (proc, base):
        me = httpx.get(f"{base}/me", headers={"Authorization": f"Bearer {key}"}, timeout=5)
        assert me.json()["role"] == "super"
        created = httpx.post(
            f"{base}/profiles", json={"name": "acme"}, headers=h(key), timeout=5
        )
        assert created.status_code == 201
        profile_key = created.json()["api_key"]
        who = httpx.get(f"{base}/me", headers=h(profile_key), timeout=5)
        assert who.json()["kind"] == "profile"
        assert httpx.get(f"{base}/readyz", timeout=5).json()["database"] == "ok"
    # uvicorn re-raises the signal after a graceful shutdown, so -SIGTERM is a clean exit.
    assert proc.returncode in (0, -signal.SIGTERM)
    log = (tmp_path / "logs" / "api.log").read_text()
    assert "edl-api stopped" in log  # the lifespan ran to its end
    assert "POST /profiles 201" in log
    # one access line per request: ours (no uvicorn duplicate, which would also be unredacted)
    assert log.count("/readyz") == 1
    assert "uvicorn.access" not in log
    assert key not in log
    assert profile_key not in log
