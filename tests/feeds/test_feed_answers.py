"""Feed URLs that serve nothing say why (an error a firewall logs and retries), never an
empty list: 404 `feed_type_not_published` for a type the pipeline does not output, 503
`feed_not_ready` + Retry-After until it has published. Route and fast path alike."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from edl_api.feeds.fastpath import FeedFastPath
from tests.factories import create_config, create_pipeline, make_profile
from tests.feeds.conftest import publish
from tests.helpers import basic, expect, h

YAML = """\
sources:
  - name: inline
    values: [9.9.9.7]
pipeline:
  outputs: [ipv4, ip]
"""


async def _pipeline(client: httpx.AsyncClient, yaml: str = YAML) -> tuple[int, int, str, str]:
    """(profile id, pipeline id, profile key, feed token) of a fresh tenant."""
    profile_id, key = await make_profile(client, f"a-{uuid.uuid4().hex[:8]}")  # names: unique
    config = await create_config(client, key, profile_id, "cfg", yaml)
    pipeline = await create_pipeline(client, key, config["id"], "p")
    token = await expect(await client.post(f"/profiles/{profile_id}/feed-tokens",
                                           json={"name": "fw"}, headers=h(key)), 201)
    return profile_id, pipeline["id"], key, token["token"]


async def _answers(client: httpx.AsyncClient, urls: list[str], token: str) -> list[Any]:
    seen = []
    for url in urls:
        for method in ("GET", "HEAD"):
            r = await client.request(method, url, headers=basic(token))
            body = r.json() if method == "GET" else None
            seen.append((method, url, r.status_code, r.headers.get("retry-after"), body))
    return seen


async def test_unpublished_feeds_answer_errors_on_route_and_fast_path(
    app: Any, client: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, pipeline_id, _, token = await _pipeline(client)
    urls = [f"/pipelines/{pipeline_id}/edl/ipv4", f"/pipelines/{pipeline_id}/edl/fqdn",
            f"/pipelines/{pipeline_id}/edl/ipv4?format=csv", "/edl/ipv4"]
    first = await _answers(client, urls, token)
    again = await _answers(client, urls, token)  # every cache now warm: the fast path's turn
    monkeypatch.setattr(FeedFastPath, "_answer", lambda *_: None)  # the route alone
    assert await _answers(client, urls, token) == again == first

    by_url = {(method, url): rest for method, url, *rest in first}
    status, retry, body = by_url[("GET", urls[0])]
    assert (status, retry, body["error"]) == (503, "60", "feed_not_ready")
    assert body["detail"] == (
        f"pipeline {pipeline_id} has not published its ipv4 feed yet; retry after 60 s"
    )
    status, retry, body = by_url[("GET", urls[1])]
    assert (status, retry, body["error"]) == (404, None, "feed_type_not_published")
    assert body["detail"] == (
        f"pipeline {pipeline_id} does not publish a fqdn feed; its outputs: ipv4, ip"
    )
    assert by_url[("GET", urls[2])][0] == 503  # every format alike
    status, retry, body = by_url[("GET", "/edl/ipv4")]
    assert (status, retry, body["error"]) == (503, "60", "feed_not_ready")
    assert by_url[("HEAD", urls[0])][:2] == [503, "60"]
    assert by_url[("HEAD", urls[1])][0] == 404


async def test_a_publish_turns_not_ready_into_the_feed(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    _, pipeline_id, key, token = await _pipeline(client)
    url = f"/pipelines/{pipeline_id}/edl/ipv4"
    for _ in range(2):  # the route, then the fast path: both with nothing cached as a list
        assert (await client.get(url, headers=basic(token))).status_code == 503
    await publish(app, tmp_path, pipeline_id, {"ipv4": ["9.9.9.7"], "ip": ["9.9.9.7"]})
    for _ in range(2):
        r = await client.get(url, headers=basic(token))
        assert (r.status_code, r.text) == (200, "9.9.9.7\n")
        assert (await client.get("/edl/ipv4", headers=basic(token))).text == "9.9.9.7\n"
    # a type outside the outputs stays a 404, whatever else the pipeline published
    r = await client.get(f"/pipelines/{pipeline_id}/edl/url", headers=h(key))
    assert (r.status_code, r.json()["error"]) == (404, "feed_type_not_published")


async def test_an_empty_first_result_is_held_until_allowed(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """An empty first publish is far likelier a broken source than an empty threat list:
    it is held (the feed stays not ready) unless guard.allow_empty says otherwise."""
    _, pipeline_id, key, token = await _pipeline(client)
    run = await publish(app, tmp_path, pipeline_id, {"ipv4": [], "ip": []})
    held = run.counts["feeds"]["ipv4"]
    assert held["published"] is False
    assert "the first result is empty" in held["reason"]
    assert "allow_empty" in held["reason"]
    assert f"ipv4 feed not published: {held['reason']}" in run.errors
    r = await client.get(f"/pipelines/{pipeline_id}/edl/ipv4", headers=basic(token))
    assert (r.status_code, r.json()["error"]) == (503, "feed_not_ready")

    allowed = YAML + "  guard: {allow_empty: true}\n"
    _, other, _, other_token = await _pipeline(client, allowed)
    run = await publish(app, tmp_path, other, {"ipv4": [], "ip": []}, yaml=allowed)
    assert run.counts["feeds"]["ipv4"]["published"] is True
    r = await client.get(f"/pipelines/{other}/edl/ipv4", headers=basic(other_token))
    assert (r.status_code, r.content, r.headers["x-edl-count"]) == (200, b"", "0")


async def test_the_fast_paths_url_memo_is_bounded_and_knows_no_tenant(
    app: Any, client: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path remembers which feed a URL names (not who may read it): another
    tenant's token on a remembered URL is the same 404 as a pipeline that does not exist,
    and URLs past the memo's cap (odd query strings) empty it rather than grow it."""
    _, mine, _, token = await _pipeline(client)
    _, _, _, other_token = await _pipeline(client)
    await publish(app, tmp_path, mine, {"ipv4": ["9.9.9.7"], "ip": ["9.9.9.7"]})
    url = f"/pipelines/{mine}/edl/ipv4"
    for _ in range(2):  # the route fills the caches, then the fast path answers
        r = await client.get(url, headers=basic(token))
        assert (r.status_code, r.text) == (200, "9.9.9.7\n")
    assert (url, b"") in app.fast_path._feeds

    foreign = await client.get(url, headers=basic(other_token))
    missing = await client.get("/pipelines/999999/edl/ipv4", headers=basic(other_token))
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()

    monkeypatch.setattr("edl_api.feeds.fastpath._MAX_FEED_URLS", 3)
    for n in range(10):
        r = await client.get(f"{url}?n={n}", headers=basic(token))
        assert (r.status_code, r.text) == (200, "9.9.9.7\n")
        assert len(app.fast_path._feeds) <= 3
    assert (url, b"n=9") in app.fast_path._feeds  # the newest is kept
