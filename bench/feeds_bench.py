"""Hosted-feed benchmark, side by side with nginx serving the same bytes.

    python bench/feeds_bench.py                      # SQLite, the sizes of issue 5
    python bench/feeds_bench.py --pg postgresql+asyncpg://postgres@127.0.0.1:5432/test
    python bench/feeds_bench.py --lines 10000 --search-pipelines 5 --publish-entries 100000
    python bench/feeds_bench.py --json out.json      # also write every figure as JSON

1. Serving: a 100k-line feed fetched with a feed token over HTTP Basic, by wrk, from
   `edl-api serve` (one uvicorn process, httptools + uvloop) and from nginx (one worker,
   `gzip_static on`, the artifact's own bytes as feed.txt / feed.txt.gz): plain, gzip,
   and 304 (If-None-Match with each server's own ETag). Median of --repeat runs each.
2. Search: p50/p95 of GET /profiles/{id}/pipelines/search over HTTP with
   --search-pipelines × --search-entries indicators stored.
3. Publishing: a --publish-entries IPv4 feed (first publish, then a steady-state one
   with 1 % churn), as the dispatcher does it: the feeds committed (live: the figure the
   target is about), then the indicator store (search, provenance) and its commit.

Everything binds to 127.0.0.1; servers are stopped by their pid.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edl_api.app import create_app  # noqa: E402
from edl_api.engine.entries import FeedEntry  # noqa: E402
from edl_api.engine.entries_file import ENTRIES_FILE, write_entries  # noqa: E402
from edl_api.feeds import indicators as indicator_store  # noqa: E402
from edl_api.feeds.publish import PublishOptions  # noqa: E402
from edl_api.feeds.publish import publish as publish_run  # noqa: E402
from edl_api.models import Artifact, Pipeline, PipelineRun, utcnow  # noqa: E402
from edl_api.runs.recovery import worker_identity  # noqa: E402
from edl_api.settings import Settings  # noqa: E402
from edl_api.state import AppState  # noqa: E402

KEY = "bench-super-key-0123456789abcdef"
YAML = (
    "sources:\n  - name: bench\n    values: [8.8.8.8]\n"
    "pipeline:\n  guard:\n    max_shrink_percent: 100\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ipv4_lines(count: int, seed: int = 0, offset: int = 0) -> list[str]:
    """`count` distinct public IPv4 addresses, sorted numerically."""
    base = (11 << 24) + offset
    step = 3 + seed
    return [socket.inet_ntoa((base + i * step).to_bytes(4, "big")) for i in range(count)]


def write_run(out_dir: Path, lines: list[str], source: str = "bench") -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ipv4.txt").write_text("".join(f"{v}\n" for v in lines))
    # the engine's own grouped entries file, as `python -m edl_api.engine` writes it
    sources: list[str] = [source]
    tags: list[str] = []
    entries = [FeedEntry(value, "ipv4", sources, tags, 50) for value in lines]
    write_entries({"ipv4": entries}, out_dir / ENTRIES_FILE)


def pg_admin(pg_url: str, sql: str) -> None:
    """One statement on the server's maintenance database (CREATE/DROP DATABASE)."""
    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(pg_url)

    async def run() -> None:
        conn = await asyncpg.connect(host=url.host, port=url.port or 5432,
                                     user=url.username, database=url.database)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def throwaway_database(pg_url: str, prefix: str) -> tuple[str, str]:
    """(URL, name) of a new database for this bench process, made on `pg_url`'s server."""
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{os.getpid()}"
    pg_admin(pg_url, f'CREATE DATABASE "{name}"')
    return make_url(pg_url).set(database=name).render_as_string(hide_password=False), name


async def new_run(session: Any, pipeline_id: int, worker: str) -> PipelineRun:
    """A run row as a dispatcher claims it (running, owned by a live worker on this host,
    so recovery leaves the run alone)."""
    pipeline = await session.get(Pipeline, pipeline_id)
    run = PipelineRun(
        pipeline_id=pipeline_id, profile_id=pipeline.profile_id,
        profile_config_id=pipeline.profile_config_id, config_version=1, config_snapshot=YAML,
        state="running", trigger="api", mode="full", worker=worker,
    )
    session.add(run)
    await session.flush()
    return run


async def publish(app: Any, pipeline_id: int, out_dir: Path) -> tuple[float, float, int]:
    """As the dispatcher publishes (`feeds.publish.publish`: feeds committed live, then
    the indicator store). Returns (seconds until live, seconds in all, run id)."""
    state = AppState.of(app)
    # A live worker that is not the app's dispatcher (this process's parent): its watchdog
    # would resolve a run of its own identity that has no task of its own mid-publish.
    worker = worker_identity(os.getppid())
    async with state.sessionmaker() as session:
        run = await new_run(session, pipeline_id, worker)
        await session.commit()
        run_id = run.id
    assert run_id is not None
    outcome = await publish_run(
        state.sessionmaker, run_id, out_dir, owner=worker,
        options=PublishOptions(max_shrink_percent=100),
        keep_runs=state.settings.artifact_keep_runs,
    )
    total = outcome.seconds  # pruning, which follows, is not publishing
    assert outcome.owned
    assert not outcome.errors, outcome.errors
    async with state.sessionmaker() as session, session.begin():
        finished = await session.get(PipelineRun, run_id)
        finished.state = "succeeded"
    live = outcome.live_after_seconds if outcome.live_after_seconds is not None else total
    return live, total, run_id


async def setup(args: argparse.Namespace, settings: Settings, work: Path) -> dict[str, Any]:
    app = create_app(settings)
    facts: dict[str, Any] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            hdr = {"X-API-Key": KEY}
            made = (await client.post("/profiles", json={"name": "bench"}, headers=hdr)).json()
            profile_id, profile_key = made["profile"]["id"], made["api_key"]
            config = (await client.post(f"/profiles/{profile_id}/configs",
                                        json={"name": "c", "yaml": YAML}, headers=hdr)).json()

            async def pipeline(name: str) -> int:
                body = {"profile_config_id": config["id"], "name": name}
                return int((await client.post("/pipelines", json=body, headers=hdr)).json()["id"])

            feed_pipeline = await pipeline("feed")
            made_token = (await client.post(f"/profiles/{profile_id}/feed-tokens",
                                            json={"name": "fw", "pipeline_ids": [feed_pipeline]},
                                            headers=hdr)).json()
            # A feed token is a device (vendor generic): every poll it makes is recorded.
            token, device_id = made_token["token"], made_token["id"]
            write_run(work / "feed-run", ipv4_lines(args.lines))
            await publish(app, feed_pipeline, work / "feed-run")
            async with AppState.of(app).sessionmaker() as session:
                from sqlalchemy import select

                artifact = (await session.execute(
                    select(Artifact).where(Artifact.pipeline_id == feed_pipeline,
                                           Artifact.indicator_type == "ipv4")
                )).scalar_one()
                facts.update(content=artifact.content, gzip=artifact.content_gzip,
                             sha=artifact.sha256)

            # Search data: N pipelines × M indicators (ipv4, cidr, fqdn mixed), bulk-loaded.
            started = time.perf_counter()
            search_pipelines = [await pipeline(f"s{i}") for i in range(args.search_pipelines)]
            now = indicator_store.RawTime(AppState.of(app).engine.dialect.name).to_raw(utcnow())
            for index, pid in enumerate(search_pipelines):
                rows: list[tuple[Any, ...]] = []
                per = args.search_entries
                for i in range(per):
                    n = index * per + i
                    if i % 5 == 0:
                        kind, value = "cidr", f"{20 + n % 200}.{(n >> 8) % 256}.{n % 256}.0/24"
                    elif i % 5 == 1:
                        kind, value = "fqdn", f"*.host{n}.example.com"
                    else:
                        kind = "ipv4"
                        value = socket.inet_ntoa(((40 << 24) + n * 7).to_bytes(4, "big"))
                    rows.append((pid, kind, value, '["bench"]', "[]", 50, now, now, None))
                async with AppState.of(app).sessionmaker() as session:
                    conn = await session.connection()
                    await conn.exec_driver_sql("SELECT 1")
                    await indicator_store.bulk_insert(conn, rows)
                    await session.commit()
            facts["search_load_s"] = time.perf_counter() - started

            # Publishing a large feed: first time, then with 1 % churn.
            # --publish-repeat > 1: each repetition publishes into a fresh pipeline; the
            # median of the repetitions is reported.
            if args.publish_entries:
                lines = ipv4_lines(args.publish_entries, seed=1)
                write_run(work / "big-1", lines)
                churn = max(1, len(lines) // 100)
                again = lines[churn:] + ipv4_lines(churn, seed=1, offset=args.publish_entries * 5)
                write_run(work / "big-2", sorted(set(again), key=lambda v: socket.inet_aton(v)))
                firsts, agains, first_totals, again_totals = [], [], [], []
                for r in range(max(1, args.publish_repeat)):
                    big = await pipeline(f"big{r}")
                    live, total, _ = await publish(app, big, work / "big-1")
                    firsts.append(live)
                    first_totals.append(total)
                    live, total, _ = await publish(app, big, work / "big-2")
                    agains.append(live)
                    again_totals.append(total)
                facts["publish_first_s"] = statistics.median(firsts)
                facts["publish_again_s"] = statistics.median(agains)
                facts["publish_first_total_s"] = statistics.median(first_totals)
                facts["publish_again_total_s"] = statistics.median(again_totals)
                facts["publish_first_runs"], facts["publish_again_runs"] = firsts, agains
    facts.update(profile_id=profile_id, profile_key=profile_key, token=token,
                 feed_pipeline=feed_pipeline, device_id=device_id)
    return facts


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def start_api(settings_env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    """The service exactly as `edl-api serve` runs it (uvicorn picks httptools + uvloop)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDL_")} | settings_env
    handle = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edl_api", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
    )
    wait_port(port)
    return proc


def start_nginx(work: Path, port: int, content: bytes, gz: bytes) -> subprocess.Popen[bytes]:
    root = work / "nginx-root"
    root.mkdir()
    work.chmod(0o755)  # nginx workers run unprivileged
    (root / "feed.txt").write_bytes(content)
    (root / "feed.txt.gz").write_bytes(gz)
    for path in (root, root / "feed.txt", root / "feed.txt.gz"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    conf = work / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  default_type text/plain;
  client_body_temp_path {work}/nginx-tmp;
  proxy_temp_path {work}/nginx-tmp; fastcgi_temp_path {work}/nginx-tmp;
  uwsgi_temp_path {work}/nginx-tmp; scgi_temp_path {work}/nginx-tmp;
  server {{
    listen 127.0.0.1:{port};
    root {root};
    gzip_static on;
    location / {{ }}
  }}
}}
""")
    (work / "nginx-tmp").mkdir()
    proc = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf),
                             "-p", str(work)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc


BARE_APP = """
import sys
PLAIN = open(sys.argv[1], "rb").read()
GZ = open(sys.argv[2], "rb").read()
ETAG = b'"bare"'

def headers(body, extra=()):
    return [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode()),
            (b"etag", ETAG), *extra]

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    seen = dict(scope["headers"])
    if seen.get(b"if-none-match") == ETAG:
        await send({"type": "http.response.start", "status": 304, "headers": [(b"etag", ETAG)]})
        await send({"type": "http.response.body", "body": b""})
        return
    if b"gzip" in seen.get(b"accept-encoding", b""):
        body, extra = GZ, [(b"content-encoding", b"gzip")]
    else:
        body, extra = PLAIN, []
    await send({"type": "http.response.start", "status": 200, "headers": headers(body, extra)})
    await send({"type": "http.response.body", "body": body})

if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[3]), log_config=None,
                http="httptools", loop="uvloop", access_log=False)
"""


def start_bare(work: Path, port: int) -> subprocess.Popen[bytes]:
    """The ceiling: uvicorn with a bare ASGI app returning the same bytes, no auth."""
    script = work / "bare_app.py"
    script.write_text(BARE_APP)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(work / "nginx-root" / "feed.txt"),
         str(work / "nginx-root" / "feed.txt.gz"), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return proc


def wrk(url: str, headers: dict[str, str], duration: int, connections: int) -> float:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "5s"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=duration + 30)
    match = re.search(r"Requests/sec:\s+([0-9.]+)", out.stdout)
    if match is None:
        raise RuntimeError(out.stdout + out.stderr)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
    if non2xx:
        raise RuntimeError(f"errors from {url}: {out.stdout}")
    return float(match.group(1))


def interleaved(args: argparse.Namespace, targets: list[tuple[str, dict[str, str]]],
                repeat: int | None = None) -> list[list[float]]:
    """`repeat` (default `args.repeat`) wrk runs of each (url, headers), taken in turn so
    machine noise hits all."""
    runs: list[list[float]] = [[] for _ in targets]
    for _ in range(repeat or args.repeat):
        for seen, (url, headers) in zip(runs, targets, strict=True):
            seen.append(wrk(url, headers, args.duration, args.connections))
    return runs


def compare_access_log(args: argparse.Namespace, auth: dict[str, str], info_url: str,
                       warning_url: str, api_etag: str, info_log: Path) -> dict[str, Any]:
    """Device 304 polls at EDL_LOG_LEVEL=INFO (the default: one access line per poll in
    api.log and on stderr) against the WARNING server the other figures use."""
    with httpx.Client(timeout=30) as http:  # verify the key once, as for the first server
        assert http.get(info_url, headers=auth).status_code == 200
    headers = auth | {"If-None-Match": api_etag}
    info, warning = interleaved(args, [(info_url, headers), (warning_url, headers)])
    a, b = statistics.median(info), statistics.median(warning)
    time.sleep(2.5)  # batched lines are written within a second
    logged = sum(" 304 " in line for line in info_log.read_text().splitlines())
    print(f"\naccess log on (INFO) vs off (WARNING), device 304s: {a:.0f} vs {b:.0f} req/s, "
          f"{a / b:.2f}; access lines of 304s in the INFO server's api.log: {logged}")
    return {"info": a, "warning": b, "info_runs": info, "warning_runs": warning,
            "logged_304s": logged}


def compare_recording(
    args: argparse.Namespace, auth: dict[str, str], on_url: str, off_url: str,
    nginx_url: str, api_etag: str, nginx_etag: str,
) -> dict[str, Any]:
    """Device polls with the poll ledger on and off (two processes, same bytes), runs
    interleaved so machine noise hits both, with nginx as the common reference."""
    cases = {
        "304": ({"If-None-Match": api_etag}, {"If-None-Match": nginx_etag}),
        "plain": ({"Accept-Encoding": "identity"}, {"Accept-Encoding": "identity"}),
    }
    repeat = args.recording_repeat or args.repeat
    print(f"\ndevice polls, recording on vs off (wrk -t1 -c{args.connections} "
          f"-d{args.duration}s, median of {repeat})")
    print(f"{'case':<6} {'on req/s':>10} {'off req/s':>10} {'on/off':>7}  target"
          f"   {'nginx':>8} {'on/nginx':>9} {'off/nginx':>9}")
    with httpx.Client(timeout=30) as http:  # verify the key once, as for the first server
        assert http.get(off_url, headers=auth).status_code == 200
    result: dict[str, Any] = {}
    for name, (api_headers, nginx_headers) in cases.items():
        on, off, ref = interleaved(args, [(on_url, auth | api_headers),
                                          (off_url, auth | api_headers),
                                          (nginx_url, nginx_headers)], repeat)
        a, b, c = (statistics.median(x) for x in (on, off, ref))
        result[name] = {"on": a, "off": b, "nginx": c, "on_runs": on, "off_runs": off,
                        "nginx_runs": ref}
        print(f"{name:<6} {a:>10.0f} {b:>10.0f} {a / b:>7.2f}  ≥ 0.9 "
              f"   {c:>8.0f} {a / c:>9.2f} {b / c:>9.2f}")
    return result


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    # The recording bound is 10 %, about what one 5 s wrk run of the same server moves by:
    # the plain on/off ratio read 1.21 and 0.897 in two full runs an hour apart with the
    # same code (the 304 one 0.96 and 1.03). run.py's full mode takes 5 rounds.
    parser.add_argument("--recording-repeat", type=int, default=0,
                        help="interleaved rounds of the recording on/off comparison "
                             "(default: --repeat)")
    parser.add_argument("--search-pipelines", type=int, default=50)
    parser.add_argument("--search-entries", type=int, default=100_000)
    parser.add_argument("--search-queries", type=int, default=300)
    parser.add_argument("--publish-entries", type=int, default=1_000_000)
    parser.add_argument("--publish-repeat", type=int, default=1)
    parser.add_argument("--search-repeat", type=int, default=1,
                        help="passes over the queries; the median of the passes' p50 is kept")
    parser.add_argument("--skip-serving", action="store_true",
                        help="no wrk comparison (nginx and wrk not needed)")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folder (server output, logs)")
    parser.add_argument("--pg", help="PostgreSQL URL (a throwaway database is made in it)")
    parser.add_argument("--log-level", default="WARNING",
                        help="EDL_LOG_LEVEL of the served API (INFO logs every request)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edl-feeds-bench-"))
    db_url = None
    pg_name = None
    if args.pg:
        db_url, pg_name = throwaway_database(args.pg, "edl_bench")
    env = {"EDL_DATA_DIR": str(work / "data"), "EDL_LOG_DIR": str(work / "logs"),
           "EDL_API_KEY": KEY, "EDL_BCRYPT_ROUNDS": "4", "EDL_LOG_LEVEL": args.log_level,
           "EDL_AUTO_REFRESH_MINUTES": "0"}
    if db_url:
        env["EDL_DATABASE_URL"] = db_url
    settings = Settings(_env_file=None, data_dir=work / "data", log_dir=work / "logs",  # type: ignore[call-arg]
                        api_key=KEY, bcrypt_rounds=4, database_url=db_url)
    procs: list[subprocess.Popen[bytes]] = []
    report: dict[str, Any] = {"serving": {}}
    try:
        started = time.perf_counter()
        facts = asyncio.run(setup(args, settings, work))
        backend = "PostgreSQL" if db_url else "SQLite"
        print(f"database: {backend}; setup {time.perf_counter() - started:.1f}s; "
              f"feed {args.lines} lines = {len(facts['content'])} B, gzip {len(facts['gzip'])} B")
        if args.publish_entries:
            print(f"publish {args.publish_entries} entries, feeds live after: first "
                  f"{facts['publish_first_s']:.2f}s, again with 1% churn "
                  f"{facts['publish_again_s']:.2f}s; with the indicator store written: "
                  f"{facts['publish_first_total_s']:.2f}s / {facts['publish_again_total_s']:.2f}s")
        report.update({k: facts.get(k) for k in ("publish_first_s", "publish_again_s",
                                                  "publish_first_total_s",
                                                  "publish_again_total_s",
                                                  "publish_first_runs", "publish_again_runs",
                                                  "search_load_s")})
        report.update(feed_bytes=len(facts["content"]), feed_gzip_bytes=len(facts["gzip"]))
        api_port, nginx_port = free_port(), free_port()
        off_port, info_port = free_port(), free_port()
        if not args.skip_serving:
            # The same service with device recording off, on its own copy of the SQLite
            # database (one process per SQLite file) or the same PostgreSQL one.
            off_env = env | {"EDL_POLL_LEDGER_ENABLED": "false",
                             "EDL_DATA_DIR": str(work / "data-off"),
                             "EDL_LOG_DIR": str(work / "logs-off")}
            if not db_url:
                shutil.copytree(work / "data", work / "data-off")
            procs.append(start_api(off_env, off_port, work / "api-off.out"))
            info_env = env | {"EDL_LOG_LEVEL": "INFO", "EDL_DATA_DIR": str(work / "data-info"),
                              "EDL_LOG_DIR": str(work / "logs-info")}
            if not db_url:
                shutil.copytree(work / "data", work / "data-info")
            procs.append(start_api(info_env, info_port, work / "api-info.out"))
        api = start_api(env, api_port, work / "api.out")
        procs.append(api)
        bare_port = free_port()
        if not args.skip_serving:
            nginx = start_nginx(work, nginx_port, facts["content"], facts["gzip"])
            procs.append(nginx)
            procs.append(start_bare(work, bare_port))
        bare_url = f"http://127.0.0.1:{bare_port}/"

        auth = {"Authorization": "Basic " + base64.b64encode(
            f"fw:{facts['token']}".encode()).decode()}
        api_url = f"http://127.0.0.1:{api_port}/pipelines/{facts['feed_pipeline']}/edl/ipv4"
        off_url = f"http://127.0.0.1:{off_port}/pipelines/{facts['feed_pipeline']}/edl/ipv4"
        info_url = f"http://127.0.0.1:{info_port}/pipelines/{facts['feed_pipeline']}/edl/ipv4"
        nginx_url = f"http://127.0.0.1:{nginx_port}/feed.txt"
        with httpx.Client(timeout=30) as http:
            first = http.get(api_url, headers=auth | {"Accept-Encoding": "identity"})
            assert first.status_code == 200, first.text
            assert first.content == facts["content"]
            api_etag = first.headers["etag"]
            nginx_etag = ""
            if not args.skip_serving:
                plain_nginx = http.get(nginx_url, headers={"Accept-Encoding": "identity"})
                assert plain_nginx.content == facts["content"]
                nginx_etag = plain_nginx.headers["etag"]
                gz = http.get(nginx_url, headers={"Accept-Encoding": "gzip"})
                assert gz.headers.get("content-encoding") == "gzip"
            http.get(api_url, headers=auth | {"Accept-Encoding": "gzip"})
            assert http.get(api_url, headers=auth | {"If-None-Match": api_etag}).status_code == 304

        scenarios = {
            "plain": ({"Accept-Encoding": "identity"}, {"Accept-Encoding": "identity"}),
            "gzip": ({"Accept-Encoding": "gzip"}, {"Accept-Encoding": "gzip"}),
            "304": ({"If-None-Match": api_etag}, {"If-None-Match": nginx_etag}),
        }
        bare_headers = {"plain": {"Accept-Encoding": "identity"},
                        "gzip": {"Accept-Encoding": "gzip"}, "304": {"If-None-Match": '"bare"'}}
        print(f"\nwrk -t1 -c{args.connections} -d{args.duration}s, median of {args.repeat}; "
              f"{os.cpu_count()} CPUs")
        print(f"{'case':<6} {'edl req/s':>10} {'nginx req/s':>12} {'ratio':>6}  target"
              f"   {'bare ASGI':>10} {'ratio':>6}")
        targets = {"plain": 0.8, "gzip": 0.6, "304": 0.3}
        for name, (api_headers, nginx_headers) in scenarios.items():
            if args.skip_serving:
                break
            ours, theirs, bare = interleaved(args, [(api_url, auth | api_headers),
                                                    (nginx_url, auth | nginx_headers),
                                                    (bare_url, auth | bare_headers[name])])
            a, b, c = (statistics.median(x) for x in (ours, theirs, bare))
            report["serving"][name] = {"edl": a, "nginx": b, "bare": c, "edl_runs": ours,
                                       "nginx_runs": theirs, "bare_runs": bare}
            print(f"{name:<6} {a:>10.0f} {b:>12.0f} {a / b:>6.2f}  ≥ {targets[name]:<4}"
                  f"   {c:>10.0f} {c / b:>6.2f}")

        if not args.skip_serving:
            report["devices"] = compare_recording(
                args, auth, api_url, off_url, nginx_url, api_etag, nginx_etag
            )
            report["access_log"] = compare_access_log(
                args, auth, info_url, api_url, api_etag, work / "logs-info" / "api.log",
            )
            with httpx.Client(timeout=30) as http:  # the polls this run recorded
                page = http.get(
                    f"http://127.0.0.1:{api_port}/profiles/{facts['profile_id']}/devices/"
                    f"{facts['device_id']}/polls", params={"limit": 500},
                    headers={"X-API-Key": facts["profile_key"]},
                ).json()
            recorded = sum(item["polls"] for item in page["items"])
            report["devices"]["recorded_polls"] = recorded
            print(f"polls recorded by the device ledger so far (flushed): {recorded}")

        # Search latency over HTTP (profile key), IPs inside stored networks and names.
        queries = []
        rnd = random.Random(5)
        per = args.search_entries
        for _ in range(args.search_queries):
            n = rnd.randrange(args.search_pipelines * per)
            kind = rnd.randrange(3)
            if kind == 0:
                queries.append(f"{20 + n % 200}.{(n >> 8) % 256}.{n % 256}.{rnd.randrange(256)}")
            elif kind == 1:
                queries.append(f"www.host{n}.example.com")
            else:
                queries.append(socket.inet_ntoa(((40 << 24) + n * 7).to_bytes(4, "big")))
        search_url = f"http://127.0.0.1:{api_port}/profiles/{facts['profile_id']}/pipelines/search"
        timings: list[float] = []
        pass_p50s: list[float] = []
        hits = 0
        with httpx.Client(timeout=30, headers={"X-API-Key": facts["profile_key"]}) as http:
            for value in queries[:10]:
                http.get(search_url, params={"indicator": value})
            for _ in range(max(1, args.search_repeat)):
                this_pass = []
                hits = 0
                for value in queries:
                    t0 = time.perf_counter()
                    response = http.get(search_url, params={"indicator": value})
                    this_pass.append((time.perf_counter() - t0) * 1000)
                    assert response.status_code == 200, response.text
                    hits += bool(response.json()["matches"])
                pass_p50s.append(statistics.median(this_pass))
                timings += this_pass
        timings.sort()
        print(f"\nsearch over {args.search_pipelines} × {args.search_entries} indicators "
              f"(loaded in {facts['search_load_s']:.1f}s): "
              f"p50 {statistics.median(timings):.1f} ms, "
              f"p95 {timings[int(len(timings) * 0.95) - 1]:.1f} ms, "
              f"{hits}/{len(queries)} queries matched")
        report["search"] = {"p50": statistics.median(pass_p50s), "pass_p50s": pass_p50s,
                            "p95": timings[int(len(timings) * 0.95) - 1],
                            "hits": hits, "queries": len(queries)}
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
    finally:
        for proc in procs:
            stop(proc)
        if pg_name:
            pg_admin(args.pg, f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
