"""Expiry and per-source state through the API, with a real engine child: an entry older
than max_age_days by its CSV date is absent from the served feed and counted `expired`;
first_seen is stored per pipeline and source (`source_states`) and handed to the next
run, so an undated entry ages out; dry runs read the state but never write it; another
pipeline never sees it."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col

from edl_api.models import SourceState
from edl_api.settings import Settings
from edl_api.state import AppState
from tests.conftest import make_settings
from tests.factories import create_config, create_pipeline, make_profile
from tests.helpers import LoopbackServer, answer, expect, h, loopback, run_to_end

DAY = 86_400.0
PLAIN = [f"9.9.8.{i}" for i in range(1, 11)]  # ten: losing one stays within the guard


def _stamp(days_ago: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - days_ago * DAY))


def _csv() -> bytes:
    rows = [(_stamp(1), "8.8.4.4"), (_stamp(2), "1.0.0.1"), (_stamp(60), "9.9.9.9")]
    body = '# "first_seen_utc","dst_ip","malware"\n' + "".join(
        f'"{when}","{ip}","QakBot"\n' for when, ip in rows
    )
    return body.encode()


@pytest.fixture(scope="module")
def upstream() -> Iterator[LoopbackServer]:
    routes = {
        "/feodo.csv": lambda handler: answer(handler, 200, _csv()),
        "/plain.txt": lambda handler: answer(handler, 200, "".join(f"{v}\n" for v in PLAIN)
                                             .encode()),
    }
    with loopback(routes=routes) as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return make_settings(tmp_path, database_url, ssrf_allow_cidrs="127.0.0.0/8")


async def _pipeline(client: httpx.AsyncClient, name: str, yaml: str) -> tuple[int, str]:
    profile_id, key = await make_profile(client, f"state-{name}-{time.time_ns()}")
    config = await create_config(client, key, profile_id, "c", yaml)
    return (await create_pipeline(client, key, config["id"], "p"))["id"], key


async def _feed(client: httpx.AsyncClient, pipeline_id: int, key: str) -> list[str]:
    served = await client.get(f"/pipelines/{pipeline_id}/edl/ipv4", headers=h(key))
    assert served.status_code == 200, served.text
    return served.text.split()


async def _rows(app: Any, pipeline_id: int) -> dict[str, SourceState]:
    async with AppState.of(app).sessionmaker() as session:
        rows = (await session.execute(
            select(SourceState).where(col(SourceState.pipeline_id) == pipeline_id)
        )).scalars().all()
    return {row.source: row for row in rows}


def _data(row: SourceState) -> Any:
    return json.loads(gzip.decompress(row.data_gzip))


async def test_csv_entry_older_than_max_age_days_is_not_served(
    client: httpx.AsyncClient, upstream: LoopbackServer
) -> None:
    pipeline_id, key = await _pipeline(client, "csv", (
        "sources:\n"
        "  - name: feodo\n"
        f"    url: {upstream.url}/feodo.csv\n"
        "    format: csv\n"
        "    column: dst_ip\n"
        "    date_column: first_seen_utc\n"
        "    max_age_days: 30\n"
        "pipeline:\n"
        "  outputs: [ipv4]\n"
    ))
    run = await run_to_end(client, pipeline_id, key, persist=True)
    assert run["state"] == "succeeded", run
    assert run["counts"]["expired"] == 1
    assert await _feed(client, pipeline_id, key) == ["1.0.0.1", "8.8.4.4"]
    detail = await expect(await client.get(f"/runs/{run['id']}", headers=h(key)))
    (source,) = detail["metadata"]["sources"]
    assert source["expired"] == 1
    explained = await expect(await client.get(
        f"/profiles/{detail['profile_id']}/explain", params={"indicator": "9.9.9.9"},
        headers=h(key),
    ))
    (feed,) = explained["pipelines"][0]["feeds"]
    assert not feed["listed"]
    (why,) = feed["why"]
    assert why["step"] == "expired"
    assert why["detail"].startswith("older than max_age_days 30 (dated ")


async def test_first_seen_is_stored_and_ages_an_entry_out(
    client: httpx.AsyncClient, app: Any, upstream: LoopbackServer
) -> None:
    yaml = (
        "sources:\n"
        "  - name: plain\n"
        f"    url: {upstream.url}/plain.txt\n"
        "    max_age_days: 30\n"
        "pipeline:\n"
        "  outputs: [ipv4]\n"
    )
    pipeline_id, key = await _pipeline(client, "plain", yaml)
    first = await run_to_end(client, pipeline_id, key, persist=True)
    assert first["state"] == "succeeded", first
    assert first["counts"]["expired"] == 0
    (row,) = (await _rows(app, pipeline_id)).values()
    assert row.source == "plain"
    assert row.run_id == first["id"]
    seen = _data(row)["first_seen"]
    assert sorted(seen) == sorted(PLAIN)

    # Pretend 9.9.8.1 was first seen 40 days ago (as if the runs had gone on since).
    async with AppState.of(app).sessionmaker() as session, session.begin():
        stored = await session.get(SourceState, row.id)
        assert stored is not None
        data = _data(stored)
        data["first_seen"]["9.9.8.1"] -= 40 * DAY
        stored.data_gzip = gzip.compress(json.dumps(data).encode())
    aged = data["first_seen"]["9.9.8.1"]

    # Another tenant's pipeline with the same config has its own (fresh) state.
    other_id, other_key = await _pipeline(client, "other", yaml)
    other = await run_to_end(client, other_id, other_key, persist=True)
    assert other["counts"]["expired"] == 0
    assert "9.9.8.1" in await _feed(client, other_id, other_key)

    # A dry run reads the state (and reports the expiry) but never writes it.
    dry = await run_to_end(client, pipeline_id, key, mode="dry_run")
    assert dry["state"] == "succeeded", dry
    assert dry["counts"]["expired"] == 1
    (row,) = (await _rows(app, pipeline_id)).values()
    assert row.run_id == first["id"]

    second = await run_to_end(client, pipeline_id, key, persist=True)
    assert second["state"] == "succeeded", second
    assert second["counts"]["expired"] == 1
    assert "9.9.8.1" not in await _feed(client, pipeline_id, key)
    assert len(await _feed(client, pipeline_id, key)) == 9
    (row,) = (await _rows(app, pipeline_id)).values()
    assert row.run_id == second["id"]
    assert _data(row)["first_seen"]["9.9.8.1"] == aged  # remembered, not renewed


async def test_a_source_that_stops_needing_state_loses_its_row(
    client: httpx.AsyncClient, app: Any, upstream: LoopbackServer
) -> None:
    profile_id, key = await make_profile(client, f"state-drop-{time.time_ns()}")
    aging = (f"sources:\n  - name: plain\n    url: {upstream.url}/plain.txt\n"
             "    max_age_days: 30\npipeline:\n  outputs: [ipv4]\n")
    config = await create_config(client, key, profile_id, "c", aging)
    pipeline_id = (await create_pipeline(client, key, config["id"], "p"))["id"]
    assert (await run_to_end(client, pipeline_id, key, persist=True))["state"] == "succeeded"
    assert set(await _rows(app, pipeline_id)) == {"plain"}
    plain = aging.replace("    max_age_days: 30\n", "")
    await expect(await client.put(
        f"/profiles/{profile_id}/configs/{config['id']}", json={"yaml": plain}, headers=h(key),
    ))
    assert (await run_to_end(client, pipeline_id, key, persist=True))["state"] == "succeeded"
    assert await _rows(app, pipeline_id) == {}


async def test_a_deleted_pipeline_forgets_what_its_sources_said(
    client: httpx.AsyncClient, app: Any, upstream: LoopbackServer
) -> None:
    pipeline_id, key = await _pipeline(client, "deleted", (
        f"sources:\n  - name: plain\n    url: {upstream.url}/plain.txt\n"
        "    max_age_days: 30\npipeline:\n  outputs: [ipv4]\n"
    ))
    assert (await run_to_end(client, pipeline_id, key, persist=True))["state"] == "succeeded"
    assert set(await _rows(app, pipeline_id)) == {"plain"}
    response = await client.delete(f"/pipelines/{pipeline_id}", headers=h(key))
    assert response.status_code == 200, response.text
    assert await _rows(app, pipeline_id) == {}
