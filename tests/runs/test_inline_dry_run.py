"""POST /runs with an inline `config`: a dry run of an unsaved config, validated like a
saved one, that never touches the saved config or the hosted feed."""

from __future__ import annotations

import httpx

from tests.factories import World, make_pipeline
from tests.helpers import expect, h, run_to_end, wait_run

TRIAL = """\
# an unsaved try: one new address
sources:
  - name: trial
    values: [192.0.2.200, 9.9.9.9]
"""


async def test_inline_dry_run_tries_unsaved_config(client: httpx.AsyncClient, world: World) -> None:
    a = world.a
    pipeline_id = await make_pipeline(client, a.profile_id, name="served")
    published = await run_to_end(client, pipeline_id, a.profile_key, persist=True)
    assert published["state"] == "succeeded"
    feed = f"/pipelines/{pipeline_id}/edl/ip"
    before = await client.get(feed, headers=h(a.profile_key))
    assert before.status_code == 200
    assert "8.8.8.8" in before.text

    queued = await expect(await client.post("/runs", json={
        "pipeline_id": pipeline_id, "profile_id": a.profile_id, "mode": "dry_run",
        "config": TRIAL,
    }, headers=h(a.profile_key)), 202)
    run = await wait_run(client, queued["id"], key=a.profile_key)
    assert run["state"] == "succeeded", run["errors"]
    assert run["mode"] == "dry_run"
    assert run["metadata"]["config_snapshot"] == TRIAL  # as sent, comment included
    assert run["metadata"]["overrides"]["inline_config"] is True
    artifact = await client.get(f"/runs/{run['id']}/artifacts/ip", headers=h(a.profile_key))
    assert artifact.status_code == 200, artifact.text
    assert "9.9.9.9" in artifact.text
    assert "8.8.8.8" not in artifact.text

    # The saved config and the hosted feed are as they were.
    config = await expect(await client.get(
        f"/profiles/{a.profile_id}/configs/{published['profile_config_id']}",
        headers=h(a.profile_key),
    ))
    assert config["version"] == 1
    assert "trial" not in config["yaml"]
    after = await client.get(feed, headers=h(a.profile_key))
    assert after.text == before.text


async def test_inline_config_errors_point_at_the_sent_text(
    client: httpx.AsyncClient, world: World
) -> None:
    a = world.a
    bad = "# line 1\nsources:\n  - name: x\n    url: ftp://example.org/x\n"
    r = await client.post("/runs", json={
        "pipeline_id": a.pipeline_id, "mode": "dry_run", "config": bad,
    }, headers=h(a.profile_key))
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "invalid_config"
    assert (4, "sources.0.url") in {(p["line"], p["field"]) for p in body["detail"]}

    secret = "sources:\n  - name: x\n    url: https://example.org/x\n" \
        "    headers: {Authorization: '${secret:NOPE}'}\n"
    r = await client.post("/runs", json={
        "pipeline_id": a.pipeline_id, "mode": "dry_run", "config": secret,
    }, headers=h(a.profile_key))
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_config"


async def test_inline_config_needs_dry_run_and_a_pipeline(
    client: httpx.AsyncClient, world: World
) -> None:
    a, b = world.a, world.b
    full = await client.post("/runs", json={
        "pipeline_id": a.pipeline_id, "config": TRIAL,
    }, headers=h(a.profile_key))
    assert full.status_code == 422, full.text
    assert full.json()["error"] == "inline_config_needs_dry_run"
    assert '"mode": "dry_run"' in full.json()["detail"]

    alone = await client.post("/runs", json={
        "profile_id": a.profile_id, "mode": "dry_run", "config": TRIAL,
    }, headers=h(a.profile_key))
    assert alone.status_code == 422
    assert "pipeline_id" in alone.text

    mismatch = await client.post("/runs", json={
        "pipeline_id": a.pipeline_id, "profile_id": b.profile_id, "mode": "dry_run",
        "config": TRIAL,
    }, headers=h(a.operator_key))
    assert mismatch.status_code == 422
    assert mismatch.json()["error"] == "pipeline_profile_mismatch"

    # Another tenant's pipeline is missing, inline config or not.
    foreign = await client.post("/runs", json={
        "pipeline_id": a.pipeline_id, "mode": "dry_run", "config": TRIAL,
    }, headers=h(b.profile_key))
    assert foreign.status_code == 404
