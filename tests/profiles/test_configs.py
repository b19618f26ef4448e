from __future__ import annotations

import httpx
import yaml as pyyaml

from tests.factories import World, create_pipeline
from tests.helpers import expect, h, run_to_end

FULL_YAML = """\
sources:
  - name: feodo
    url: https://feodotracker.abuse.ch/downloads/ipblocklist.txt
    tags: [c2]
  - name: ours
    values: [203.0.113.7]
rules:
  exclude_reserved: true
pipeline:
  outputs: [ipv4, fqdn]
"""


async def test_patch_section_replaces_only_that_section(
    client: httpx.AsyncClient, world: World
) -> None:
    a = world.a
    url = f"/profiles/{a.profile_id}/configs"
    created = await expect(
        await client.post(url, json={"name": "full", "yaml": FULL_YAML}, headers=h(a.profile_key)),
        201,
    )
    assert created["version"] == 1
    assert created["yaml"] == FULL_YAML  # stored as written, comments and all
    patched = await expect(
        await client.patch(
            f"{url}/{created['id']}",
            json={"rules": {"allow": ["10.0.0.0/8"]}, "refresh_interval_minutes": 7.5},
            headers=h(a.profile_key),
        ),
        200,
    )
    assert patched["version"] == 2
    assert patched["refresh_interval_minutes"] == 7.5
    document = pyyaml.safe_load(patched["yaml"])
    assert document["rules"] == {"allow": ["10.0.0.0/8"]}
    assert [s["name"] for s in document["sources"]] == ["feodo", "ours"]  # untouched
    assert document["pipeline"] == {"outputs": ["ipv4", "fqdn"]}
    versions = await expect(
        await client.get(f"{url}/{created['id']}/versions", headers=h(a.reader_key)), 200
    )
    assert [v["version"] for v in versions["items"]] == [2, 1]
    first = await expect(
        await client.get(f"{url}/{created['id']}/versions/1", headers=h(a.reader_key)), 200
    )
    assert first["yaml"] == FULL_YAML
    assert first["refresh_interval_minutes"] is None


async def test_bad_section_patch_changes_nothing(client: httpx.AsyncClient, world: World) -> None:
    a = world.a
    url = f"/profiles/{a.profile_id}/configs/{a.config_id}"
    before = (await client.get(url, headers=h(a.profile_key))).json()
    r = await client.patch(
        url,
        json={"sources": [{"name": "x", "url": "file:///etc/passwd"}]},
        headers=h(a.profile_key),
    )
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_config"
    assert any(p["field"] == "sources.0.url" for p in r.json()["detail"])
    after = (await client.get(url, headers=h(a.profile_key))).json()
    assert after == before


async def test_refresh_interval_must_be_positive(client: httpx.AsyncClient, world: World) -> None:
    a = world.a
    url = f"/profiles/{a.profile_id}/configs/{a.config_id}"
    for bad in (0, -1, "soon"):
        r = await client.patch(
            url, json={"refresh_interval_minutes": bad}, headers=h(a.profile_key)
        )
        assert r.status_code == 422, bad
    ok = await client.patch(url, json={"refresh_interval_minutes": 0.25}, headers=h(a.profile_key))
    assert ok.json()["refresh_interval_minutes"] == 0.25
    cleared = await client.patch(
        url, json={"refresh_interval_minutes": None}, headers=h(a.profile_key)
    )
    assert cleared.json()["refresh_interval_minutes"] is None
    empty = await client.patch(url, json={}, headers=h(a.profile_key))
    assert empty.status_code == 422


async def test_usage_metrics(client: httpx.AsyncClient, world: World) -> None:
    a = world.a
    await create_pipeline(client, a.profile_key, a.config_id, "second", is_active=False)
    third = await create_pipeline(client, a.profile_key, a.config_id, "third")
    await client.delete(f"/pipelines/{third['id']}", headers=h(a.profile_key))
    page = (await client.get(f"/profiles/{a.profile_id}/configs", headers=h(a.reader_key))).json()
    usage = page["items"][0]["usage"]
    assert usage["pipelines"] == 2  # the deleted one no longer counts
    assert usage["active_pipelines"] == 1
    assert usage["runs"] == 0
    assert usage["last_run_at"] is None
    assert usage["indicators"] == 0


async def test_usage_shows_the_latest_run(client: httpx.AsyncClient, world: World) -> None:
    a = world.a
    first = await run_to_end(client, a.pipeline_id, a.profile_key, persist=True)
    second = await run_to_end(client, a.pipeline_id, a.profile_key, persist=True)
    assert first["state"] == second["state"] == "succeeded"
    page = (await client.get(f"/profiles/{a.profile_id}/configs", headers=h(a.reader_key))).json()
    usage = page["items"][0]["usage"]
    assert usage["runs"] == 2
    assert usage["last_run_state"] == "succeeded"
    assert usage["last_run_at"] == second["finished_at"]
