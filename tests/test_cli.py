"""The operator's commands, run as real processes on loopback."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

KEY_RE = re.compile(r"^edla_[0-9A-Za-z]{50}$")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDL_")}
    env |= {
        "EDL_DATA_DIR": str(tmp_path / "data"),
        "EDL_LOG_DIR": str(tmp_path / "logs"),
        "EDL_BCRYPT_ROUNDS": "4",
    }
    env |= extra
    return env


def _cli(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edl_api", *args],
        env=_env(tmp_path, **extra),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edl_api", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=_env(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(0.2)
        me = httpx.get(f"{base}/me", headers={"Authorization": f"Bearer {key}"}, timeout=5)
        assert me.json()["role"] == "super"
        created = httpx.post(
            f"{base}/profiles", json={"name": "acme"}, headers={"X-API-Key": key}, timeout=5
        )
        assert created.status_code == 201
        profile_key = created.json()["api_key"]
        assert (
            httpx.get(f"{base}/me", headers={"X-API-Key": profile_key}, timeout=5).json()["kind"]
            == "profile"
        )
        assert httpx.get(f"{base}/readyz", timeout=5).json()["database"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
    # uvicorn re-raises the signal after a graceful shutdown, so -SIGTERM is a clean exit.
    assert proc.returncode in (0, -signal.SIGTERM)
    log = (tmp_path / "logs" / "api.log").read_text()
    assert "edl-api stopped" in log  # the lifespan ran to its end
    assert "POST /profiles 201" in log
    assert key not in log
    assert profile_key not in log
