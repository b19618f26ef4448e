"""A real `edl-api serve` process on a free loopback port, for tests that need one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any EDL_* leaking in, plus a private state dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDL_")}
    env |= {
        "EDL_DATA_DIR": str(tmp_path / "data"),
        "EDL_LOG_DIR": str(tmp_path / "logs"),
        "EDL_BCRYPT_ROUNDS": "4",
    }
    return env | extra


@contextmanager
def running_server(env: dict[str, str], cwd: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Start the service, wait until /healthz answers, yield (process, base URL), then
    stop it with SIGTERM (killed if it does not stop within 15 s)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edl_api", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
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
            assert proc.poll() is None, "server exited"
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        yield proc, base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
