"""What a publish does before its feeds go live, and what waits until they are.

Without retention, going live needs only the feed files' bytes, hash and count:
entries.jsonl, the feeds' lines and the diff are read once the feeds are committed
(the feed is served while search still lags, then search catches up). With retention
the entries are needed first (they decide what the feed holds)."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from edl_api.feeds import content as feed_content
from edl_api.feeds import publish as publishing
from edl_api.models import Artifact, HostedFeed, PipelineRun
from edl_api.state import AppState
from tests.feeds.conftest import entry, make_tenant, prepare_run, publish, publish_prepared
from tests.helpers import expect as ok
from tests.helpers import h


async def _search(client: httpx.AsyncClient, t: Any, value: str) -> list[Any]:
    found = await ok(await client.get(f"/profiles/{t.profile_id}/pipelines/search",
                                      params={"indicator": value}, headers=h(t.key)))
    return list(found["matches"])


def _record_order(monkeypatch: Any, order: list[str]) -> None:
    """Note each time a publish reads entries.jsonl, prepares the feeds, and settles."""
    read, prepare, settle = (publishing.read_entries, publishing.prepare_feeds,
                             publishing._settle)

    def reading(*args: Any) -> Any:
        order.append("read_entries")
        return read(*args)

    def preparing(*args: Any) -> Any:
        order.append("prepare_feeds")
        return prepare(*args)

    async def settling(*args: Any, **kwargs: Any) -> None:
        order.append("settle (live)")
        await settle(*args, **kwargs)

    monkeypatch.setattr(publishing, "read_entries", reading)
    monkeypatch.setattr(publishing, "prepare_feeds", preparing)
    monkeypatch.setattr(publishing, "_settle", settling)


async def _served_run(app: Any, pipeline_id: int) -> int | None:
    async with AppState.of(app).sessionmaker() as session:
        return (await session.execute(
            select(HostedFeed.run_id).where(HostedFeed.pipeline_id == pipeline_id,
                                            HostedFeed.indicator_type == "ipv4")
        )).scalar_one_or_none()


async def test_without_retention_the_feed_is_live_before_entries_are_read(
    app: Any, client: httpx.AsyncClient, tmp_path: Path, monkeypatch: Any
) -> None:
    t = await make_tenant(client, "order")
    run_id, out_dir, snapshot = await prepare_run(
        app, tmp_path, t.pipeline_id, {"ipv4": ["192.0.2.5", "198.51.100.7"]},
        [entry("ipv4", "192.0.2.5", ["a"]), entry("ipv4", "198.51.100.7", ["b"])],
    )
    seen: dict[str, Any] = {}
    real = publishing.read_entries

    def observed(out: Path, types: list[str], base_types: list[str]) -> Any:
        seen["read"] = True
        return real(out, types, base_types)

    async def check_live(*args: Any, **kwargs: Any) -> None:  # settling, once committed
        seen["served_run"] = await _served_run(app, t.pipeline_id)
        r = await client.get(f"/pipelines/{t.pipeline_id}/edl/ipv4", headers=h(t.key))
        seen["served"] = r.text
        seen["found"] = await _search(client, t, "192.0.2.5")
        seen["read_before_settle"] = seen.get("read", False)
        await real_settle(*args, **kwargs)

    real_settle = publishing._settle
    monkeypatch.setattr(publishing, "read_entries", observed)
    monkeypatch.setattr(publishing, "_settle", check_live)
    outcome = await publish_prepared(app, run_id, out_dir, snapshot)
    assert outcome.owned
    assert not outcome.errors, outcome.errors
    # Live, served, search not yet updated, entries not yet read: then all of it.
    assert seen == {"served_run": run_id, "served": "192.0.2.5\n198.51.100.7\n",
                    "found": [], "read_before_settle": False, "read": True}
    [match] = await _search(client, t, "192.0.2.5")
    assert match["sources"] == ["a"]
    assert match["run_id"] == run_id
    async with AppState.of(app).sessionmaker() as session:
        run = await session.get(PipelineRun, run_id)
        assert run is not None
        assert run.diff["ipv4"]["added"] == 2
        assert run.diff["ipv4"]["previous"] == 0
        assert run.counts["indicators"]["ipv4"]["inserted"] == 2
        artifact = (await session.execute(
            select(Artifact).where(Artifact.run_id == run_id, Artifact.indicator_type == "ipv4")
        )).scalar_one()
        # served as the engine wrote it, and its gzip copy is the same bytes
        assert artifact.content == (out_dir / "ipv4.txt").read_bytes()
        assert gzip.decompress(artifact.content_gzip) == artifact.content
    # A second run (a diff against the first): the same order.
    monkeypatch.undo()
    order: list[str] = []
    _record_order(monkeypatch, order)
    again_id, again_dir, _ = await prepare_run(
        app, tmp_path, t.pipeline_id, {"ipv4": ["192.0.2.5"]},
        [entry("ipv4", "192.0.2.5", ["a"])],
    )
    assert (await publish_prepared(app, again_id, again_dir, snapshot)).owned
    assert order == ["prepare_feeds", "settle (live)", "read_entries"]


async def test_with_retention_entries_are_read_before_going_live(
    app: Any, client: httpx.AsyncClient, tmp_path: Path, monkeypatch: Any
) -> None:
    t = await make_tenant(client, "retain")
    yaml = ("sources:\n  - name: inline\n    values: [192.0.2.1]\n"
            "pipeline:\n  outputs: [ipv4]\n  retain_missing_days: 7\n")
    await publish(app, tmp_path, t.pipeline_id, {"ipv4": ["192.0.2.1"]},
                          [entry("ipv4", "192.0.2.1")], yaml=yaml)
    order: list[str] = []
    _record_order(monkeypatch, order)
    second = await publish(app, tmp_path, t.pipeline_id, {"ipv4": ["192.0.2.2"]},
                           [entry("ipv4", "192.0.2.2")], yaml=yaml)
    assert order == ["read_entries", "prepare_feeds", "settle (live)"]
    assert second.state == "succeeded"
    r = await client.get(f"/pipelines/{t.pipeline_id}/edl/ipv4", headers=h(t.key))
    assert r.text == "192.0.2.1\n192.0.2.2\n"  # the vanished one retained
    assert second.diff["ipv4"]["added"] == 1
    assert second.diff["ipv4"]["removed"] == 0


async def test_an_unchanged_feed_has_an_empty_diff_and_a_changed_one_its_own(
    app: Any, client: httpx.AsyncClient, tmp_path: Path, monkeypatch: Any
) -> None:
    t = await make_tenant(client, "same")
    feeds = {"ipv4": ["192.0.2.1", "192.0.2.3"]}
    entries = [entry("ipv4", v) for v in feeds["ipv4"]]
    await publish(app, tmp_path, t.pipeline_id, feeds, entries)
    again = await publish(app, tmp_path, t.pipeline_id, feeds, entries)
    assert again.diff["ipv4"] == {"added": 0, "removed": 0, "added_sample": [],
                                  "removed_sample": [], "previous": 2}
    changed = await publish(app, tmp_path, t.pipeline_id, {"ipv4": ["192.0.2.1"]},
                            entries[:1])
    assert changed.diff["ipv4"] == {"added": 0, "removed": 1, "added_sample": [],
                                    "removed_sample": ["192.0.2.3"], "previous": 2}


def test_canonical_feed_bytes_are_those_split_and_joined() -> None:
    for body in (b"", b"a\n", b"1.2.3.4\n5.6.7.8\n", "h\u00e9.example\n".encode(),
                 b"a\n\nb\n", b"\na\n", b"a", b"a\nb", b"\xff\n", b"a\r\n"):
        rejoined = None
        try:
            rejoined = feed_content.join_lines(feed_content.split_lines(body))
        except UnicodeDecodeError:
            pass
        assert feed_content.is_canonical(body) == (rejoined == body), body
