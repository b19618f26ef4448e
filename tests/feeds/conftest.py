"""Feed-test helpers: tenants through the API, runs published through feeds.publish."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from edl_api.engine.__main__ import effective_options
from edl_api.engine.config import load_config
from edl_api.engine.entries import FeedEntry
from edl_api.engine.entries_file import ENTRIES_FILE, LEGACY_ENTRIES_FILE, write_entries
from edl_api.engine.pipeline import EngineSettings
from edl_api.feeds.publish import PublishOptions, PublishOutcome
from edl_api.feeds.publish import publish as publish_run_output
from edl_api.models import PipelineRun
from edl_api.runs.recovery import worker_identity
from edl_api.runs.state import RunState, check_transition
from edl_api.state import AppState
from tests.factories import create_config, create_pipeline, make_profile

YAML = """\
sources:
  - name: inline
    values: [9.9.9.7]
pipeline:
  retain_missing_days: {retain}
  guard:
    max_shrink_percent: {shrink}
    allow_empty: {allow_empty}
"""


@dataclass
class Tenant:
    profile_id: int
    key: str
    config_id: int
    pipeline_id: int


async def make_tenant(
    client: httpx.AsyncClient, label: str, *, retain: int = 0, shrink: float = 50,
    allow_empty: bool = False,
) -> Tenant:
    profile_id, key = await make_profile(client, label)
    yaml = YAML.format(retain=retain, shrink=shrink, allow_empty=str(allow_empty).lower())
    config = await create_config(client, key, profile_id, "cfg", yaml)
    pipeline = await create_pipeline(client, key, config["id"], f"{label}-pipe")
    return Tenant(profile_id, key, config["id"], pipeline["id"])


def entry(kind: str, value: str, sources: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "value": value, "sources": sources or ["inline"],
            "tags": extra.get("tags", []), "confidence": extra.get("confidence", 50)}


def owner(app: Any) -> str:
    """A live worker on this host that is not the app's dispatcher (this process's parent):
    recovery leaves its runs alone, and so does the dispatcher's watchdog, which would
    resolve a run of its own identity without a task of its own (a made-up worker would
    look dead and have its run interrupted mid-test)."""
    assert AppState.of(app).dispatcher.identity != worker_identity(os.getppid())
    return worker_identity(os.getppid())


def publish_options(yaml: str) -> PublishOptions:
    """The guard options the engine would report for this config."""
    config = load_config(yaml)
    return PublishOptions.from_report({"options": effective_options(config, EngineSettings())})


async def prepare_run(
    app: Any, tmp_path: Path, pipeline_id: int, feeds: dict[str, list[str]],
    entries: list[dict[str, Any]] | None = None, *, mode: str = "full",
    yaml: str | None = None, compact: bool = True,
) -> tuple[int, Path, str]:
    """A run row as the dispatcher claims it and its out_dir as the engine writes it:
    (run id, out_dir, config snapshot)."""
    maker = AppState.of(app).sessionmaker
    async with maker() as session:
        from edl_api.models import Pipeline, ProfileConfig

        pipeline = await session.get(Pipeline, pipeline_id)
        config = await session.get(ProfileConfig, pipeline.profile_config_id)
        snapshot = yaml if yaml is not None else config.yaml
        run = PipelineRun(
            pipeline_id=pipeline_id, profile_id=pipeline.profile_id,
            profile_config_id=config.id, config_version=config.version,
            config_snapshot=snapshot, state=RunState.RUNNING, trigger="api", mode=mode,
            worker=owner(app),
        )
        session.add(run)
        await session.commit()
        run_id = run.id
    out_dir = tmp_path / f"run-{run_id}"
    out_dir.mkdir()
    for kind, lines in feeds.items():
        (out_dir / f"{kind}.txt").write_text("".join(f"{v}\n" for v in lines))
    if entries is None:
        entries = [entry(k, v) for k, lines in feeds.items() if k != "ip" for v in lines]
    # compact: the engine's own grouped form (steady-state delta path); else the legacy
    # JSON Lines of an older engine (the full comparison path).
    if compact:
        write_entries({"entries": [
            FeedEntry(e["value"], e["type"], e.get("sources", []), e.get("tags", []),
                      e.get("confidence", 50))
            for e in entries
        ]}, out_dir / ENTRIES_FILE)
    else:
        (out_dir / LEGACY_ENTRIES_FILE).write_text(
            "".join(json.dumps(e, separators=(", ", ": ")) + "\n" for e in entries)
        )
    return run_id, out_dir, snapshot


async def publish_prepared(
    app: Any, run_id: int, out_dir: Path, snapshot: str
) -> PublishOutcome:
    """`feeds.publish.publish`, production's path, as the dispatcher calls it."""
    return await publish_run_output(
        AppState.of(app).sessionmaker, run_id, out_dir, owner=owner(app),
        options=publish_options(snapshot), keep_runs=AppState.of(app).settings.artifact_keep_runs,
    )


async def publish(
    app: Any, tmp_path: Path, pipeline_id: int, feeds: dict[str, list[str]],
    entries: list[dict[str, Any]] | None = None, *, mode: str = "full",
    yaml: str | None = None, compact: bool = True,
) -> PipelineRun:
    """Prepare a run, publish it, record its final state as the dispatcher does."""
    run_id, out_dir, snapshot = await prepare_run(
        app, tmp_path, pipeline_id, feeds, entries, mode=mode, yaml=yaml, compact=compact
    )
    outcome = await publish_prepared(app, run_id, out_dir, snapshot)
    assert outcome.owned
    async with AppState.of(app).sessionmaker() as session:
        run = await session.get(PipelineRun, run_id)
        run.state = check_transition(run_id, run.state, outcome.state)
        run.errors = outcome.errors
        await session.commit()
        return run


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
