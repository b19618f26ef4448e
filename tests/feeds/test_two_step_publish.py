"""Feeds go live first, the indicator store follows: through the dispatcher and directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from edl_api.feeds import publish as publishing
from edl_api.feeds.publish import PublishOptions, store_and_repoint
from edl_api.models import HostedFeed, Pipeline, PipelineRun, ProfileConfig
from edl_api.state import AppState
from tests.feeds.conftest import entry, make_tenant, owner, publish
from tests.helpers import expect as ok
from tests.helpers import h, run_to_end

YAML = "sources:\n  - name: inline\n    values: [{values}]\npipeline:\n  outputs: [ipv4]\n"


async def _launch(client: httpx.AsyncClient, t: Any, values: str) -> Any:
    await ok(await client.patch(f"/profiles/{t.profile_id}/configs/{t.config_id}",
                                json={"yaml": YAML.format(values=values)}, headers=h(t.key)))
    return await run_to_end(client, t.pipeline_id, t.key, persist=True)


async def _search(client: httpx.AsyncClient, t: Any, value: str) -> list[Any]:
    found = await ok(await client.get(f"/profiles/{t.profile_id}/pipelines/search",
                                      params={"indicator": value}, headers=h(t.key)))
    return list(found["matches"])


async def test_the_feed_is_served_before_the_indicator_store_is_written(
    app: Any, client: httpx.AsyncClient, monkeypatch: Any
) -> None:
    t = await make_tenant(client, "a")
    seen: dict[str, Any] = {}
    real = publishing.write_indicators

    async def observed(session: Any, run: PipelineRun, pending: Any) -> None:
        async with AppState.of(app).sessionmaker() as other:
            row = await other.get(PipelineRun, run.id)
            assert row is not None
            seen.update(state=row.state, stage=row.progress.get("stage"))
        r = await client.get(f"/pipelines/{t.pipeline_id}/edl/ipv4", headers=h(t.key))
        seen.update(served=r.text, run_header=r.headers["x-edl-run-id"],
                    found=await _search(client, t, "9.9.9.9"))
        await real(session, run, pending)

    monkeypatch.setattr(publishing, "write_indicators", observed)
    run = await _launch(client, t, "9.9.9.9")
    assert run["state"] == "succeeded", run
    # while the store was being written: the new feed served, the run not yet finished
    assert seen == {"state": "running", "stage": "indexing", "served": "9.9.9.9\n",
                    "run_header": str(run["id"]), "found": []}
    assert run["counts"]["indicators"]["ipv4"]["inserted"] == 1
    [match] = await _search(client, t, "9.9.9.9")
    assert match["run_id"] == run["id"]
    logs = (await client.get(f"/runs/{run['id']}/logs", headers=h(t.key))).text
    assert "feeds live after" in logs


async def test_a_failed_indicator_write_keeps_the_published_feed_and_the_next_run_repairs(
    client: httpx.AsyncClient, monkeypatch: Any
) -> None:
    t = await make_tenant(client, "a")
    real = publishing.write_indicators

    async def broken(*_: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(publishing, "write_indicators", broken)
    run = await _launch(client, t, "9.9.9.1, 9.9.9.2")
    # what firewalls get is this run's feed, so the run succeeded; it says what is missing
    assert run["state"] == "succeeded", run
    assert any("indicator store not updated" in e and "disk full" in e for e in run["errors"])
    assert run["counts"]["feeds"]["ipv4"]["published"] is True
    r = await client.get(f"/pipelines/{t.pipeline_id}/edl/ipv4", headers=h(t.key))
    assert r.text == "9.9.9.1\n9.9.9.2\n"
    assert r.headers["x-edl-run-id"] == str(run["id"])
    assert await _search(client, t, "9.9.9.1") == []

    monkeypatch.setattr(publishing, "write_indicators", real)
    again = await _launch(client, t, "9.9.9.1, 9.9.9.2, 9.9.9.3")
    assert again["state"] == "succeeded"
    assert again["counts"]["indicators"]["method"] == "full"  # no baseline: rows compared
    for value in ("9.9.9.1", "9.9.9.2", "9.9.9.3"):
        [match] = await _search(client, t, value)
        assert match["run_id"] == again["id"]


async def test_an_older_run_never_writes_over_a_newer_runs_indicators(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    t = await make_tenant(client, "a")
    older_dir = tmp_path / "older"
    older_dir.mkdir()
    (older_dir / "ipv4.txt").write_text("192.0.2.1\n")
    (older_dir / "entries.jsonl").write_text(
        '{"type":"ipv4","value":"192.0.2.1","sources":["old"],"tags":[],"confidence":50}\n'
    )
    async with AppState.of(app).sessionmaker() as session:
        pipeline = await session.get(Pipeline, t.pipeline_id)
        assert pipeline is not None
        config = await session.get(ProfileConfig, pipeline.profile_config_id)
        assert config is not None
        older = PipelineRun(
            pipeline_id=t.pipeline_id, profile_id=t.profile_id, profile_config_id=config.id,
            config_version=config.version, config_snapshot=config.yaml, state="running",
            trigger="api", mode="full", worker=owner(app),
        )
        session.add(older)
        await session.flush()
        pending = await store_and_repoint(session, older, older_dir, PublishOptions())
        assert pending is not None
        await session.commit()  # the older run's feed is live; its store write is pending
        newer = await publish(app, tmp_path, t.pipeline_id, {"ipv4": ["192.0.2.7"]},
                              [entry("ipv4", "192.0.2.7", ["new"])])
        await publishing.write_indicators(session, older, pending)
        await session.commit()
        assert older.counts["indicators"] == {
            "skipped": "a newer run published these feeds first"
        }
        served = (await session.execute(
            select(HostedFeed.run_id).where(HostedFeed.pipeline_id == t.pipeline_id)
        )).scalar_one()
        assert served == newer.id
    assert await _search(client, t, "192.0.2.1") == []
    [match] = await _search(client, t, "192.0.2.7")
    assert match["sources"] == ["new"]
