"""No input answers a 5xx: ids the database cannot hold, deep JSON and YAML, searches that
expand too far, foreign keys to missing objects; and the one 500 left (a bug) logs one line
with an id the body carries, never SQL parameters. Plus what the schema must say for
schemathesis: 405 with Allow, `limit` maximum, the feed format enum, body errors."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from edl_api.middleware import MAX_JSON_NESTING, json_depth_exceeds
from edl_api.profiles import service as profiles_service
from edl_api.schemas import MAX_DB_ID
from edl_api.state import AppState
from tests.conftest import SUPER_KEY
from tests.factories import World
from tests.helpers import h

HUGE = [2**63, 2**64, MAX_DB_ID + 1]  # 2^31: int4 on PostgreSQL


def _nested(depth: int) -> Any:
    value: Any = "10.0.0.0/8"
    for _ in range(depth):
        value = [value]
    return value


def _api_log(app: FastAPI) -> str:
    for handler in logging.getLogger().handlers:
        handler.flush()
    return (AppState.of(app).settings.log_dir / "api.log").read_text()


@pytest.mark.parametrize("number", HUGE)
async def test_ids_out_of_range_are_404_in_a_path_and_422_in_a_query(
    client: httpx.AsyncClient, world: World, number: int
) -> None:
    pid = world.a.profile_id
    for path in (
        f"/profiles/{number}", f"/pipelines/{number}", f"/runs/{number}",
        f"/runs/{number}/logs", f"/profiles/{pid}/configs/{number}",
        f"/pipelines/{number}/edl/ip", f"/profiles/{pid}/feed-tokens/{number}",
    ):
        method = "DELETE" if "feed-tokens" in path else "GET"
        r = await client.request(method, path, headers=h(SUPER_KEY))
        assert r.status_code == 404, (path, r.text)
        assert r.json()["error"] == "not_found"
    for query in (
        f"/runs?profile_id={number}", f"/pipelines?profile_id={number}",
        f"/runs?pipeline_id={number}", f"/edl/ip?profile_id={number}",
        f"/pipelines?offset={number}",
    ):
        r = await client.get(query, headers=h(SUPER_KEY))
        assert r.status_code == 422, (query, r.text)
    body = await client.post("/runs", json={"pipeline_id": number}, headers=h(SUPER_KEY))
    assert body.status_code == 422


async def test_zero_and_negative_ids_are_missing(client: httpx.AsyncClient, world: World) -> None:
    for number in (0, -1):
        assert (await client.get(f"/pipelines/{number}", headers=h())).status_code == 404


async def test_json_nested_too_deep_is_422_before_parsing(
    client: httpx.AsyncClient, world: World
) -> None:
    url = f"/profiles/{world.a.profile_id}/configs/{world.a.config_id}"
    deep = await client.patch(url, json={"rules": {"allow": _nested(400)}}, headers=h())
    assert deep.status_code == 422
    assert deep.json() == {
        "error": "validation_error", "detail": f"JSON nested deeper than {MAX_JSON_NESTING} levels"
    }
    # Within the bound the body reaches validation as usual (a list of lists is no rule).
    shallow = await client.patch(url, json={"rules": {"allow": _nested(3)}}, headers=h())
    assert shallow.status_code == 422
    assert "nested deeper" not in shallow.text


def test_depth_scan_skips_strings() -> None:
    assert not json_depth_exceeds(b'{"a": "' + b"[" * 100 + b'"}')
    assert not json_depth_exceeds(b'["\\"[[[[", ' + b"[" * 31 + b"]" * 32)
    assert json_depth_exceeds(b"[" * 33 + b"]" * 33)
    assert not json_depth_exceeds(b"[]" * 1000)  # many, but never deep


async def test_yaml_nested_too_deep_is_422(client: httpx.AsyncClient, world: World) -> None:
    yaml = "sources:\n  - name: a\n    values: " + "[" * 200 + "]" * 200 + "\n"
    r = await client.post(
        f"/profiles/{world.a.profile_id}/configs", json={"name": "deep", "yaml": yaml},
        headers=h(),
    )
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_config"
    assert "nested too deeply" in r.text


async def test_search_that_expands_too_far_is_422_with_the_bound(
    client: httpx.AsyncClient, world: World
) -> None:
    wide = "::1-ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"
    r = await client.get(
        f"/profiles/{world.a.profile_id}/pipelines/search", params={"indicator": wide},
        headers=h(),
    )
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_indicator"
    assert "at most 500" in r.json()["detail"]


async def test_feed_token_for_a_missing_profile_is_404(client: httpx.AsyncClient) -> None:
    r = await client.post("/profiles/999999/feed-tokens", json={"name": "fw"}, headers=h())
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"


async def test_unexpected_error_logs_one_line_with_its_id_and_no_sql_parameters(
    client: httpx.AsyncClient, app: FastAPI, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = "param-value-that-must-not-be-logged"

    async def broken(session: AsyncSession, *_: Any, **__: Any) -> Any:
        await session.execute(text("SELECT * FROM no_such_table WHERE x = :p"), {"p": marker})

    monkeypatch.setattr(profiles_service, "get_config", broken)
    r = await client.get(
        f"/profiles/{world.a.profile_id}/configs/{world.a.config_id}", headers=h()
    )
    assert r.status_code == 500
    body = r.json()
    assert body["error"] == "internal"
    assert len(body["error_id"]) == 12
    log = _api_log(app)
    lines = [line for line in log.splitlines() if body["error_id"] in line]
    assert len(lines) == 1
    # the driver's error class: SQLite says OperationalError, PostgreSQL ProgrammingError
    assert "OperationalError" in lines[0] or "ProgrammingError" in lines[0]
    assert "no_such_table" in lines[0]
    assert "get_config" in lines[0] or "profiles" in lines[0]
    assert marker not in log
    assert "Traceback" not in log
    # and a traceback (DEBUG) could not show them either: the engine hides bound values
    running = AppState.of(app).running
    assert running is not None
    assert running.engine.sync_engine.hide_parameters


async def test_options_answers_405_with_every_method_of_the_path(
    client: httpx.AsyncClient,
) -> None:
    r = await client.options("/profiles", headers=h())
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, POST"
    r = await client.options("/pipelines/1", headers=h())
    assert r.status_code == 405
    assert r.headers["allow"] == "DELETE, GET, PATCH"


async def test_schema_states_bounds_and_body_errors(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    limit = next(p for p in spec["paths"]["/pipelines"]["get"]["parameters"]
                 if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 500
    feed = spec["paths"]["/pipelines/{pipeline_id}/edl/{indicator_type}"]["get"]
    fmt = next(p for p in feed["parameters"] if p["name"] == "format")
    assert "panos" in fmt["schema"]["enum"]
    assert feed["parameters"][0]["schema"]["maximum"] == MAX_DB_ID
    create = spec["paths"]["/pipelines"]["post"]["responses"]
    assert {"400", "409", "413", "422"} <= set(create) or {"400", "413", "422"} <= set(create)
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["401"]
    assert list(metrics["content"]) == ["application/json"]
