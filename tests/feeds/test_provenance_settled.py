"""A feed goes live before its run writes the indicator store (`feeds.publish`): a body
that shows provenance (json, csv, stix, a device's cut, a TAXII view) built in between
carries the previous run's, so it is served but not cached for the version's lifetime."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import update
from sqlmodel import col

from edl_api.models import Indicator, PipelineRun
from edl_api.state import AppState
from tests.factories import create_config, create_pipeline, make_profile
from tests.helpers import basic, run_to_end

YAML = "sources:\n  - name: s\n    values: [45.33.32.7]\n    tags: [first]\n"


async def _set(app: Any, run: dict[str, Any], state: str, tags: list[str]) -> None:
    async with AppState.of(app).sessionmaker() as session, session.begin():
        await session.execute(
            update(PipelineRun).where(col(PipelineRun.id) == run["id"]).values(state=state)
        )
        await session.execute(
            update(Indicator).where(col(Indicator.pipeline_id) == run["pipeline_id"])
            .values(tags=tags)
        )


async def test_a_body_rendered_while_indexing_is_not_kept(
    app: Any, client: httpx.AsyncClient
) -> None:
    profile_id, key = await make_profile(client, "settled")
    config = await create_config(client, key, profile_id, "settled", YAML)
    pipeline = await create_pipeline(client, key, config["id"], "settled")
    run = await run_to_end(client, pipeline["id"], key, persist=True)
    assert run["state"] == "succeeded", run
    url = f"/pipelines/{pipeline['id']}/edl/ipv4?format=json"

    # As if the run were still writing the store (its rows the previous run's).
    await _set(app, run, "running", ["stale"])
    during = (await client.get(url, headers=basic(key))).json()
    assert during[0]["tags"] == ["stale"]

    # The store caught up: the next poll shows it, not the body built meanwhile.
    await _set(app, run, "succeeded", ["first"])
    after = (await client.get(url, headers=basic(key))).json()
    assert after[0]["tags"] == ["first"]
