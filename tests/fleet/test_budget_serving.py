"""Capacity budgets served per device, through HTTP: two devices with different limits on
the same feed URLs get bodies that fit their limits (the higher-priority feed whole, the cut
feed keeping its highest-confidence entries, each body with its own ETag), a device whose
feeds fit gets exactly the published bytes, and a device reads only its declared feeds."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from edl_api.feeds import serving
from edl_api.feeds.http import parse_feed_request
from edl_api.settings import Settings
from edl_api.state import AppState
from tests.conftest import make_settings
from tests.factories import create_pipeline
from tests.feeds.conftest import entry, make_tenant, publish
from tests.helpers import basic, expect, h

# Pipeline A: 60 addresses (confidence 70), served whole first (priority 10).
A_V4 = [f"192.0.2.{i}" for i in range(1, 61)]
A_URLS = ["evil.example/a", "evil.example/b"]
# Pipeline B: 300 addresses whose confidence cycles 0, 10, ..., 90; five domains.
B_V4 = [f"10.1.{i // 256}.{i % 256}" for i in range(300)]
B_CONFIDENCE = {value: (i % 10) * 10 for i, value in enumerate(B_V4)}
B_FQDN = [f"bad{i}.example" for i in range(5)]


TTL = 0.5  # pointers expire fast, so an outage test crosses a few refreshes


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return make_settings(tmp_path, database_url, feed_pointer_ttl_seconds=TTL)


def _top(values: list[str], confidence: dict[str, int], allowed: int) -> list[str]:
    """Independently of the code: the `allowed` highest-confidence values, earlier first
    among equals, in feed order."""
    ranked = sorted(range(len(values)), key=lambda i: (-confidence[values[i]], i))[:allowed]
    return [values[i] for i in sorted(ranked)]


def _lines(text: str) -> list[str]:
    return text.split()


async def _device(
    client: httpx.AsyncClient, profile_id: int, key: str, name: str, ip: int,
    a: int, b: int, **extra: Any,
) -> str:
    body = {
        "name": name, "vendor": "panos", "limits": {"ip": ip, "fqdn": 3},
        "feeds": [
            {"pipeline_id": a, "indicator_type": "ipv4", "format": "panos", "priority": 10},
            {"pipeline_id": b, "indicator_type": "ipv4", "format": "panos"},
            {"pipeline_id": b, "indicator_type": "fqdn"},
        ],
        **extra,
    }
    made = await expect(
        await client.post(f"/profiles/{profile_id}/devices", json=body, headers=h(key)), 201
    )
    return str(made["token"])


@pytest.fixture
async def fleet(app: Any, client: httpx.AsyncClient, tmp_path: Path) -> dict[str, Any]:
    t = await make_tenant(client, "fleet")
    second = await create_pipeline(client, t.key, t.config_id, "fleet-b")
    a, b = t.pipeline_id, int(second["id"])
    await publish(app, tmp_path, a, {"ipv4": A_V4, "url": A_URLS}, [
        *(entry("ipv4", v, confidence=70) for v in A_V4),
        *(entry("url", v) for v in A_URLS),
    ])
    await publish(app, tmp_path, b, {"ipv4": B_V4, "fqdn": B_FQDN}, [
        *(entry("ipv4", v, confidence=B_CONFIDENCE[v]) for v in B_V4),
        *(entry("fqdn", v, confidence=90 - i) for i, v in enumerate(B_FQDN)),
    ])
    small = await _device(client, t.profile_id, t.key, "pa-small", 100, a, b)
    big = await _device(client, t.profile_id, t.key, "pa-big", 1000, a, b)
    return {"tenant": t, "a": a, "b": b, "small": small, "big": big}


async def test_two_devices_get_bodies_that_fit_their_limits(
    app: Any, client: httpx.AsyncClient, fleet: dict[str, Any], tmp_path: Path
) -> None:
    t, a, b, small, big = (fleet[k] for k in ("tenant", "a", "b", "small", "big"))
    b_url = f"/pipelines/{b}/edl/ipv4"
    published = await client.get(b_url, headers=h(t.key))  # the profile key: unbudgeted
    assert published.status_code == 200
    assert _lines(published.text) == B_V4
    assert published.headers["x-edl-truncated"] == "0"

    for _ in range(2):  # the second poll is answered from the cache (the fast path)
        whole = await client.get(f"/pipelines/{a}/edl/ipv4", headers=basic(small))
        assert whole.status_code == 200
        assert _lines(whole.text) == A_V4  # priority 10: served whole first
        assert whole.headers["x-edl-truncated"] == "0"
        cut = await client.get(b_url, headers=basic(small))
        assert cut.status_code == 200, cut.text
        # 100 IP entries in all: 60 of A, so B is cut to its 40 most confident entries.
        assert _lines(cut.text) == _top(B_V4, B_CONFIDENCE, 40)
        assert cut.headers["x-edl-truncated"] == "260"
        assert cut.headers["x-edl-count"] == "40"
        assert cut.headers["etag"] != published.headers["etag"]
        assert cut.headers["etag"] == f'"{hashlib.sha256(cut.content).hexdigest()}"'
    assert len(_lines(whole.text)) + len(_lines(cut.text)) <= 100

    # Its own ETag answers 304 (the fast path too); the full feed's does not.
    for _ in range(2):
        again = await client.get(
            b_url, headers=basic(small) | {"If-None-Match": cut.headers["etag"]}
        )
        assert again.status_code == 304
        assert again.headers["x-edl-truncated"] == "260"
    other = await client.get(
        b_url, headers=basic(small) | {"If-None-Match": published.headers["etag"]}
    )
    assert other.status_code == 200
    assert _lines(other.text) == _lines(cut.text)

    # The big device's feeds fit: exactly the published bytes and ETag.
    for _ in range(2):
        full = await client.get(b_url, headers=basic(big) | {"Accept-Encoding": "identity"})
        assert full.status_code == 200
        assert full.content == published.content
        assert full.headers["etag"] == published.headers["etag"]
        assert full.headers["x-edl-truncated"] == "0"

    # The same cut in a vendor format and in a format with provenance (confidence shown).
    panos = await client.get(b_url, params={"format": "panos"}, headers=basic(small))
    assert _lines(panos.text) == _top(B_V4, B_CONFIDENCE, 40)
    assert panos.headers["x-edl-truncated"] == "260"
    as_json = await client.get(b_url, params={"format": "json"}, headers=basic(small))
    assert as_json.status_code == 200, as_json.text
    rows = json.loads(as_json.text)
    rows = rows if isinstance(rows, list) else rows.get("entries", rows.get("items"))
    assert [row["value"] for row in rows] == _top(B_V4, B_CONFIDENCE, 40)
    assert min(row["confidence"] for row in rows) >= 80

    # .md5 is of the body this device gets.
    md5 = await client.get(f"{b_url}.md5", headers=basic(small))
    assert md5.text == hashlib.md5(cut.content, usedforsecurity=False).hexdigest()
    md5_big = await client.get(f"{b_url}.md5", headers=basic(big))
    assert md5_big.text == hashlib.md5(published.content, usedforsecurity=False).hexdigest()

    # Domains share their own limit (3), not the IP one.
    domains = await client.get(f"/pipelines/{b}/edl/fqdn", headers=basic(small))
    assert _lines(domains.text) == B_FQDN[:3]  # the three most confident
    assert domains.headers["x-edl-truncated"] == "2"

    # A shrinks to 30 entries: B's share grows to 70 on the very next poll.
    await publish(app, tmp_path, a, {"ipv4": A_V4[:30], "url": A_URLS}, [
        *(entry("ipv4", v, confidence=70) for v in A_V4[:30]),
        *(entry("url", v) for v in A_URLS),
    ])
    grown = await client.get(b_url, headers=basic(small) | {"If-None-Match": cut.headers["etag"]})
    assert grown.status_code == 200
    assert _lines(grown.text) == _top(B_V4, B_CONFIDENCE, 70)
    assert grown.headers["x-edl-truncated"] == "230"


async def test_a_polled_budget_is_answered_from_memory(
    app: Any, client: httpx.AsyncClient, fleet: dict[str, Any]
) -> None:
    """What the fast path asks (`cached_body(poll=True)`) is answered once a poll filled the
    caches: the device's cut body, not the published one."""
    b, small = fleet["b"], fleet["small"]
    state = AppState.of(app)
    feed = parse_feed_request(f"/pipelines/{b}/edl/ipv4", {})
    cut = await client.get(f"/pipelines/{b}/edl/ipv4", headers=basic(small))
    principal = state.principals.get(small)
    assert principal is not None
    assert principal.device is not None
    body = serving.cached_body(state.feed_cache, principal, feed, poll=True)
    assert body is not None
    assert body.plain == cut.content
    assert body.truncated == 260


async def test_a_device_reads_only_its_declared_feeds(
    client: httpx.AsyncClient, fleet: dict[str, Any]
) -> None:
    t, a, small = fleet["tenant"], fleet["a"], fleet["small"]
    for url in (f"/pipelines/{a}/edl/url", "/edl/ipv4", "/pipelines/999999/edl/ipv4",
                f"/pipelines/{a}/edl/url.md5"):
        for _ in range(2):  # the fast path says the same (it leaves errors to the route)
            r = await client.get(url, headers=basic(small))
            assert r.status_code == 404, (url, r.text)
            body = r.json()
            assert body["error"] == "not_a_device_feed", body
            assert f"/profiles/{t.profile_id}/devices/" in json.dumps(body)
    # The profile key still reads the url feed: the refusal is the device's alone.
    assert (await client.get(f"/pipelines/{a}/edl/url", headers=h(t.key))).status_code == 200


async def test_a_device_without_feeds_reads_as_feed_tokens_did(
    client: httpx.AsyncClient, fleet: dict[str, Any]
) -> None:
    t, a, b = fleet["tenant"], fleet["a"], fleet["b"]
    made = await expect(await client.post(
        f"/profiles/{t.profile_id}/feed-tokens", json={"name": "old-fw"}, headers=h(t.key)
    ), 201)
    token = made["token"]
    for _ in range(2):
        r = await client.get(f"/pipelines/{b}/edl/ipv4", headers=basic(token))
        assert r.status_code == 200
        assert _lines(r.text) == B_V4
        assert r.headers["x-edl-truncated"] == "0"
        r = await client.get(f"/pipelines/{a}/edl/url", headers=basic(token))
        assert r.status_code == 200
        r = await client.get("/edl/ipv4", headers=basic(token))
        assert r.status_code == 200
        assert set(_lines(r.text)) == set(A_V4) | set(B_V4)


async def test_the_last_budgeted_body_is_served_while_the_database_is_down(
    client: httpx.AsyncClient, fleet: dict[str, Any], outage: Callable[[bool], Any]
) -> None:
    b, small = fleet["b"], fleet["small"]
    url = f"/pipelines/{b}/edl/ipv4"
    cut = await client.get(url, headers=basic(small))
    assert cut.headers["x-edl-truncated"] == "260"
    etag = cut.headers["etag"]

    await outage(True)
    await asyncio.sleep(TTL + 0.05)
    for i in range(8):  # crossing a few pointer refreshes, each failing
        r = await client.get(url, headers=basic(small) | ({"If-None-Match": etag} if i % 2 else {}))
        assert r.status_code == (304 if i % 2 else 200), r.text
        assert r.headers["etag"] == etag
        assert r.headers["x-edl-truncated"] == "260"
        if r.status_code == 200:
            assert r.content == cut.content  # still the cut, never the whole feed
        if i:
            assert r.headers.get("x-edl-stale") == "db-unavailable"
        await asyncio.sleep(TTL / 3)
    # A cut never built in this process needs the database: 503, not 500 or the whole feed.
    csv = await client.get(url, params={"format": "csv"}, headers=basic(small))
    assert (csv.status_code, csv.json()["error"]) == (503, "database_unavailable")
    # Undeclared stays undeclared.
    r = await client.get("/edl/ipv4", headers=basic(small))
    assert (r.status_code, r.json()["error"]) == (404, "not_a_device_feed")
    await outage(False)
    await asyncio.sleep(TTL + 0.05)
    back = await client.get(url, headers=basic(small))
    assert back.status_code == 200
    assert "x-edl-stale" not in back.headers
    assert back.content == cut.content
