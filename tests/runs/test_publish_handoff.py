"""The real hand-off to the feed store: a finished run shows its artifacts and diff."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from edl_api.settings import Settings
from tests.conftest import asgi_client, running_app
from tests.factories import make_pipeline, make_profile
from tests.helpers import expect, h
from tests.helpers import launch_run as launch
from tests.helpers import wait_run as wait_state


@pytest.fixture
async def real_client(run_settings: Settings) -> Any:
    async with running_app(run_settings) as app, asgi_client(app) as client:
        yield client


async def test_run_detail_after_real_publish(real_client: httpx.AsyncClient,
                                             tmp_path: Path) -> None:
    client = real_client
    profile_id, _ = await make_profile(client)
    pipeline_id = await make_pipeline(client, profile_id)
    dry = await launch(client, pipeline_id, persist=True, mode="dry_run")
    dry_run = await wait_state(client, dry["id"], {"succeeded", "failed"})
    assert dry_run["state"] == "succeeded", dry_run["errors"]
    assert dry_run["artifacts"]
    assert not any(a["published"] for a in dry_run["artifacts"])

    full = await launch(client, pipeline_id, persist=True)
    run = await wait_state(client, full["id"], {"succeeded", "failed"})
    assert run["state"] == "succeeded", run["errors"]
    by_type = {a["indicator_type"]: a for a in run["artifacts"]}
    assert by_type["ipv4"]["published"] is True
    assert by_type["ipv4"]["count"] >= 1
    assert len(by_type["ipv4"]["sha256"]) == 64
    assert run["diff"]
    feed = await client.get(f"/pipelines/{pipeline_id}/edl/ipv4", headers=h())
    assert feed.status_code == 200
    assert feed.headers["x-edl-run-id"] == str(full["id"])
    assert "8.8.8.8" in feed.text.split()  # 203.0.113.7 is reserved: excluded

    kept = await launch(client, pipeline_id, persist=False)
    kept_run = await wait_state(client, kept["id"], "succeeded")
    assert kept_run["artifacts"] == []
    assert kept_run["metadata"]["sources"]
    feed = await client.get(f"/pipelines/{pipeline_id}/edl/ipv4", headers=h())
    assert feed.headers["x-edl-run-id"] == str(full["id"])
    page = await expect(await client.get(f"/runs?pipeline_id={pipeline_id}", headers=h()), 200)
    assert page["total"] == 3
