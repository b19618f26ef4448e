from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from edl_api.engine.entries_file import ENTRIES_FILE
from edl_api.feeds.content import sha256_hex
from edl_api.feeds.entries_reader import as_json_lines
from edl_api.models import Artifact, HostedFeed, utcnow
from edl_api.state import AppState
from tests.feeds.conftest import make_tenant, prepare_run, publish, publish_prepared
from tests.helpers import expect, h

V4 = ["192.0.2.1", "192.0.2.2", "198.51.100.7", "203.0.113.9"]


async def _artifacts(app: Any, run_id: int) -> dict[str, Artifact]:
    async with AppState.of(app).sessionmaker() as session:
        rows = await session.execute(select(Artifact).where(Artifact.run_id == run_id))
        return {a.indicator_type: a for a in rows.scalars()}


async def test_serve_headers_conditional_gzip_head(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    t = await make_tenant(client, "a")
    url = f"/pipelines/{t.pipeline_id}/edl/ipv4"
    # never published: 503 feed_not_ready (test_feed_answers.py), never an empty list
    r = await client.get(url, headers=h(t.key))
    assert r.status_code == 503

    run = await publish(app, tmp_path, t.pipeline_id, {"ipv4": V4, "fqdn": ["evil.example"]})
    for _ in range(2):  # the second answer comes from the fast path
        r = await client.get(url, headers=h(t.key) | {"Accept-Encoding": "identity"})
        assert r.status_code == 200, r.text
        assert r.text == "".join(f"{v}\n" for v in V4)
        etag = r.headers["etag"]
        assert r.headers["x-edl-count"] == "4"
        assert r.headers["x-edl-run-id"] == str(run.id)
        assert r.headers["content-type"].startswith("text/plain")
        assert "content-encoding" not in r.headers
    artifact = (await _artifacts(app, run.id))["ipv4"]
    assert etag == f'"{artifact.sha256}"'
    assert artifact.published is True

    r = await client.get(url, headers=h(t.key) | {"If-None-Match": etag})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"] == etag
    r = await client.get(url, headers=h(t.key) | {"If-None-Match": '"other"'})
    assert r.status_code == 200
    later = format_datetime(utcnow(), usegmt=True)
    r = await client.get(url, headers=h(t.key) | {"If-Modified-Since": later})
    assert r.status_code == 304
    old = "Sat, 01 Jan 2000 00:00:00 GMT"
    r = await client.get(url, headers=h(t.key) | {"If-Modified-Since": old})
    assert r.status_code == 200

    raw = await client.get(url, headers=h(t.key) | {"Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    assert raw.text == "".join(f"{v}\n" for v in V4)  # httpx decodes it
    assert int(raw.headers["content-length"]) == len(artifact.content_gzip)
    assert gzip.decompress(artifact.content_gzip) == artifact.content

    r = await client.head(url, headers=h(t.key) | {"Accept-Encoding": "identity"})
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-length"] == str(len(artifact.content))
    assert r.headers["x-edl-count"] == "4"


async def test_formats_rendered_with_provenance(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    t = await make_tenant(client, "a")
    entries = [{"type": "ipv4", "value": v, "sources": ["feodo"], "tags": ["c2"],
                "confidence": 80} for v in V4]
    await publish(app, tmp_path, t.pipeline_id, {"ipv4": V4}, entries)
    url = f"/pipelines/{t.pipeline_id}/edl/ipv4"
    r = await client.get(url, params={"format": "json"}, headers=h(t.key))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert "feodo" in r.text
    assert "first_seen" in r.text
    r2 = await client.get(url, params={"format": "json"}, headers=h(t.key))
    assert r2.content == r.content
    assert r2.headers["etag"] == r.headers["etag"]
    r = await client.get(url, params={"format": "csv"}, headers=h(t.key))
    assert r.status_code == 200
    assert "feodo" in r.text
    assert (await client.get(url, params={"format": "panos"}, headers=h(t.key))).status_code == 200
    r = await client.get(url, params={"format": "xml"}, headers=h(t.key))
    assert r.status_code == 422
    assert r.json()["error"] == "unknown_format"
    r = await client.get(f"/pipelines/{t.pipeline_id}/edl/bogus", headers=h(t.key))
    assert r.status_code == 404


IP_FEED = ["10.0.0.0/8", *V4]  # the combined feed: networks and hosts


@contextmanager
def provenance_queries() -> Iterator[list[str]]:
    """SQL statements, made while inside, that load indicator provenance (any engine)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "indicators.tags" in statement.lower():
            seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


async def _publish_ip_feeds(app: Any, client: httpx.AsyncClient, tmp_path: Path) -> Any:
    t = await make_tenant(client, "a")
    entries = [{"type": "ipv4", "value": v, "sources": ["feodo"], "tags": ["c2"],
                "confidence": 80} for v in V4]
    entries.append({"type": "cidr", "value": "10.0.0.0/8", "sources": ["drop"], "tags": [],
                    "confidence": 90})
    await publish(app, tmp_path, t.pipeline_id,
                  {"ipv4": V4, "cidr": ["10.0.0.0/8"], "ip": IP_FEED}, entries)
    return t


async def test_panos_and_fortinet_bodies_skip_the_provenance_query(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    t = await _publish_ip_feeds(app, client, tmp_path)
    plain = "".join(f"{v}\n" for v in IP_FEED)
    for url in (f"/pipelines/{t.pipeline_id}/edl/ip", "/edl/ip"):
        for fmt in ("panos", "fortinet"):
            with provenance_queries() as queries:
                r = await client.get(url, params={"format": fmt}, headers=h(t.key))
            assert r.status_code == 200, r.text
            assert r.text == plain
            assert r.headers["x-edl-count"] == str(len(IP_FEED))
            assert queries == [], (url, fmt)


async def test_formats_showing_provenance_still_load_it(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    t = await _publish_ip_feeds(app, client, tmp_path)
    for url in (f"/pipelines/{t.pipeline_id}/edl/ip", "/edl/ip"):
        with provenance_queries() as queries:
            r = await client.get(url, params={"format": "json"}, headers=h(t.key))
        assert r.status_code == 200, r.text
        assert len(queries) == 1
        rows = {row["value"]: row for row in r.json()}
        assert list(rows) == IP_FEED
        assert (rows["10.0.0.0/8"]["type"], rows["10.0.0.0/8"]["sources"]) == ("cidr", ["drop"])
        assert rows[V4[0]]["type"] == "ipv4"
        assert (rows[V4[0]]["sources"], rows[V4[0]]["tags"]) == (["feodo"], ["c2"])
        assert rows[V4[0]]["confidence"] == 80
        assert rows[V4[0]]["last_seen"] is not None
        with provenance_queries() as queries:
            r = await client.get(url, params={"format": "checkpoint"}, headers=h(t.key))
        assert len(queries) == 1
        lines = r.text.splitlines()
        assert any(",10.0.0.0-10.255.255.255,IP Range,high,high,AB,drop" in x for x in lines)
        assert any(f",{V4[0]},IP,high,high,AB,feodo #c2" in x for x in lines)


async def test_guard_shrink_and_empty_keep_last_good(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    t = await make_tenant(client, "a", shrink=50)
    url = f"/pipelines/{t.pipeline_id}/edl/ipv4"
    first = await publish(app, tmp_path, t.pipeline_id, {"ipv4": V4})
    served = (await client.get(url, headers=h(t.key))).content

    shrunk = await publish(app, tmp_path, t.pipeline_id, {"ipv4": V4[:1]})  # -75 %
    art = (await _artifacts(app, shrunk.id))["ipv4"]
    assert art.published is False
    assert "shrink" in (art.reason or "")
    assert shrunk.counts["feeds"]["ipv4"]["published"] is False
    assert "max_shrink_percent" in shrunk.counts["feeds"]["ipv4"]["reason"]
    r = await client.get(url, headers=h(t.key))
    assert r.content == served
    assert r.headers["x-edl-run-id"] == str(first.id)

    empty = await publish(app, tmp_path, t.pipeline_id, {"ipv4": []})
    art = (await _artifacts(app, empty.id))["ipv4"]
    assert art.published is False
    assert "empty" in (art.reason or "")
    assert (await client.get(url, headers=h(t.key))).content == served

    ok_shrink = await publish(app, tmp_path, t.pipeline_id, {"ipv4": V4[:2]})  # -50 %: allowed
    assert (await _artifacts(app, ok_shrink.id))["ipv4"].published is True
    r = await client.get(url, headers=h(t.key))
    assert r.text == "192.0.2.1\n192.0.2.2\n"
    assert ok_shrink.diff["ipv4"]["removed"] == 2
    assert ok_shrink.diff["ipv4"]["added"] == 0


async def test_allow_empty_publishes_empty(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    t = await make_tenant(client, "a", allow_empty=True)
    await publish(app, tmp_path, t.pipeline_id, {"ipv4": V4})
    run = await publish(app, tmp_path, t.pipeline_id, {"ipv4": []})
    assert (await _artifacts(app, run.id))["ipv4"].published is True
    r = await client.get(f"/pipelines/{t.pipeline_id}/edl/ipv4", headers=h(t.key))
    assert r.content == b""
    assert r.headers["x-edl-count"] == "0"


async def test_dry_run_stored_never_published(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    t = await make_tenant(client, "a")
    await publish(app, tmp_path, t.pipeline_id, {"ipv4": V4})
    dry = await publish(app, tmp_path, t.pipeline_id, {"ipv4": ["10.9.9.9"] + V4}, mode="dry_run")
    art = (await _artifacts(app, dry.id))["ipv4"]
    assert art.published is False
    assert "dry run" in (art.reason or "")
    assert dry.diff["ipv4"]["added"] == 1
    r = await client.get(f"/pipelines/{t.pipeline_id}/edl/ipv4", headers=h(t.key))
    assert "10.9.9.9" not in r.text
    r = await client.get(f"/runs/{dry.id}/artifacts/ipv4", headers=h(t.key))
    assert r.status_code == 200
    assert r.text.startswith("10.9.9.9\n")
    assert r.headers["x-edl-published"] == "false"
    assert r.headers["etag"] == f'"{art.sha256}"'
    assert (await client.get(f"/runs/{dry.id}/artifacts/url", headers=h(t.key))).status_code == 404
    other = await make_tenant(client, "b")
    r = await client.get(f"/runs/{dry.id}/artifacts/ipv4", headers=h(other.key))
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"


async def test_deleted_or_inactive_pipeline_is_404(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    t = await make_tenant(client, "a")
    await publish(app, tmp_path, t.pipeline_id, {"ipv4": V4})
    url = f"/pipelines/{t.pipeline_id}/edl/ipv4"
    assert (await client.get(url, headers=h(t.key))).status_code == 200
    assert (await client.get(url, headers=h(t.key))).status_code == 200  # cached now
    r = await client.patch(f"/pipelines/{t.pipeline_id}", json={"is_active": False},
                           headers=h(t.key))
    assert r.status_code == 200, r.text
    assert (await client.get(url, headers=h(t.key))).status_code == 404
    await client.patch(f"/pipelines/{t.pipeline_id}", json={"is_active": True}, headers=h(t.key))
    assert (await client.get(url, headers=h(t.key))).status_code == 200
    await expect(await client.delete(f"/pipelines/{t.pipeline_id}", headers=h(t.key)))
    r = await client.get(url, headers=h(t.key))
    assert r.status_code == 404
    assert r.json() == {"error": "not_found", "detail": "not found"}
    # a run that finishes after the deletion publishes nothing
    run = await publish(app, tmp_path, t.pipeline_id, {"ipv4": V4[:1]})
    assert (await _artifacts(app, run.id))["ipv4"].published is False
    async with AppState.of(app).sessionmaker() as session:
        feed = await session.get(HostedFeed, (t.pipeline_id, "ipv4"))
        assert feed is not None
        assert feed.count == 4
    assert (await client.get("/pipelines/999999/edl/ipv4", headers=h(t.key))).status_code == 404


async def test_publish_is_idempotent_per_run(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A second publish of the same run (a retried call) stores and repoints nothing."""
    t = await make_tenant(client, "a")
    run_id, out_dir, snapshot = await prepare_run(app, tmp_path, t.pipeline_id, {"ipv4": V4})
    first = await publish_prepared(app, run_id, out_dir, snapshot)
    again = await publish_prepared(app, run_id, out_dir, snapshot)
    assert first.live_after_seconds is not None
    assert again.owned
    assert again.live_after_seconds is None
    assert set(await _artifacts(app, run_id)) == {"ipv4", "provenance"}


async def test_provenance_artifact_downloadable(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    t = await make_tenant(client, "a")
    run = await publish(app, tmp_path, t.pipeline_id, {"ipv4": V4})
    r = await client.get(f"/runs/{run.id}/artifacts/provenance", headers=h(t.key))
    assert r.status_code == 200
    # Stored in the engine's grouped form, downloaded as JSON Lines: one whole entry a line.
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert sorted(e["value"] for e in lines) == sorted(V4)
    assert all(e["type"] == "ipv4" and e["sources"] for e in lines)
    stored = (tmp_path / f"run-{run.id}" / ENTRIES_FILE).read_bytes()
    assert r.content == as_json_lines(stored)
    assert r.headers["etag"] == f'"{sha256_hex(r.content)}"'
    assert r.headers["x-edl-count"] == "4"
