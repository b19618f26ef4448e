"""Stale-if-error in-process: the database refuses every new connection (a `do_connect`
hook raising the driver's OperationalError, the pool emptied) — SQLite cannot easily be
"down". Feeds keep their last pointer and bytes, marked `X-EDL-Stale`; the API answers
503 `database_unavailable`; lifting the fault recovers without a restart."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from edl_api.errors import database_unavailable
from edl_api.settings import Settings
from edl_api.state import AppState
from tests.conftest import make_settings
from tests.factories import create_pipeline
from tests.feeds.conftest import make_tenant, publish
from tests.helpers import basic, expect, h

TTL = 0.2
KEY_TTL = 0.3


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    # Verified keys expire quickly too: an outage outlives them (stale principals).
    return make_settings(
        tmp_path, database_url, feed_pointer_ttl_seconds=TTL, key_cache_ttl_seconds=KEY_TTL
    )


def _stale(response: httpx.Response) -> bool:
    return response.headers.get("x-edl-stale") == "db-unavailable"


async def test_feeds_serve_the_last_pointer_while_the_database_is_down(
    app: Any, client: httpx.AsyncClient, tmp_path: Path, outage: Callable[[bool], Any]
) -> None:
    a = await make_tenant(client, "a")
    unpolled = (await create_pipeline(client, a.key, a.config_id, "never-polled"))["id"]
    await publish(app, tmp_path, a.pipeline_id, {"ipv4": ["192.0.2.1"]})
    await publish(app, tmp_path, unpolled, {"ipv4": ["192.0.2.9"]})
    token = await expect(await client.post(
        f"/profiles/{a.profile_id}/feed-tokens", json={"name": "spare"}, headers=h(a.key)
    ), 201)
    feed = f"/pipelines/{a.pipeline_id}/edl/ipv4"
    fresh = await client.get(feed, headers=h(a.key))
    assert fresh.status_code == 200
    assert not _stale(fresh)
    etag = fresh.headers["etag"]
    union = await client.get("/edl/ipv4", headers=h(a.key))
    assert union.text == "192.0.2.1\n192.0.2.9\n"

    await outage(True)
    await asyncio.sleep(TTL + 0.05)
    # Enough polls to cross a few TTLs: each TTL one of them retries the database.
    for i in range(12):
        r = await client.get(feed, headers=h(a.key) | ({"If-None-Match": etag} if i % 2 else {}))
        assert r.status_code == (304 if i % 2 else 200), r.text
        assert r.headers["etag"] == etag
        if r.status_code == 200:
            assert r.text == "192.0.2.1\n"
        if i:  # the first may be the fast path's grace answer
            assert _stale(r), dict(r.headers)
        await asyncio.sleep(TTL / 3)
    gz = await client.get(feed, headers=h(a.key) | {"Accept-Encoding": "gzip"})
    assert gz.status_code == 200
    assert gz.headers["content-encoding"] == "gzip"
    assert _stale(gz)
    md5 = await client.get(feed + ".md5", headers=h(a.key))
    assert md5.status_code == 200
    assert _stale(md5)
    stale_union = await client.get("/edl/ipv4", headers=h(a.key))
    assert stale_union.text == "192.0.2.1\n192.0.2.9\n"
    assert _stale(stale_union)

    # Never polled in this process: no last pointer to serve.
    never = await client.get(f"/pipelines/{unpolled}/edl/ipv4", headers=h(a.key))
    assert never.status_code == 503
    assert never.json()["error"] == "database_unavailable"
    assert never.headers["retry-after"] == "5"
    # A format whose body was never built needs the database (provenance): 503, not 500.
    csv = await client.get(feed + "?format=csv", headers=h(a.key))
    assert (csv.status_code, csv.json()["error"]) == (503, "database_unavailable")
    # A key this process has not verified cannot be checked: 503, not 401.
    unverified = await client.get(feed, headers=basic(token["token"]))
    assert (unverified.status_code, unverified.json()["error"]) == (503, "database_unavailable")
    # The API: 503 with Retry-After, no SQL or driver class in the body.
    api = await client.get(f"/pipelines/{a.pipeline_id}", headers=h(a.key))
    assert api.status_code == 503
    assert api.headers["retry-after"] == "5"
    assert api.json()["error"] == "database_unavailable"
    assert "SQL" not in api.text
    assert "sqlite3" not in api.text
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() | {"detail": None} == {
        "status": "unavailable", "database": "unreachable: unable to open database file",
        "error": "database_unavailable", "detail": None,
    }
    await outage(False)

    await asyncio.sleep(TTL + 0.05)
    back = await client.get(feed, headers=h(a.key))
    if _stale(back):  # the fast path's grace answer while its one poll refreshes
        back = await client.get(feed, headers=h(a.key))
    assert back.status_code == 200
    assert not _stale(back)
    assert back.headers["etag"] == etag
    assert (await client.get(f"/pipelines/{a.pipeline_id}", headers=h(a.key))).status_code == 200
    assert (await client.get("/readyz")).status_code == 200
    assert (await client.get(feed, headers=basic(token["token"]))).status_code == 200
    scraped = (await client.get("/metrics", headers=h())).text
    assert "edl_feed_stale_serves_total" in scraped


def test_outage_errors_are_told_from_bugs() -> None:
    from sqlalchemy import exc as sa_exc

    refused = sa_exc.OperationalError("SELECT secret FROM t", {}, sqlite3.OperationalError(
        "unable to open database file"))
    assert database_unavailable(refused) == "unable to open database file"
    bug = sa_exc.ProgrammingError("SELECT nope", {}, sqlite3.ProgrammingError("no such column"))
    assert database_unavailable(bug) is None
    assert database_unavailable(OSError("disk")) is None  # not raised by a driver
    assert database_unavailable(ValueError("x")) is None


async def test_a_verified_feed_token_outlives_its_cache_ttl_during_an_outage(
    app: Any, client: httpx.AsyncClient, tmp_path: Path, outage: Callable[[bool], Any]
) -> None:
    """A firewall's token verified before the outage keeps its feed after the verified-key
    TTL runs out (the database cannot be asked, so its last answer stands); a token never
    verified here still gets 503, and a revoked token is not resurrected."""
    a = await make_tenant(client, "a")
    await publish(app, tmp_path, a.pipeline_id, {"ipv4": ["192.0.2.1"]})
    token = await expect(await client.post(
        f"/profiles/{a.profile_id}/feed-tokens", json={"name": "fw"}, headers=h(a.key)
    ), 201)
    feed = f"/pipelines/{a.pipeline_id}/edl/ipv4"
    assert (await client.get(feed, headers=basic(token["token"]))).status_code == 200
    cache = AppState.of(app).key_cache
    await asyncio.sleep(max(KEY_TTL, TTL) + 0.05)
    assert cache.get(token["token"]) is None  # expired: a live database would be asked
    await outage(True)
    r = await client.get(feed, headers=basic(token["token"]))
    assert r.status_code == 200, r.text
    assert r.text == "192.0.2.1\n"
    assert _stale(r)
    await outage(False)
    # Revoked (its key id dropped from the cache): an outage does not bring it back.
    revoked = await client.delete(
        f"/profiles/{a.profile_id}/feed-tokens/{token['id']}", headers=h(a.key)
    )
    assert revoked.status_code == 200, revoked.text
    await outage(True)
    r = await client.get(feed, headers=basic(token["token"]))
    assert (r.status_code, r.json()["error"]) == (503, "database_unavailable")
