"""Run-layer benchmark: API latency while a 1M-indicator run executes.

    python bench/runs_bench.py                       # SQLite, 1,000,000 indicators
    python bench/runs_bench.py --indicators 200000 --max-seconds 120
    python bench/runs_bench.py --pg postgresql+asyncpg://postgres@127.0.0.1:5432/test
    python bench/runs_bench.py --json out.json     # also write p50/p99 per phase as JSON

Starts `edl-api serve` on a loopback port (one uvicorn process, its own dispatcher),
publishes a small pipeline, then measures p50/p99 of `GET /healthz` and of that
pipeline's feed (`GET /pipelines/{id}/edl/ipv4`, feed served from the cache) twice:
idle, and while a run of a 1M-line local file source executes (engine child process,
then publishing in the API process). Sequential requests, keep-alive, one client.
The server is stopped by its pid (SIGTERM, then SIGKILL); everything is bounded by
--max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-super-key-0123456789abcdef"
SMALL_YAML = "sources:\n  - name: small\n    values: [8.8.8.8, 1.1.1.1, 9.9.9.9]\n"
BIG_YAML = (
    "sources:\n  - name: million\n    path: million.txt\n    max_bytes: 200000000\n"
    "pipeline:\n  outputs: [ipv4, cidr, ip]\n  guard:\n    max_shrink_percent: 100\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_source(path: Path, count: int) -> None:
    """`count` distinct public IPv4 addresses, spread so aggregation merges few."""
    start = int(ipaddress.IPv4Address("11.0.0.0"))
    with path.open("w", encoding="ascii") as out:
        for i in range(count):
            out.write(f"{ipaddress.IPv4Address(start + i * 7)}\n")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def sample(client: httpx.AsyncClient, path: str, headers: dict[str, str],
                 store: list[tuple[float, float]], statuses: dict[int | str, int]) -> None:
    started = time.perf_counter()
    try:
        status: int | str = (await client.get(path, headers=headers)).status_code
    except httpx.HTTPError as exc:  # a stall counts, with its duration, not a crash
        status = type(exc).__name__
    store.append((time.time(), (time.perf_counter() - started) * 1000))
    statuses[status] = statuses.get(status, 0) + 1


async def measure(client: httpx.AsyncClient, feed: str, until: Any, pause: float = 0.005
                  ) -> dict[str, Any]:
    health: list[tuple[float, float]] = []
    feed_ms: list[tuple[float, float]] = []
    statuses: dict[int | str, int] = {}
    headers = {"X-API-Key": KEY}
    while not await until():
        await sample(client, "/healthz", {}, health, statuses)
        await sample(client, feed, headers, feed_ms, statuses)
        await asyncio.sleep(pause)
    return {"healthz": health, "feed": feed_ms, "statuses": statuses}


async def wait_state(client: httpx.AsyncClient, run_id: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = (await client.get(f"/runs/{run_id}", headers={"X-API-Key": KEY})).json()
        if run["state"] not in ("queued", "running"):
            return run  # type: ignore[no-any-return]
        await asyncio.sleep(0.2)
    raise TimeoutError(f"run {run_id} did not finish in {timeout} s")


async def scenario(base: str, args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    h = {"X-API-Key": KEY}
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        profile = (await client.post("/profiles", json={"name": "bench"}, headers=h)).json()
        pid = profile["profile"]["id"]
        # `path:` sources read the profile's own folder: the file goes where the API says.
        folder = (await client.get(f"/profiles/{pid}", headers=h)).json()["source_dir"]
        for staged in Path(folder).parent.glob("*.txt"):
            staged.rename(Path(folder) / staged.name)
        pipelines = {}
        for name, yaml in (("small", SMALL_YAML), ("big", BIG_YAML)):
            config = (await client.post(f"/profiles/{pid}/configs",
                                        json={"name": name, "yaml": yaml}, headers=h)).json()
            pipeline = (await client.post("/pipelines", json={
                "profile_config_id": config["id"], "name": name}, headers=h)).json()
            pipelines[name] = pipeline["id"]
        small = (await client.post("/runs", json={"pipeline_id": pipelines["small"]},
                                   headers=h)).json()
        small_run = await wait_state(client, small["id"], 30)
        feed = f"/pipelines/{pipelines['small']}/edl/ipv4"
        for _ in range(20):  # warm-up
            await client.get("/healthz")
            await client.get(feed, headers=h)

        idle_until = time.monotonic() + args.idle_seconds

        async def idle_done() -> bool:
            return time.monotonic() >= idle_until

        idle = await measure(client, feed, idle_done)

        big = (await client.post("/runs", json={"pipeline_id": pipelines["big"]},
                                 headers=h)).json()
        state = {"value": "queued", "checked": 0.0}
        started = time.monotonic()

        async def run_done() -> bool:
            now = time.monotonic()
            if now >= deadline:
                return True
            if now - state["checked"] >= 0.5:  # type: ignore[operator]
                state["checked"] = now
                try:
                    run = (await client.get(f"/runs/{big['id']}", headers=h)).json()
                except httpx.HTTPError as exc:
                    print(f"GET /runs/{big['id']} failed after "
                          f"{time.monotonic() - now:.1f} s: {type(exc).__name__}")
                    return False
                state["value"] = run["state"]
            return state["value"] not in ("queued", "running")

        during = await measure(client, feed, run_done)
        run_seconds = time.monotonic() - started
        big_run = (await client.get(f"/runs/{big['id']}", headers=h)).json()
        log = (await client.get(f"/runs/{big['id']}/logs", headers=h)).text
        return {
            "log": log,
            "small_run": small_run["state"],
            "big_run": {
                "state": big_run["state"], "seconds": round(run_seconds, 1),
                "counts": big_run.get("counts"), "errors": big_run.get("errors"),
                "sources": big_run.get("metadata", {}).get("sources"),
            },
            "idle": idle, "during": during,
        }


def _stamp(log: str, marker: str) -> float | None:
    for line in log.splitlines():
        if marker in line:
            return calendar.timegm(time.strptime(line.split(" ", 1)[0], "%Y-%m-%dT%H:%M:%SZ"))
    return None


def summarise(result: dict[str, Any]) -> str:
    # The run log's stamps (1 s resolution) split "during" into the engine phase (child
    # process) and the publishing phase (artifacts stored by the API process).
    exited = _stamp(result["log"], "dispatcher: engine exited")
    lines = [
        f"{'request':<8} {'phase':<16} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}",
    ]
    for name in ("healthz", "feed"):
        phases: dict[str, list[float]] = {
            "idle": [ms for _, ms in result["idle"][name]],
            "during (all)": [ms for _, ms in result["during"][name]],
        }
        if exited is not None:
            phases["during engine"] = [ms for t, ms in result["during"][name] if t < exited]
            phases["during publish"] = [ms for t, ms in result["during"][name] if t >= exited]
        for phase, values in phases.items():
            lines.append(
                f"{name:<8} {phase:<16} {len(values):>6} {pct(values, .5):>8.2f} "
                f"{pct(values, .99):>8.2f} {max(values or [float('nan')]):>8.2f}"
            )
    lines.append(f"statuses idle={result['idle']['statuses']} "
                 f"during={result['during']['statuses']}")
    lines.append(f"small run: {result['small_run']}; big run: "
                 + json.dumps(result["big_run"], default=str))
    lines.append("big run log:")
    lines.extend("  " + line for line in result["log"].splitlines()[-12:])
    return "\n".join(lines)


def figures(result: dict[str, Any]) -> dict[str, Any]:
    """p50/p99/max (ms) of each request, idle and during the run, for --json."""
    out: dict[str, Any] = {"big_run": result["big_run"], "small_run": result["small_run"],
                           "statuses": {phase: {str(k): v for k, v in
                                                result[phase]["statuses"].items()}
                                        for phase in ("idle", "during")}}
    for name in ("healthz", "feed"):
        for phase in ("idle", "during"):
            values = [ms for _, ms in result[phase][name]]
            out[f"{name}_{phase}"] = {"n": len(values), "p50": pct(values, .5),
                                      "p99": pct(values, .99), "max": max(values or [0.0])}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--indicators", type=int, default=1_000_000)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--max-seconds", type=float, default=240.0)
    parser.add_argument("--pg", default=None, help="EDL_DATABASE_URL (default: SQLite)")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edl-runs-bench-"))
    server: subprocess.Popen[bytes] | None = None
    try:
        (work / "sources").mkdir()
        write_source(work / "sources" / "million.txt", args.indicators)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDL_")}
        env.update({
            "EDL_DATA_DIR": str(work / "data"), "EDL_LOG_DIR": str(work / "logs"),
            "EDL_API_KEY": KEY, "EDL_SOURCE_DIR": str(work / "sources"),
            "EDL_BCRYPT_ROUNDS": "4", "EDL_LOG_LEVEL": "WARNING",
        })
        if args.pg:
            env["EDL_DATABASE_URL"] = args.pg
        server = subprocess.Popen(
            [sys.executable, "-m", "edl_api", "serve", "--port", str(port)],
            env=env, cwd=str(ROOT), stdout=(work / "server.out").open("wb"),
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + args.max_seconds
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                print((work / "server.out").read_text()[-3000:])
                return 1
            time.sleep(0.1)
        result = asyncio.run(scenario(base, args, deadline))
        print(f"runs_bench: {args.indicators} indicators, "
              f"{'PostgreSQL' if args.pg else 'SQLite'}, {os.cpu_count()} CPUs")
        print(summarise(result))
        if args.json:
            Path(args.json).write_text(json.dumps(figures(result), indent=2, default=str))
        return 0
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
