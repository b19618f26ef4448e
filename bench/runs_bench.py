"""Run-layer benchmark: API latency while a 1M-indicator run executes.

    python bench/runs_bench.py                       # SQLite, 1,000,000 indicators
    python bench/runs_bench.py --indicators 200000 --max-seconds 120
    python bench/runs_bench.py --pg postgresql+asyncpg://postgres@127.0.0.1:5432/test
    python bench/runs_bench.py --json out.json     # also write p50/p99 per phase as JSON
    python bench/runs_bench.py --polls 200 --api 20 --healthz 20  # the load during the run (/s)

Starts `edl-api serve` on a loopback port (one uvicorn process, its own dispatcher),
publishes a small pipeline, then measures p50/p99 of `GET /healthz` and of that
pipeline's feed (`GET /pipelines/{id}/edl/ipv4`, feed served from the cache) idle
(sequential requests), then under a paced load while a run of a 1M-line local file
source executes (engine child process, then publishing and indexing in the API
process): `--polls` conditional feed polls per second (`If-None-Match`: a 304 from
memory, what a firewall fleet mostly gets), `--api` calls per second of
`GET /runs/{id}` of the big run (a database read: three queries) and `--healthz` calls per
second of `GET /healthz` (the API without the database: issue #4's bound is on it and on
the feed). Requests start on a fixed schedule whether or not
earlier ones answered, so a stalled loop shows up as latency instead of fewer samples.
Each request is tagged with the phase of the run when it started, from the run's
`progress.stage` as those API calls read it: fetch (claimed/starting/engine/fetch),
engine (rules/aggregate/done), publish (publishing), index (indexing).
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


async def timed_get(client: httpx.AsyncClient, path: str, headers: dict[str, str]
                    ) -> tuple[int | str, float]:
    """(status, ms) of one GET; a failed request counts, with its duration, not a crash."""
    started = time.perf_counter()
    try:
        status: int | str = (await client.get(path, headers=headers)).status_code
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    return status, (time.perf_counter() - started) * 1000


async def sample(client: httpx.AsyncClient, path: str, headers: dict[str, str],
                 store: list[tuple[float, float]], statuses: dict[int | str, int]) -> None:
    status, ms = await timed_get(client, path, headers)
    store.append((time.time(), ms))
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


# progress.stage → the phase the bench reports (see the module docstring).
PHASES = {"queued": "fetch", "claimed": "fetch", "starting": "fetch", "start": "fetch",
          "engine": "fetch", "fetch": "fetch", "rules": "engine", "aggregate": "engine",
          "done": "engine", "publishing": "publish", "indexing": "index",
          "recording": "index", "finished": "after"}
PHASE_ORDER = ("fetch", "engine", "publish", "index", "after")
# The requests timed during the run, each on its own schedule.
DURING = ("feed", "api", "healthz")


class RawPoller:
    """Keep-alive HTTP/1.1 GETs of one prebuilt request over a pool of raw connections:
    a few microseconds of client CPU a poll (httpx costs ~1 ms, which on a 2-core box
    competes with the server it measures)."""

    def __init__(self, base: str, path: str, headers: dict[str, str]) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}",
                 *(f"{k}: {v}" for k, v in headers.items())]
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def get(self) -> int:
        if self.idle:
            try:
                return await self._get(self.idle.pop())
            except (asyncio.IncompleteReadError, ConnectionResetError):
                pass  # the server closed an idle keep-alive connection: a new one
        return await self._get(await asyncio.open_connection(self.host, self.port))

    async def _get(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> int:
        reader, writer = conn
        try:
            writer.write(self.request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        self.idle.append(conn)
        return status

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def watch_feed(client: httpx.AsyncClient, feed: str, old_etag: str | None,
                     posted: float, deadline: float) -> float | None:
    """Seconds from `posted` (before POST /runs) to the first GET of `feed` that answers
    200 with another ETag than before the run: the new version is served. Headers only
    (the body of a 1M feed is 14 MB); every 50 ms."""
    h = {"X-API-Key": KEY}
    while time.monotonic() < deadline:
        try:
            async with client.stream("GET", feed, headers=h) as r:
                if r.status_code == 200 and r.headers.get("etag") != old_etag:
                    return time.monotonic() - posted
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.05)
    return None


async def paced_load(client: httpx.AsyncClient, feed: str, run_id: int, args: argparse.Namespace,
                     deadline: float, posted: float) -> dict[str, Any]:
    """`args.polls` feed polls, `args.api` run reads and `args.healthz` health checks per
    second until the run ends.
    Samples are (wall time, ms, phase at start). `ended` is the seconds from `posted` to
    the first answer that shows the run finished (20 reads/s: within ~50 ms)."""
    h = {"X-API-Key": KEY}
    ended: list[float] = []
    etag = (await client.get(feed, headers=h)).headers.get("etag", "")
    poller = RawPoller(str(client.base_url).rstrip("/"), feed,
                       {**h, "If-None-Match": etag} if etag else h)
    now = {"phase": "fetch", "state": "queued"}
    feed_ms: list[tuple[float, float, str]] = []
    api_ms: list[tuple[float, float, str]] = []
    health_ms: list[tuple[float, float, str]] = []
    statuses: dict[int | str, int] = {}
    pending: set[asyncio.Task[None]] = set()

    async def poll() -> None:
        phase, started = now["phase"], time.perf_counter()
        try:
            status: int | str = await poller.get()
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            status = type(exc).__name__
        feed_ms.append((time.time(), (time.perf_counter() - started) * 1000, phase))
        statuses[status] = statuses.get(status, 0) + 1

    async def api() -> None:
        phase, started = now["phase"], time.perf_counter()
        try:
            r = await client.get(f"/runs/{run_id}", headers=h)
            status: int | str = r.status_code
            if r.status_code == 200:
                run = r.json()
                now["state"] = run["state"]
                if run["state"] not in ("queued", "running") and not ended:
                    ended.append(time.monotonic() - posted)
                stage = str((run.get("progress") or {}).get("stage") or run["state"])
                now["phase"] = "after" if run["state"] not in ("queued", "running") else \
                    PHASES.get(stage, now["phase"])
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        api_ms.append((time.time(), (time.perf_counter() - started) * 1000, phase))
        statuses[f"api {status}"] = statuses.get(f"api {status}", 0) + 1

    async def health() -> None:
        phase = now["phase"]
        status, ms = await timed_get(client, "/healthz", {})
        health_ms.append((time.time(), ms, phase))
        statuses[f"healthz {status}"] = statuses.get(f"healthz {status}", 0) + 1

    def launch(job: Any) -> None:
        task = asyncio.create_task(job())
        pending.add(task)
        task.add_done_callback(pending.discard)

    started = time.monotonic()
    polls = api_calls = health_calls = 0
    while now["state"] in ("queued", "running") and time.monotonic() < deadline:
        elapsed = time.monotonic() - started
        while polls < elapsed * args.polls:
            polls += 1
            launch(poll)
        while api_calls < elapsed * args.api:
            api_calls += 1
            launch(api)
        while health_calls < elapsed * args.healthz:
            health_calls += 1
            launch(health)
        await asyncio.sleep(0.002)
    if pending:
        await asyncio.wait(pending, timeout=30)
    poller.close()
    return {"feed": feed_ms, "api": api_ms, "healthz": health_ms, "statuses": statuses,
            "seconds": time.monotonic() - started, "ended": ended[0] if ended else None}


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
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
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

        big_feed = f"/pipelines/{pipelines['big']}/edl/ipv4"
        before = await client.get(big_feed, headers=h)
        old_etag = before.headers.get("etag") if before.status_code == 200 else None
        posted = time.monotonic()
        big = (await client.post("/runs", json={"pipeline_id": pipelines["big"]},
                                 headers=h)).json()
        watcher = asyncio.create_task(watch_feed(client, big_feed, old_etag, posted, deadline))
        during = await paced_load(client, feed, big["id"], args, deadline, posted)
        run_seconds = time.monotonic() - posted
        try:
            served = await asyncio.wait_for(watcher, timeout=5)
        except TimeoutError:  # finished, yet its feed never answered with a new version
            served = None
        big_run = (await client.get(f"/runs/{big['id']}", headers=h)).json()
        log = (await client.get(f"/runs/{big['id']}/logs", headers=h)).text
        retag(during, log)
        return {
            "log": log,
            "small_run": small_run["state"],
            "big_run": {
                "state": big_run["state"], "seconds": round(run_seconds, 1),
                # POST /runs -> its new feed served; -> the run finished (indexed)
                "served_s": served, "ended_s": during["ended"],
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


def retag(during: dict[str, Any], log: str) -> None:
    """The stored stage may still name the engine's last step while the API process
    publishes: the run log's dispatcher notes (1 s stamps) mark publish and index."""
    exited = _stamp(log, "dispatcher: engine exited")
    live = _stamp(log, "feeds live after")
    for name in DURING:
        samples = during[name]
        for i, (t, ms, phase) in enumerate(samples):
            if phase in ("engine", "publish") and exited is not None and t >= exited:
                phase = "index" if live is not None and t >= live + 1 else "publish"
            samples[i] = (t, ms, phase)


def by_phase(samples: list[tuple[float, float, str]]) -> dict[str, list[float]]:
    phases: dict[str, list[float]] = {"during (all)": [ms for _, ms, _ in samples]}
    for phase in PHASE_ORDER:
        values = [ms for _, ms, p in samples if p == phase]
        if values:
            phases[phase] = values
    return phases


def stats(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": pct(values, .5), "p99": pct(values, .99),
            "max": max(values or [0.0])}


def summarise(result: dict[str, Any], args: argparse.Namespace) -> str:
    during = result["during"]
    lines = [
        f"load during the run: {args.polls} feed polls/s (If-None-Match) + {args.api} "
        f"GET /runs/{{id}}/s + {args.healthz} GET /healthz/s, paced; {during['seconds']:.1f} s",
        f"{'request':<8} {'phase':<14} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}",
    ]
    rows: list[tuple[str, str, list[float]]] = [
        (name, "idle", [ms for _, ms in result["idle"][name]]) for name in ("healthz", "feed")
    ]
    for name in DURING:
        rows.extend((name, phase, values) for phase, values in by_phase(during[name]).items())
    for name, phase, values in rows:
        lines.append(
            f"{name:<8} {phase:<14} {len(values):>6} {pct(values, .5):>8.2f} "
            f"{pct(values, .99):>8.2f} {max(values or [float('nan')]):>8.2f}"
        )
    lines.append(f"statuses idle={result['idle']['statuses']} during={during['statuses']}")
    lines.append(f"small run: {result['small_run']}; big run: "
                 + json.dumps(result["big_run"], default=str))
    lines.append("big run log:")
    lines.extend("  " + line for line in result["log"].splitlines()[-12:])
    return "\n".join(lines)


def figures(result: dict[str, Any]) -> dict[str, Any]:
    """p50/p99/max (ms) of each request idle, during the run, and per phase, for --json."""
    during = result["during"]
    out: dict[str, Any] = {"big_run": result["big_run"], "small_run": result["small_run"],
                           "statuses": {phase: {str(k): v for k, v in
                                                result[phase]["statuses"].items()}
                                        for phase in ("idle", "during")}}
    for name in ("healthz", "feed"):
        out[f"{name}_idle"] = stats([ms for _, ms in result["idle"][name]])
    out["feed_during"] = stats([ms for _, ms, _ in during["feed"]])
    out["api_during"] = stats([ms for _, ms, _ in during["api"]])
    out["healthz_during"] = stats([ms for _, ms, _ in during["healthz"]])
    out["phases"] = {
        phase: {name: stats([ms for _, ms, p in during[name] if p == phase])
                for name in DURING}
        for phase in PHASE_ORDER
    }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--indicators", type=int, default=1_000_000)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--max-seconds", type=float, default=240.0)
    parser.add_argument("--pg", default=None, help="EDL_DATABASE_URL (default: SQLite)")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folder (server output, logs, database)")
    parser.add_argument("--polls", type=float, default=200.0,
                        help="feed polls per second during the run")
    parser.add_argument("--healthz", type=float, default=20.0,
                        help="GET /healthz calls per second during the run")
    parser.add_argument("--api", type=float, default=20.0,
                        help="GET /runs/{id} calls per second during the run")
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
        print(summarise(result, args))
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
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
