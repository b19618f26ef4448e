"""Helpers for run-layer tests: data through the API, a loopback upstream, waiting."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import psutil

from tests.conftest import SUPER_KEY

INLINE_YAML = """\
sources:
  - name: inline
    values: [203.0.113.7, evil.example, 198.51.100.0/24, 8.8.8.8]
"""


def h(key: str = SUPER_KEY) -> dict[str, str]:
    return {"X-API-Key": key}


def slow_yaml(port: int, delay: float, name: str = "slow") -> str:
    """A config whose only source answers after `delay` seconds (loopback, no network)."""
    return (
        "sources:\n"
        f"  - name: {name}\n"
        f"    url: http://127.0.0.1:{port}/feed?delay={delay}\n"
        "    timeout_seconds: 600\n"
    )


class _Upstream(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        query = parse_qs(urlparse(self.path).query)
        time.sleep(float(query.get("delay", ["0"])[0]))
        body = b"8.8.8.8\n1.1.1.1\nevil.example\n"
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass

    def log_message(self, *_: Any) -> None:
        pass


@contextmanager
def upstream() -> Iterator[int]:
    """A loopback HTTP feed whose answer is delayed by ?delay=SECONDS."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


async def expect(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    return response.json()


async def make_profile(client: httpx.AsyncClient, name: str = "tenant") -> tuple[int, str]:
    body = await expect(
        await client.post("/profiles", json={"name": name}, headers=h()), 201
    )
    return body["profile"]["id"], body["api_key"]


async def make_pipeline(
    client: httpx.AsyncClient, profile_id: int, yaml: str = INLINE_YAML, *,
    name: str = "pipe", concurrency_limit: int = 1, **config_extra: Any,
) -> int:
    config = await expect(
        await client.post(
            f"/profiles/{profile_id}/configs", json={"name": name, "yaml": yaml, **config_extra},
            headers=h(),
        ),
        201,
    )
    pipeline = await expect(
        await client.post(
            "/pipelines",
            json={"profile_config_id": config["id"], "name": name,
                  "concurrency_limit": concurrency_limit},
            headers=h(),
        ),
        201,
    )
    return int(pipeline["id"])


async def launch(
    client: httpx.AsyncClient, pipeline_id: int, key: str = SUPER_KEY, **body: Any
) -> dict[str, Any]:
    payload = {"pipeline_id": pipeline_id, "persist": False, **body}
    return await expect(await client.post("/runs", json=payload, headers=h(key)), 202)  # type: ignore[no-any-return]


async def get_run(client: httpx.AsyncClient, run_id: int) -> dict[str, Any]:
    return await expect(await client.get(f"/runs/{run_id}", headers=h()), 200)  # type: ignore[no-any-return]


async def wait_state(
    client: httpx.AsyncClient, run_id: int, states: set[str] | str, timeout: float = 20
) -> dict[str, Any]:
    wanted = {states} if isinstance(states, str) else states
    deadline = time.monotonic() + timeout
    while True:
        run = await get_run(client, run_id)
        if run["state"] in wanted:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} stuck in {run['state']}, wanted {wanted}")
        await asyncio.sleep(0.1)


async def wait_pid(client: httpx.AsyncClient, run_id: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = (await client.get("/jobs", headers=h())).json()["items"]
        for job in jobs:
            if job["run_id"] == run_id and job["pid"]:
                return int(job["pid"])
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} never got a child pid")


def pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def wait_pid_gone(pid: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not pid_gone(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"pid {pid} still alive")
        await asyncio.sleep(0.05)


def free_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDL_")}
    env.update(extra)
    return env
