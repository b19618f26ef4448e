"""What a vendor feed drops is visible: `X-EDL-Dropped` on the route and the fast path, the
run detail's `metadata.render_drops`, and the `.md5` sidecar Cisco FMC polls."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from edl_api.feeds.fastpath import FeedFastPath
from edl_api.feeds.render import FORMATS
from tests.factories import create_config, create_pipeline, make_profile
from tests.feeds.conftest import publish
from tests.helpers import basic, expect, h

YAML = """\
sources:
  - name: inline
    values: [evil.example/a]
pipeline:
  outputs: [url, ipv6]
"""
URLS = ["evil.example/a", "evil.example/a_*", "evil.example:8080/x"]


async def _published(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> tuple[int, str, str, int]:
    profile_id, key = await make_profile(client, "a")
    config = await create_config(client, key, profile_id, "cfg", YAML)
    pipeline = await create_pipeline(client, key, config["id"], "p")
    token = await expect(await client.post(f"/profiles/{profile_id}/feed-tokens",
                                           json={"name": "fw"}, headers=h(key)), 201)
    run = await publish(app, tmp_path, pipeline["id"], {"url": URLS, "ipv6": ["2001:db8::1"]})
    return pipeline["id"], key, token["token"], run.id


async def test_dropped_header_on_route_and_fast_path_and_run_detail(
    app: Any, client: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline_id, key, token, run_id = await _published(app, client, tmp_path)
    url = f"/pipelines/{pipeline_id}/edl/url"

    async def answer(query: str) -> tuple[int, str | None, bytes]:
        r = await client.get(url + query, headers=basic(token))
        return r.status_code, r.headers.get("x-edl-dropped"), r.content

    queries = ["?format=panos", "?format=panos&ports=strip", "?format=fortinet", "",
               "?format=cisco"]
    first = [await answer(q) for q in queries]  # the route builds and caches
    again = [await answer(q) for q in queries]  # the fast path answers from the cache
    monkeypatch.setattr(FeedFastPath, "_answer", lambda *_: None)
    assert [await answer(q) for q in queries] == again == first
    by_query = dict(zip(queries, first, strict=True))
    assert by_query["?format=panos"] == (200, "2", b"evil.example/a\n")
    assert by_query["?format=panos&ports=strip"] == (200, "1", b"evil.example/a\nevil.example/x\n")
    assert by_query[""][1] == "0"  # plain carries every entry
    assert by_query["?format=fortinet"][1] == "0"  # a port and a trailing `*` both load

    detail = await expect(await client.get(f"/runs/{run_id}", headers=h(key)), 200)
    drops = detail["metadata"]["render_drops"]
    assert drops["url"]["panos"]["reasons"] == {"port": 1, "wildcard_token": 1}
    assert drops["url"]["panos"]["sample"][0] == {"value": "evil.example/a_*",
                                                  "reason": "wildcard_token"}
    assert drops["ipv6"]["checkpoint"]["reasons"] == {"type_not_supported": 1}
    assert "render_drops" not in detail["counts"]


async def test_md5_sidecar_is_the_md5_of_the_served_bytes(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    pipeline_id, _, token, _ = await _published(app, client, tmp_path)
    for base in (f"/pipelines/{pipeline_id}/edl/url", "/edl/url"):
        for fmt in FORMATS:
            for ports in ("drop", "strip"):
                query = f"?format={fmt}&ports={ports}"
                feed = await client.get(base + query, headers={**basic(token),
                                                                "accept-encoding": "gzip"})
                md5 = await client.get(f"{base}.md5{query}", headers=basic(token))
                assert (feed.status_code, md5.status_code) == (200, 200)
                # httpx decodes gzip: `content` is the identity bytes the URL serves.
                assert md5.text == hashlib.md5(feed.content).hexdigest(), (base, query)
                assert md5.headers["content-type"].startswith("text/plain")
    head = await client.head(f"/pipelines/{pipeline_id}/edl/url.md5", headers=basic(token))
    assert (head.status_code, head.content) == (200, b"")
    bad = await client.get(f"/pipelines/{pipeline_id}/edl/url.md5?ports=keep",
                           headers=basic(token))
    assert bad.status_code == 422
    assert (await client.get(f"/pipelines/{pipeline_id}/edl/url.md5")).status_code == 401
