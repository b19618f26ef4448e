from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from edl_api.feeds import serving
from edl_api.feeds.fastpath import FeedFastPath
from tests.conftest import READER_LEGACY_KEY, SUPER_KEY
from tests.factories import create_pipeline
from tests.feeds.conftest import make_tenant, publish
from tests.helpers import basic, expect, h


async def _token(client: httpx.AsyncClient, key: str, profile_id: int, **body: Any) -> dict:
    return await expect(await client.post(
        f"/profiles/{profile_id}/feed-tokens", json={"name": "fw", **body}, headers=h(key)
    ), 201)


async def test_feed_token_basic_auth_and_scope(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    a = await make_tenant(client, "a")
    other_pipe = (await create_pipeline(client, a.key, a.config_id, "second"))["id"]
    await publish(app, tmp_path, a.pipeline_id, {"ipv4": ["192.0.2.1"]})
    await publish(app, tmp_path, other_pipe, {"ipv4": ["192.0.2.2"]})
    token = await _token(client, a.key, a.profile_id, pipeline_ids=[a.pipeline_id])
    assert token["token"].startswith("edlf_")
    assert token["pipeline_ids"] == [a.pipeline_id]
    url = f"/pipelines/{a.pipeline_id}/edl/ipv4"
    for _ in range(2):  # route, then fast path
        r = await client.get(url, headers=basic(token["token"]))
        assert r.status_code == 200, r.text
        assert r.text == "192.0.2.1\n"
        # a pipeline of the same profile that the token does not list
        r = await client.get(f"/pipelines/{other_pipe}/edl/ipv4", headers=basic(token["token"]))
        assert r.status_code == 404
    # the global feed of a token is the union of its listed pipelines only
    r = await client.get("/edl/ipv4", headers=basic(token["token"]))
    assert r.text == "192.0.2.1\n"
    # bearer and X-API-Key work too; a profile key may use Basic on feeds
    assert (await client.get(url, headers={"Authorization": f"Bearer {token['token']}"})
            ).status_code == 200
    assert (await client.get(url, headers=basic(a.key))).status_code == 200
    # a feed token reads feeds only
    r = await client.get(f"/profiles/{a.profile_id}/pipelines/search",
                         params={"indicator": "192.0.2.1"}, headers=h(token["token"]))
    assert r.status_code == 403
    assert (await client.get(f"/pipelines/{a.pipeline_id}", headers=h(token["token"]))
            ).status_code == 403
    # wrong password → 401 with a Basic challenge
    wrong = token["token"][:-8] + "AAAAAAAA"
    for creds in (wrong, "nonsense", ""):
        r = await client.get(url, headers=basic(creds))
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Basic")
        assert r.json()["error"] == "unauthorized"
    r = await client.get(url)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Basic")

    tokens_url = f"/profiles/{a.profile_id}/feed-tokens"
    listed = await expect(await client.get(tokens_url, headers=h(a.key)))
    assert listed["total"] == 1
    assert "token" not in listed["items"][0]
    assert "key_hash" not in listed["items"][0]
    await expect(await client.delete(f"/profiles/{a.profile_id}/feed-tokens/{token['id']}",
                                     headers=h(a.key)))
    r = await client.get(url, headers=basic(token["token"]))
    assert r.status_code == 401
    listed = await expect(await client.get(tokens_url, headers=h(a.key)))
    assert listed["total"] == 0


async def test_token_management_rules(client: httpx.AsyncClient) -> None:
    a = await make_tenant(client, "a")
    b = await make_tenant(client, "b")
    # another profile's pipeline cannot be listed
    r = await client.post(f"/profiles/{a.profile_id}/feed-tokens",
                          json={"name": "x", "pipeline_ids": [b.pipeline_id]}, headers=h(a.key))
    assert r.status_code == 422
    assert r.json()["error"] == "unknown_pipeline"
    r = await client.post(f"/profiles/{a.profile_id}/feed-tokens", json={"name": "x", "z": 1},
                          headers=h(a.key))
    assert r.status_code == 422
    # foreign profile → 404; read-only admin → 403
    r = await client.post(f"/profiles/{a.profile_id}/feed-tokens", json={"name": "x"},
                          headers=h(b.key))
    assert r.status_code == 404
    r = await client.post(f"/profiles/{a.profile_id}/feed-tokens", json={"name": "x"},
                          headers=h(READER_LEGACY_KEY))
    assert r.status_code == 403
    token = await _token(client, SUPER_KEY, a.profile_id)
    assert token["pipeline_ids"] is None
    r = await client.delete(f"/profiles/{b.profile_id}/feed-tokens/{token['id']}",
                            headers=h(b.key))
    assert r.status_code == 404
    # idempotent create: same key → same token id, no second secret
    headers = h(a.key) | {"Idempotency-Key": "k1"}
    first = await expect(await client.post(f"/profiles/{a.profile_id}/feed-tokens",
                                           json={"name": "idem"}, headers=headers), 201)
    again = await expect(await client.post(f"/profiles/{a.profile_id}/feed-tokens",
                                           json={"name": "idem"}, headers=headers), 201)
    assert again["id"] == first["id"]
    assert again["token"] is None


async def test_cross_tenant_feeds_are_404(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    a = await make_tenant(client, "a")
    b = await make_tenant(client, "b")
    await publish(app, tmp_path, a.pipeline_id, {"ipv4": ["192.0.2.1"], "fqdn": ["a.example"]})
    await publish(app, tmp_path, b.pipeline_id, {"ipv4": ["192.0.2.9"]})
    token_b = await _token(client, b.key, b.profile_id)
    url = f"/pipelines/{a.pipeline_id}/edl/ipv4"
    assert (await client.get(url, headers=h(a.key))).status_code == 200
    for headers in (h(b.key), basic(token_b["token"])):
        for _ in range(2):
            r = await client.get(url, headers=headers)
            assert r.status_code == 404
            assert r.json() == {"error": "not_found", "detail": "not found"}
        r = await client.get("/edl/ipv4", headers=headers)
        assert r.text == "192.0.2.9\n"
        r = await client.get("/edl/ipv4", params={"profile_id": a.profile_id}, headers=headers)
        assert r.status_code == 404
    r = await client.get(f"/profiles/{a.profile_id}/pipelines/search",
                         params={"indicator": "192.0.2.1"}, headers=h(b.key))
    assert r.status_code == 404
    r = await client.get(f"/profiles/{a.profile_id}/pipelines/active", headers=h(b.key))
    assert r.status_code == 404
    # an admin sees both, or one profile when asked
    r = await client.get("/edl/ipv4", headers=h(SUPER_KEY))
    assert r.text == "192.0.2.1\n192.0.2.9\n"
    r = await client.get("/edl/ipv4", params={"profile_id": a.profile_id}, headers=h(SUPER_KEY))
    assert r.text == "192.0.2.1\n"


async def test_global_feed_union_dedup_aggregate(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    a = await make_tenant(client, "a")
    second = (await create_pipeline(client, a.key, a.config_id, "second"))["id"]
    await publish(app, tmp_path, a.pipeline_id,
                  {"cidr": ["10.0.0.0/25"], "fqdn": ["b.example", "a.example"]})
    await publish(app, tmp_path, second,
                  {"cidr": ["10.0.0.128/25", "10.1.0.0/16"], "fqdn": ["a.example"]})
    r = await client.get("/edl/cidr", headers=h(a.key))
    assert r.status_code == 200
    assert r.text == "10.0.0.0/24\n10.1.0.0/16\n"
    assert r.headers["x-edl-count"] == "2"
    etag = r.headers["etag"]
    assert (await client.get("/edl/cidr", headers=h(a.key) | {"If-None-Match": etag})
            ).status_code == 304
    r = await client.get("/edl/fqdn", headers=h(a.key))
    assert r.text == "a.example\nb.example\n"
    r = await client.get("/edl/fqdn", params={"format": "json"}, headers=h(a.key))
    assert r.status_code == 200
    # a publish rebuilds the union; a deleted pipeline leaves it
    await publish(app, tmp_path, second, {"cidr": ["10.0.0.128/25", "10.1.0.0/16"],
                                          "fqdn": ["a.example", "c.example"]})
    assert "c.example" in (await client.get("/edl/fqdn", headers=h(a.key))).text
    await expect(await client.delete(f"/pipelines/{second}", headers=h(a.key)))
    r = await client.get("/edl/cidr", headers=h(a.key))
    assert r.text == "10.0.0.0/25\n"
    # no member has published a url feed: an error the firewall logs, never an empty list
    r = await client.get("/edl/url", headers=h(a.key))
    assert r.status_code == 503
    assert r.json()["error"] == "feed_not_ready"


async def test_fast_path_only_answers_what_the_route_would(
    app: Any, client: httpx.AsyncClient, tmp_path: Path, monkeypatch: Any
) -> None:
    a = await make_tenant(client, "a")
    await publish(app, tmp_path, a.pipeline_id, {"ipv4": ["192.0.2.1"]})
    token = await _token(client, a.key, a.profile_id)
    url = f"/pipelines/{a.pipeline_id}/edl/ipv4"
    assert (await client.get(url, headers=basic(token["token"]))).status_code == 200
    assert (await client.get("/edl/ipv4", headers=basic(token["token"]))).status_code == 200

    async def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("the route ran: the fast path should have answered")

    # The route always goes through `feed_body` (even on a cache hit); the fast path never.
    monkeypatch.setattr(serving, "feed_body", refuse)
    for path in (url, "/edl/ipv4"):
        r = await client.get(path, headers=basic(token["token"]) | {"Accept-Encoding": "gzip"})
        assert r.status_code == 200
        assert r.text == "192.0.2.1\n"
        assert r.headers["content-encoding"] == "gzip"
        r = await client.head(path, headers=basic(token["token"]))
        assert r.status_code == 200
    # revocation reaches the fast path at once (the verified-key cache is dropped)
    await expect(await client.delete(f"/profiles/{a.profile_id}/feed-tokens/{token['id']}",
                                     headers=h(a.key)))
    assert (await client.get(url, headers=basic(token["token"]))).status_code == 401


async def test_fast_path_and_route_answer_every_feed_url_alike(
    app: Any, client: httpx.AsyncClient, tmp_path: Path, monkeypatch: Any
) -> None:
    a, b = await make_tenant(client, "a"), await make_tenant(client, "b")
    await publish(app, tmp_path, a.pipeline_id, {"ipv4": ["192.0.2.1"]})
    await publish(app, tmp_path, b.pipeline_id, {"ipv4": ["198.51.100.9"]})
    token = await _token(client, a.key, a.profile_id)
    feed = f"/pipelines/{a.pipeline_id}/edl"
    urls = [
        f"{feed}/ipv4", f"{feed}/ipv4?format=csv&extra=1", f"{feed}/ipv4?format=plain&format=csv",
        f"{feed}/nope", f"{feed}/ipv4?format=nope", f"/pipelines/{b.pipeline_id}/edl/ipv4",
        "/edl/ipv4", f"/edl/ipv4?profile_id={a.profile_id}", f"/edl/ipv4?profile_id={b.profile_id}",
        "/edl/ipv4?profile_id=x", "/edl/nope",
    ]

    async def answers() -> list[tuple[str, int, bytes, str | None]]:
        seen = []
        for url in urls:
            r = await client.get(url, headers=basic(token["token"]))
            seen.append((url, r.status_code, r.content, r.headers.get("etag")))
        return seen

    await answers()  # the route fills the caches
    fast = await answers()
    monkeypatch.setattr(FeedFastPath, "_answer", lambda *_: None)  # every request: the route
    assert await answers() == fast
    assert [status for _, status, _, _ in fast] == [200, 200, 200, 404, 422, 404,
                                                    200, 200, 404, 422, 404]
