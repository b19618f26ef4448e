"""The test suite's one set of helpers: request headers and checks, launching and waiting
for runs, loopback upstream feeds, and real service processes."""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse

import httpx
import psutil
from fastapi.routing import APIRoute

from tests.conftest import SUPER_KEY

FEEDS = Path(__file__).resolve().parent / "fixtures" / "feeds"
# A run in one of these states will not change again.
FINISHED = frozenset({"succeeded", "failed", "cancelled", "timed_out", "interrupted"})

# --- requests ----------------------------------------------------------------------------


def h(key: str = SUPER_KEY) -> dict[str, str]:
    return {"X-API-Key": key}


def basic(key: str, user: str = "fw") -> dict[str, str]:
    """HTTP Basic as a firewall sends it: any user name, the key as the password."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


async def expect(response: httpx.Response, status: int = 200) -> Any:
    """The response's JSON body, after checking its status (the body explains a mismatch)."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    return response.json()


# --- runs --------------------------------------------------------------------------------


async def launch_run(
    client: httpx.AsyncClient, pipeline_id: int, key: str = SUPER_KEY, *,
    persist: bool = False, **body: Any,
) -> dict[str, Any]:
    """POST /runs → the queued run. `persist` is off unless asked for: most tests want the
    run, not a changed feed."""
    payload = {"pipeline_id": pipeline_id, "persist": persist, **body}
    return await expect(await client.post("/runs", json=payload, headers=h(key)), 202)  # type: ignore[no-any-return]


def ok(response: httpx.Response, status: int = 200) -> Any:
    """A blocking client's `expect`: the JSON body after checking the status."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    return response.json()


def run_sync(http: httpx.Client, pipeline_id: int, timeout: float = 30) -> dict[str, Any]:
    """A persisted run through a real server (a blocking client), to its final state."""
    run = ok(http.post("/runs", json={"pipeline_id": pipeline_id, "persist": True}), 202)
    deadline = time.monotonic() + timeout
    while run["state"] not in FINISHED:
        assert time.monotonic() < deadline, run
        time.sleep(0.1)
        run = ok(http.get(f"/runs/{run['id']}"))
    return run  # type: ignore[no-any-return]


async def get_run(client: httpx.AsyncClient, run_id: int, key: str = SUPER_KEY) -> dict[str, Any]:
    return await expect(await client.get(f"/runs/{run_id}", headers=h(key)))  # type: ignore[no-any-return]


async def wait_run(
    client: httpx.AsyncClient, run_id: int, states: str | frozenset[str] | set[str] = FINISHED,
    *, key: str = SUPER_KEY, timeout: float = 30,
) -> dict[str, Any]:
    """The run once it is in one of `states` (default: finished); fails after `timeout` s."""
    wanted = {states} if isinstance(states, str) else states
    deadline = time.monotonic() + timeout
    while True:
        run = await get_run(client, run_id, key)
        if run["state"] in wanted:
            return run
        assert time.monotonic() < deadline, f"run {run_id} stuck in {run['state']}, wanted {wanted}"
        await asyncio.sleep(0.05)


async def run_to_end(
    client: httpx.AsyncClient, pipeline_id: int, key: str = SUPER_KEY, **body: Any
) -> dict[str, Any]:
    """Launch a run and wait until it finishes."""
    run = await launch_run(client, pipeline_id, key, **body)
    return await wait_run(client, run["id"], key=key)


async def wait_pid(client: httpx.AsyncClient, run_id: int, timeout: float = 10) -> int:
    """The pid of the run's engine child, once /jobs shows one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in (await expect(await client.get("/jobs", headers=h())))["items"]:
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
        assert time.monotonic() < deadline, f"pid {pid} still alive"
        await asyncio.sleep(0.05)


# --- loopback upstream feeds -------------------------------------------------------------

Route = Callable[[BaseHTTPRequestHandler], bool]


class _Handler(SimpleHTTPRequestHandler):
    server: LoopbackServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self.server.requests.append((self.path, dict(self.headers.items())))
        route = self.server.routes.get(self.path.split("?", 1)[0])
        try:
            if route is not None and route(self):
                return
            super().do_GET()
        except OSError:
            pass  # the client gave up (a timeout test): nothing to answer


class LoopbackServer(ThreadingHTTPServer):
    """An upstream feed on 127.0.0.1: serves a folder (tests/fixtures/feeds by default);
    `routes` answer other paths (a route returning False falls through to the folder);
    `requests` records every (path, headers)."""

    daemon_threads = True

    def __init__(self, directory: Path = FEEDS, routes: Mapping[str, Route] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), functools.partial(_Handler, directory=str(directory)))
        self.routes: dict[str, Route] = dict(routes or {})
        self.requests: list[tuple[str, dict[str, str]]] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


S = TypeVar("S", bound=ThreadingHTTPServer)


@contextmanager
def serving(server: S) -> Iterator[S]:
    """`server` answering in a thread until the block ends; then shut down and closed."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def loopback(
    directory: Path = FEEDS, routes: Mapping[str, Route] | None = None
) -> Iterator[LoopbackServer]:
    with serving(LoopbackServer(directory, routes)) as server:
        yield server


def answer(
    handler: BaseHTTPRequestHandler, status: int, body: bytes = b"",
    headers: Mapping[str, str] | None = None, *, length: int | None = None,
) -> bool:
    """Send one response from a route; `length` may claim more bytes than `body` has (a
    truncated answer). True: the route answered."""
    handler.send_response(status)
    for name, value in (headers or {"Content-Type": "text/plain"}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body) if length is None else length))
    handler.end_headers()
    handler.wfile.write(body)
    handler.wfile.flush()
    return True


def query(handler: BaseHTTPRequestHandler, name: str, default: str) -> str:
    return parse_qs(urlparse(handler.path).query).get(name, [default])[0]


DELAYED_BODY = b"8.8.8.8\n1.1.1.1\nevil.example\n"


def _delayed(handler: BaseHTTPRequestHandler) -> bool:
    time.sleep(float(query(handler, "delay", "0")))
    return answer(handler, 200, DELAYED_BODY)


@contextmanager
def upstream() -> Iterator[int]:
    """The port of a loopback feed whose /feed answers after ?delay=SECONDS."""
    with loopback(routes={"/feed": _delayed}) as server:
        yield server.port


def slow_yaml(port: int, delay: float, name: str = "slow") -> str:
    """A config whose only source answers after `delay` seconds (loopback, no network)."""
    return (
        "sources:\n"
        f"  - name: {name}\n"
        f"    url: http://127.0.0.1:{port}/feed?delay={delay}\n"
        "    timeout_seconds: 600\n"
    )


# --- real service processes --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any EDL_* leaking in, plus `extra`."""
    return {k: v for k, v in os.environ.items() if not k.startswith("EDL_")} | extra


def service_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """`clean_env` with a private state folder and cheap bcrypt."""
    return clean_env(
        EDL_DATA_DIR=str(tmp_path / "data"), EDL_LOG_DIR=str(tmp_path / "logs"),
        EDL_BCRYPT_ROUNDS="4",
    ) | extra


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if the process has not stopped within 15 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def running_server(
    env: dict[str, str], cwd: Path, *, port: int | None = None, log: Path | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Start `edl-api serve` on loopback, wait until /healthz answers, yield (process, base
    URL), then `stop` it. Output goes to `log` (appended) or nowhere."""
    port = port or free_port()
    with log.open("ab") if log is not None else open(os.devnull, "wb") as output:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edl_api", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT,
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
        stop(proc)


# --- the app's routes --------------------------------------------------------------------


def walk_routes(
    routes: Sequence[Any], inherited: tuple[Any, ...] = ()
) -> Iterator[tuple[Any, tuple[Any, ...]]]:
    """Every leaf route, through lazily included routers, with the dependencies (`Depends`)
    its enclosing routers add."""
    for route in routes:
        router = getattr(route, "original_router", None)
        if router is None:
            yield route, inherited
            continue
        context = getattr(route, "include_context", None)
        added = (*router.dependencies, *getattr(context, "dependencies", ()))
        yield from walk_routes(router.routes, inherited + tuple(added))


def api_routes(app: Any) -> list[APIRoute]:
    return [route for route, _ in walk_routes(app.routes) if isinstance(route, APIRoute)]
