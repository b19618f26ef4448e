"""Feed-test helpers: tenants through the API, runs published through publish_run."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from edl_api.feeds.store import publish_run
from edl_api.models import PipelineRun
from tests.conftest import SUPER_KEY

YAML = """\
sources:
  - name: inline
    values: [203.0.113.7]
pipeline:
  retain_missing_days: {retain}
  guard:
    max_shrink_percent: {shrink}
    allow_empty: {allow_empty}
"""


def h(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def basic(key: str, user: str = "fw") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


async def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    return response.json()


async def launch_run(client: httpx.AsyncClient, key: str, pipeline_id: int, **body: Any) -> Any:
    """POST /runs → the queued run."""
    return await ok(await client.post("/runs", json={"pipeline_id": pipeline_id, **body},
                                      headers=h(key)), 202)


async def wait_run(client: httpx.AsyncClient, run_id: int, key: str, timeout: float = 30) -> Any:
    """The run once it is no longer queued or running (fails after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        run = await ok(await client.get(f"/runs/{run_id}", headers=h(key)))
        if run["state"] not in ("queued", "running"):
            return run
        assert time.monotonic() < deadline, f"run {run_id} stuck in {run['state']}"
        await asyncio.sleep(0.05)


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
    created = await ok(await client.post("/profiles", json={"name": label}, headers=h(SUPER_KEY)),
                       201)
    profile_id, key = created["profile"]["id"], created["api_key"]
    yaml = YAML.format(retain=retain, shrink=shrink, allow_empty=str(allow_empty).lower())
    config = await ok(await client.post(
        f"/profiles/{profile_id}/configs", json={"name": "cfg", "yaml": yaml}, headers=h(key)
    ), 201)
    pipeline = await make_pipeline(client, key, config["id"], f"{label}-pipe")
    return Tenant(profile_id, key, config["id"], pipeline)


async def make_pipeline(client: httpx.AsyncClient, key: str, config_id: int, name: str) -> int:
    body = {"profile_config_id": config_id, "name": name}
    return int((await ok(await client.post("/pipelines", json=body, headers=h(key)), 201))["id"])


def entry(kind: str, value: str, sources: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "value": value, "sources": sources or ["inline"],
            "tags": extra.get("tags", []), "confidence": extra.get("confidence", 50)}


async def publish(
    app: Any, tmp_path: Path, pipeline_id: int, feeds: dict[str, list[str]],
    entries: list[dict[str, Any]] | None = None, *, mode: str = "full",
    yaml: str | None = None, compact: bool = True,
) -> PipelineRun:
    """Make a run row as the dispatcher would, write its out_dir, publish, commit."""
    maker = app.state.sessionmaker
    async with maker() as session:
        from edl_api.models import Pipeline, ProfileConfig

        pipeline = await session.get(Pipeline, pipeline_id)
        config = await session.get(ProfileConfig, pipeline.profile_config_id)
        run = PipelineRun(
            pipeline_id=pipeline_id, profile_id=pipeline.profile_id,
            profile_config_id=config.id, config_version=config.version,
            config_snapshot=yaml if yaml is not None else config.yaml,
            state="running", trigger="api", mode=mode,
        )
        session.add(run)
        await session.flush()
        out_dir = tmp_path / f"run-{run.id}"
        out_dir.mkdir()
        for kind, lines in feeds.items():
            (out_dir / f"{kind}.txt").write_text("".join(f"{v}\n" for v in lines))
        if entries is None:
            entries = [entry(k, v) for k, lines in feeds.items() if k != "ip" for v in lines]
        # compact: the engine's own form (steady-state delta path); spaced: any other
        # JSON lines (the full comparison path).
        separators = (",", ":") if compact else (", ", ": ")
        (out_dir / "entries.jsonl").write_text(
            "".join(json.dumps(e, separators=separators) + "\n" for e in entries)
        )
        await publish_run(session, run, out_dir)
        run.state = "succeeded"
        await session.commit()
        return run


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
