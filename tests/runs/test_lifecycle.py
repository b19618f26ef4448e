"""Launch, read, idempotency and role rules of runs (real engine, inline sources)."""

from __future__ import annotations

import asyncio

import httpx

from edl_api.settings import Settings
from tests.conftest import READER_LEGACY_KEY, SUPER_KEY
from tests.factories import make_pipeline, make_profile
from tests.helpers import expect, get_run, h, launch_run, slow_yaml, wait_run


async def test_run_succeeds_and_reports(
    rc: httpx.AsyncClient, published: list[int], run_settings: Settings
) -> None:
    profile_id, _ = await make_profile(rc)
    pipeline_id = await make_pipeline(rc, profile_id)
    created = await launch_run(rc, pipeline_id, reason="first", persist=False)
    assert created["state"] == "queued"
    assert created["trigger"] == "api"
    assert created["mode"] == "full"
    assert created["profile_id"] == profile_id

    run = await wait_run(rc, created["id"], "succeeded")
    assert run["config_version"] == 1
    assert "values: [203.0.113.7" in run["metadata"]["config_snapshot"]
    assert run["metadata"]["overrides"] == {"persist": False, "reason": "first"}
    (source,) = run["metadata"]["sources"]
    assert source["name"] == "inline"
    assert source["status"] == "ok"
    assert source["error"] is None
    assert run["counts"]
    assert run["started_at"]
    assert run["finished_at"]
    assert run["errors"] == []
    assert published == []  # persist: false keeps only the record and report

    logs = await rc.get(f"/runs/{created['id']}/logs", headers=h())
    assert logs.status_code == 200
    assert logs.headers["content-type"].startswith("text/plain")
    assert "source inline: ok" in logs.text
    assert "dispatcher: succeeded" in logs.text
    tail = await rc.get(f"/runs/{created['id']}/logs?tail=1", headers=h())
    assert tail.text.endswith(" dispatcher: succeeded\n")
    assert tail.text.count("\n") == 1

    engine_log = (run_settings.log_dir / "engine.log").read_text()
    assert f"run {created['id']}: " in engine_log
    assert "source inline: ok" in engine_log

    page = await expect(await rc.get(f"/runs?pipeline_id={pipeline_id}", headers=h()), 200)
    assert page["total"] == 1
    assert page["items"][0]["id"] == created["id"]
    assert (await rc.get("/runs?state=queued", headers=h())).json()["total"] == 0
    assert (await rc.get("/jobs", headers=h())).json() == {"items": []}


async def test_persisted_run_is_handed_to_publishing(
    rc: httpx.AsyncClient, published: list[int]
) -> None:
    profile_id, _ = await make_profile(rc)
    pipeline_id = await make_pipeline(rc, profile_id)
    full = await launch_run(rc, pipeline_id, persist=True)
    await wait_run(rc, full["id"], "succeeded")
    dry = await launch_run(rc, pipeline_id, persist=True, mode="dry_run")
    run = await wait_run(rc, dry["id"], "succeeded")
    assert run["mode"] == "dry_run"
    assert published == [full["id"], dry["id"]]


async def test_failing_source_fails_the_run_without_publishing(
    rc: httpx.AsyncClient, published: list[int]
) -> None:
    profile_id, _ = await make_profile(rc)
    yaml = "sources:\n  - name: local\n    path: missing.txt\n"
    pipeline_id = await make_pipeline(rc, profile_id, yaml)
    created = await launch_run(rc, pipeline_id, persist=True)
    run = await wait_run(rc, created["id"], {"failed", "succeeded"})
    assert run["state"] == "failed"
    assert run["errors"]
    assert run["metadata"]["sources"][0]["status"] != "ok"
    assert published == []


async def test_idempotent_launch(rc: httpx.AsyncClient) -> None:
    profile_id, _ = await make_profile(rc)
    pipeline_id = await make_pipeline(rc, profile_id)
    body = {"pipeline_id": pipeline_id, "persist": False}
    headers = {**h(), "Idempotency-Key": "launch-1"}
    first, second = await asyncio.gather(
        rc.post("/runs", json=body, headers=headers),
        rc.post("/runs", json=body, headers=headers),
    )
    assert first.status_code == second.status_code == 202, (first.text, second.text)
    assert first.json()["id"] == second.json()["id"]
    again = await expect(await rc.post("/runs", json=body, headers=headers), 202)
    assert again["id"] == first.json()["id"]
    other = await rc.post("/runs", json={**body, "mode": "dry_run"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["error"] == "idempotency_key_reused"
    in_body = {**body, "idempotency_key": "launch-2"}
    a = await expect(await rc.post("/runs", json=in_body, headers=h()), 202)
    b = await expect(await rc.post("/runs", json=in_body, headers=h()), 202)
    assert a["id"] == b["id"] != first.json()["id"]
    page = await expect(await rc.get(f"/runs?pipeline_id={pipeline_id}", headers=h()), 200)
    assert page["total"] == 2


async def test_launch_rules_and_roles(rc: httpx.AsyncClient) -> None:
    profile_id, profile_key = await make_profile(rc, "a")
    other_id, other_key = await make_profile(rc, "b")
    pipeline_id = await make_pipeline(rc, profile_id)

    # A profile key launches its own pipeline; another profile's key sees a 404.
    own = await launch_run(rc, pipeline_id, key=profile_key)
    foreign = await rc.post("/runs", json={"pipeline_id": pipeline_id}, headers=h(other_key))
    assert foreign.status_code == 404
    assert (await rc.get(f"/runs/{own['id']}", headers=h(other_key))).status_code == 404
    missing = await rc.get("/runs/999999", headers=h(other_key))
    assert missing.status_code == 404
    assert missing.json() == (await rc.get(f"/runs/{own['id']}", headers=h(other_key))).json()
    assert (await rc.get("/runs", headers=h(other_key))).json()["total"] == 0
    cancel = await rc.post(f"/runs/{own['id']}/cancel", headers=h(other_key))
    assert cancel.status_code == 404

    # Readers read runs, never launch or cancel.
    reader = await rc.post("/runs", json={"pipeline_id": pipeline_id}, headers=h(READER_LEGACY_KEY))
    assert reader.status_code == 403
    assert (await rc.get(f"/runs/{own['id']}", headers=h(READER_LEGACY_KEY))).status_code == 200
    assert (await rc.get("/jobs", headers=h(READER_LEGACY_KEY))).status_code == 200
    assert (await rc.post(f"/runs/{own['id']}/cancel",
                          headers=h(READER_LEGACY_KEY))).status_code == 403

    # A feed token is refused on every run route.
    token_response = await rc.post(
        f"/profiles/{profile_id}/feed-tokens", json={"name": "fw"}, headers=h(profile_key)
    )
    tokens = [token_response.json()["token"]] if token_response.status_code == 201 else []
    routes = (("GET", "/runs"), ("GET", f"/runs/{own['id']}"), ("GET", "/jobs"),
              ("GET", f"/runs/{own['id']}/logs"), ("POST", f"/runs/{own['id']}/cancel"))
    for token in tokens:
        for method, path in routes:
            response = await rc.request(method, path, headers=h(token))
            assert response.status_code == 403, (path, response.text)
    assert (await rc.get("/runs")).status_code == 401

    # Unknown fields and bad overrides are validation errors.
    for body in ({"pipeline_id": pipeline_id, "bogus": 1},
                 {"pipeline_id": pipeline_id, "mode": "fast"},
                 {"pipeline_id": pipeline_id, "timeout_seconds": 0}):
        bad = await rc.post("/runs", json=body, headers=h())
        assert bad.status_code == 422
        assert bad.json()["error"] == "validation_error"

    # An inactive or deleted pipeline cannot be launched.
    await expect(await rc.patch(f"/pipelines/{pipeline_id}", json={"is_active": False},
                                headers=h()), 200)
    inactive = await rc.post("/runs", json={"pipeline_id": pipeline_id}, headers=h())
    assert inactive.status_code == 409
    assert inactive.json()["error"] == "pipeline_inactive"
    await expect(await rc.delete(f"/pipelines/{pipeline_id}", headers=h()), 200)
    deleted = await rc.post("/runs", json={"pipeline_id": pipeline_id}, headers=h())
    assert deleted.status_code == 409
    assert deleted.json()["error"] == "pipeline_deleted"
    assert other_id != profile_id
    await wait_run(rc, own["id"], {"succeeded", "cancelled"})


async def test_cancel_finished_run_is_409(rc: httpx.AsyncClient) -> None:
    profile_id, _ = await make_profile(rc)
    pipeline_id = await make_pipeline(rc, profile_id)
    created = await launch_run(rc, pipeline_id)
    await wait_run(rc, created["id"], "succeeded")
    response = await rc.post(f"/runs/{created['id']}/cancel", headers=h(SUPER_KEY))
    assert response.status_code == 409
    assert response.json()["error"] == "run_finished"
    assert (await get_run(rc, created["id"]))["state"] == "succeeded"


async def test_progress_is_visible_while_running(rc: httpx.AsyncClient, upstream_port: int) -> None:
    """GET /runs/{id} shows the stage and sources done/total during the run."""
    profile_id, _ = await make_profile(rc)
    yaml = (
        slow_yaml(upstream_port, 0, name="quick")
        + slow_yaml(upstream_port, 4, name="slow").removeprefix("sources:\n")
    )
    created = await launch_run(rc, await make_pipeline(rc, profile_id, yaml))
    seen: dict[str, object] = {}
    for _ in range(100):
        run = await get_run(rc, created["id"])
        if run["state"] not in ("queued", "running"):
            break
        progress = run["progress"]
        if run["state"] == "running" and progress.get("sources_done") == 1:
            seen = progress
            break
        await asyncio.sleep(0.1)
    assert seen, "no progress seen while running"
    assert seen["sources_total"] == 2
    assert seen["stage"] == "fetch"
    final = await wait_run(rc, created["id"], {"succeeded"}, timeout=30)
    assert final["progress"]["stage"] == "finished"
