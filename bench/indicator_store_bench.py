"""The indicator store's write (search, provenance rows) alone: first publish and churn.

    python bench/indicator_store_bench.py                          # SQLite, 1M, 3 repeats
    python bench/indicator_store_bench.py --pg postgresql+asyncpg://postgres@127.0.0.1:5432/test
    python bench/indicator_store_bench.py --entries 200000 --repeat 1 --json out.json

Each repetition publishes a generated IPv4 feed into a fresh pipeline exactly as the
dispatcher does (`feeds.publish.publish`: feeds live, then `write_indicators` in its own
transaction), then a second run with 1 % of the entries replaced. Reported per publish:
`indexing` = the publish's seconds after the feeds went live (the indicator store's
transaction with its commit, plus the drop report), and the per-step laps that
`write_indicators` logs. Medians over the repetitions; with --pg the work is done in a
throwaway database (created and dropped here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from feeds_bench import (  # noqa: E402
    KEY,
    YAML,
    ipv4_lines,
    new_run,
    pg_admin,
    throwaway_database,
    write_run,
)

from edl_api.app import create_app  # noqa: E402
from edl_api.feeds.publish import PublishOptions  # noqa: E402
from edl_api.feeds.publish import publish as publish_run  # noqa: E402
from edl_api.models import PipelineRun  # noqa: E402
from edl_api.runs.recovery import worker_identity  # noqa: E402
from edl_api.settings import Settings  # noqa: E402
from edl_api.state import AppState  # noqa: E402

LAPS = re.compile(r"indicator store updated in ([\d.]+)s \((.*)\)")


class LapCatcher(logging.Handler):
    """Keeps the last `write_indicators` log line's laps."""

    def __init__(self) -> None:
        super().__init__()
        self.laps: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        found = LAPS.search(record.getMessage())
        if found:
            self.laps = {"write_indicators_total": float(found.group(1))}
            for step in found.group(2).split(", "):
                name, _, seconds = step.rpartition(" ")
                self.laps[name] = float(seconds)


async def one_publish(app: Any, pipeline_id: int, out_dir: Path, catcher: LapCatcher
                      ) -> dict[str, float]:
    state = AppState.of(app)
    worker = worker_identity(os.getppid())  # not the dispatcher's: its watchdog would take it
    async with state.sessionmaker() as session:
        run = await new_run(session, pipeline_id, worker)
        await session.commit()
        run_id = run.id
    assert run_id is not None
    marks: dict[str, float] = {}

    async def on_stage(stage: str, _note: str) -> None:
        marks[stage] = time.process_time()

    cpu = time.process_time()
    outcome = await publish_run(
        state.sessionmaker, run_id, out_dir, owner=worker,
        options=PublishOptions(max_shrink_percent=100), keep_runs=state.settings.artifact_keep_runs,
        on_stage=on_stage,
    )
    ended = time.process_time()
    cpu = ended - cpu
    # CPU of this process (event loop, worker threads, SQLite's thread) from feeds live on
    index_cpu = ended - marks.get("indexing", ended)
    assert outcome.owned
    assert not outcome.errors, outcome.errors
    assert outcome.live_after_seconds is not None
    async with state.sessionmaker() as session, session.begin():
        finished = await session.get(PipelineRun, run_id)
        assert finished is not None
        finished.state = "succeeded"
        summary = finished.counts["indicators"]
    return {"live": outcome.live_after_seconds, "total": outcome.seconds,
            "indexing": outcome.seconds - outcome.live_after_seconds, "process_cpu": cpu,
            "indexing_cpu": index_cpu,
            **catcher.laps, "summary": summary}


async def bench(args: argparse.Namespace, settings: Settings, work: Path) -> dict[str, Any]:
    import httpx

    catcher = LapCatcher()
    logging.getLogger("edl_api.feeds").addHandler(catcher)
    logging.getLogger("edl_api.feeds").setLevel(logging.INFO)
    app = create_app(settings)
    lines = ipv4_lines(args.entries, seed=1)
    write_run(work / "first", lines)
    churn = max(1, len(lines) // 100)
    again = lines[churn:] + ipv4_lines(churn, seed=1, offset=args.entries * 5)
    write_run(work / "churn", sorted(set(again), key=socket.inet_aton))
    results: dict[str, list[dict[str, float]]] = {"first": [], "churn": []}
    async with app.router.lifespan_context(app):
        async def no_orphans() -> list[int]:  # these runs have no dispatcher task
            return []

        AppState.of(app).dispatcher.watchdog = no_orphans  # type: ignore[method-assign]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            hdr = {"X-API-Key": KEY}
            made = (await client.post("/profiles", json={"name": f"ib{os.getpid()}"},
                                      headers=hdr)).json()
            config = (await client.post(f"/profiles/{made['profile']['id']}/configs",
                                        json={"name": "c", "yaml": YAML}, headers=hdr)).json()
            for r in range(args.repeat):
                body = {"profile_config_id": config["id"], "name": f"big{r}"}
                pid = int((await client.post("/pipelines", json=body, headers=hdr)).json()["id"])
                results["first"].append(await one_publish(app, pid, work / "first", catcher))
                results["churn"].append(await one_publish(app, pid, work / "churn", catcher))
                for name in ("first", "churn"):
                    print(f"  repeat {r} {name}: " + ", ".join(
                        f"{k} {v:.2f}" for k, v in results[name][-1].items()
                        if isinstance(v, float)), flush=True)
    report: dict[str, Any] = {}
    for name, runs in results.items():
        keys = [k for k, v in runs[0].items() if isinstance(v, float)]
        report[name] = {k: statistics.median(r.get(k, 0.0) for r in runs) for k in keys}
        report[name]["runs_indexing"] = [r["indexing"] for r in runs]
        report[name]["summary"] = runs[-1]["summary"]
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pg", help="PostgreSQL URL (a throwaway database is made in it)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edl-indicator-bench-"))
    db_url, pg_name = None, None
    if args.pg:
        db_url, pg_name = throwaway_database(args.pg, "edl_bench_ind")
    settings = Settings(_env_file=None, data_dir=work / "data", log_dir=work / "logs",  # type: ignore[call-arg]
                        api_key=KEY, bcrypt_rounds=4, database_url=db_url,
                        auto_refresh_minutes=0)
    try:
        load = os.getloadavg()
        report = asyncio.run(bench(args, settings, work))
        report["conditions"] = {"backend": "PostgreSQL" if db_url else "SQLite",
                                "entries": args.entries, "repeat": args.repeat,
                                "load_before": load[0], "load_after": os.getloadavg()[0]}
    finally:
        if args.pg and pg_name is not None:
            pg_admin(args.pg, f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
    for name in ("first", "churn"):
        print(f"{name}: median indexing {report[name]['indexing']:.2f}s over "
              f"{report[name]['runs_indexing']}; " + ", ".join(
                  f"{k} {v:.2f}" for k, v in report[name].items() if isinstance(v, float)))
    print("conditions:", report["conditions"])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
