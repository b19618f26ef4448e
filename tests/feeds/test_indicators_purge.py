"""The indicator store has no foreign key to pipelines (migration 0015, a 1M publish's
per-row check): purging a deleted profile removes its pipelines' indicator rows itself,
and only theirs."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select
from sqlmodel import col

from edl_api.models import Indicator
from edl_api.profiles import lifecycle
from edl_api.state import AppState
from tests.factories import World
from tests.helpers import expect, h, run_to_end


async def _rows(app: Any, pipeline_id: int) -> int:
    async with AppState.of(app).sessionmaker() as session:
        found = await session.execute(
            select(func.count()).select_from(Indicator)
            .where(col(Indicator.pipeline_id) == pipeline_id)
        )
        return int(found.scalar_one())


async def test_a_purged_profile_leaves_no_indicator_rows(
    app: Any, client: httpx.AsyncClient, world: World
) -> None:
    a, b = world.a, world.b
    for tenant in (a, b):
        run = await run_to_end(client, tenant.pipeline_id, tenant.profile_key, persist=True)
        assert run["state"] == "succeeded", run
    kept = await _rows(app, b.pipeline_id)
    assert await _rows(app, a.pipeline_id) > 0
    assert kept > 0
    await expect(await client.delete(f"/profiles/{a.profile_id}?force=true", headers=h()))
    maker = AppState.of(app).sessionmaker
    async with maker() as session, session.begin():
        assert await lifecycle.purge_deleted(session, 30) == []
    assert await _rows(app, a.pipeline_id) > 0  # within the retention: still there, hidden
    async with maker() as session, session.begin():
        assert await lifecycle.purge_deleted(session, 0) == [a.profile_id]
    assert await _rows(app, a.pipeline_id) == 0
    assert await _rows(app, b.pipeline_id) == kept  # the other tenant keeps its rows
