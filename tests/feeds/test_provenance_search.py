from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from edl_api.models import Indicator, utcnow
from edl_api.state import AppState
from tests.feeds.conftest import entry, make_tenant
from tests.feeds.conftest import publish as publish_any
from tests.helpers import expect, h

# compact: entries in the engine's form → the steady-state delta path; spaced → full path.
COMPACT = pytest.mark.parametrize("compact", [True, False], ids=["delta", "full"])
publish = publish_any


async def _search(client: httpx.AsyncClient, t: Any, value: str, key: str | None = None) -> Any:
    return await expect(await client.get(f"/profiles/{t.profile_id}/pipelines/search",
                                         params={"indicator": value}, headers=h(key or t.key)))


@COMPACT
async def test_provenance_across_two_runs(
    app: Any, client: httpx.AsyncClient, tmp_path: Path, compact: bool
) -> None:
    publish = partial(publish_any, compact=compact)
    t = await make_tenant(client, "a")
    first = await publish(app, tmp_path, t.pipeline_id, {"ipv4": ["192.0.2.1"]},
                          [entry("ipv4", "192.0.2.1", ["feodo"], tags=["c2"], confidence=80)])
    before = (await _search(client, t, "192.0.2.1"))["matches"]
    assert len(before) == 1
    match = before[0]
    assert match["sources"] == ["feodo"]
    assert match["tags"] == ["c2"]
    assert match["confidence"] == 80
    assert match["run_id"] == first.id
    assert match["pipeline_name"] == "a-pipe"
    second = await publish(
        app, tmp_path, t.pipeline_id, {"ipv4": ["192.0.2.1", "192.0.2.5"]},
        [entry("ipv4", "192.0.2.1", ["feodo", "spamhaus"]), entry("ipv4", "192.0.2.5")],
    )
    assert second.counts["indicators"]["method"] == ("delta" if compact else "full")
    assert second.counts["indicators"]["ipv4"]["inserted"] == 1
    assert second.counts["indicators"]["ipv4"]["updated"] == 1
    after = (await _search(client, t, "192.0.2.1"))["matches"][0]
    assert after["first_seen"] == match["first_seen"]
    assert datetime.fromisoformat(after["last_seen"]) > datetime.fromisoformat(match["last_seen"])
    assert after["sources"] == ["feodo", "spamhaus"]
    assert after["run_id"] == second.id
    fresh = (await _search(client, t, "192.0.2.5"))["matches"][0]
    assert datetime.fromisoformat(fresh["first_seen"]) > datetime.fromisoformat(match["first_seen"])
    r = await client.get(f"/pipelines/{t.pipeline_id}/edl/ipv4", params={"format": "csv"},
                         headers=h(t.key))
    assert "spamhaus" in r.text


@COMPACT
async def test_retention_keeps_a_vanished_indicator(
    app: Any, client: httpx.AsyncClient, tmp_path: Path, compact: bool
) -> None:
    publish = partial(publish_any, compact=compact)
    t = await make_tenant(client, "a", retain=3, shrink=100)
    await publish(app, tmp_path, t.pipeline_id, {"fqdn": ["a.example", "gone.example"]})
    run = await publish(app, tmp_path, t.pipeline_id, {"fqdn": ["a.example"]})
    url = f"/pipelines/{t.pipeline_id}/edl/fqdn"
    assert (await client.get(url, headers=h(t.key))).text == "a.example\ngone.example\n"
    assert run.counts["feeds"]["fqdn"]["retained"] == 1
    kept = (await _search(client, t, "gone.example"))["matches"]
    assert len(kept) == 1
    # four days later it is over the limit and leaves both the feed and the store
    async with AppState.of(app).sessionmaker() as session:
        await session.execute(
            update(Indicator).where(Indicator.value == "gone.example")
            .values(last_seen=utcnow() - timedelta(days=4))
        )
        await session.commit()
    await publish(app, tmp_path, t.pipeline_id, {"fqdn": ["a.example"]})
    assert (await client.get(url, headers=h(t.key))).text == "a.example\n"
    assert (await _search(client, t, "gone.example"))["matches"] == []


@COMPACT
async def test_without_retention_vanished_rows_are_pruned(
    app: Any, client: httpx.AsyncClient, tmp_path: Path, compact: bool
) -> None:
    publish = partial(publish_any, compact=compact)
    t = await make_tenant(client, "a", shrink=100)
    await publish(app, tmp_path, t.pipeline_id, {"fqdn": ["a.example", "gone.example"]})
    await publish(app, tmp_path, t.pipeline_id, {"fqdn": ["a.example"]})
    assert (await _search(client, t, "gone.example"))["matches"] == []
    assert len((await _search(client, t, "a.example"))["matches"]) == 1


async def test_search_networks_wildcards_urls(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    t = await make_tenant(client, "a")
    b = await make_tenant(client, "b")
    await publish(app, tmp_path, t.pipeline_id, {
        "cidr": ["198.51.100.0/24", "2001:db8::/32"],
        "ipv4": ["203.0.113.7"],
        "fqdn": ["*.bad.example", "evil.example"],
        "url": ["phish.example/login"],
    })
    await publish(app, tmp_path, b.pipeline_id, {"cidr": ["198.51.100.0/24"]})
    found = await _search(client, t, "198.51.100.77")
    assert found["kind"] == "ipv4"
    assert [(m["indicator_type"], m["entry"]) for m in found["matches"]] == [
        ("cidr", "198.51.100.0/24")
    ]
    assert found["matches"][0]["pipeline_id"] == t.pipeline_id  # not tenant b's
    assert [m["entry"] for m in (await _search(client, t, "2001:db8:1::5"))["matches"]] == [
        "2001:db8::/32"
    ]
    assert [m["entry"] for m in (await _search(client, t, "198.51.100.0/26"))["matches"]] == [
        "198.51.100.0/24"
    ]
    assert [m["entry"] for m in (await _search(client, t, "x.y.bad.example"))["matches"]] == [
        "*.bad.example"
    ]
    assert (await _search(client, t, "bad.example"))["matches"] == []
    found = await _search(client, t, "http://203.0.113.7/payload.exe")
    assert [(m["indicator_type"], m["entry"]) for m in found["matches"]] == [
        ("ipv4", "203.0.113.7")
    ]
    found = await _search(client, t, "https://phish.example/login")
    assert [m["entry"] for m in found["matches"]] == ["phish.example/login"]
    found = await _search(client, t, "http://www.bad.example/x")
    assert [m["entry"] for m in found["matches"]] == ["*.bad.example"]
    assert (await _search(client, t, "192.0.2.200"))["matches"] == []
    r = await client.get(f"/profiles/{t.profile_id}/pipelines/search",
                         params={"indicator": "not an indicator!"}, headers=h(t.key))
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_indicator"


async def test_active_view(app: Any, client: httpx.AsyncClient, tmp_path: Path) -> None:
    t = await make_tenant(client, "a")
    assert (await expect(await client.get(f"/profiles/{t.profile_id}/pipelines/active",
                                          headers=h(t.key))))["items"] == []
    run = await publish(app, tmp_path, t.pipeline_id, {"ipv4": ["192.0.2.1", "192.0.2.2"]})
    body = await expect(await client.get(f"/profiles/{t.profile_id}/pipelines/active",
                                         headers=h(t.key)))
    [item] = body["items"]
    assert item["pipeline_id"] == t.pipeline_id
    assert item["feeds"]["ipv4"]["count"] == 2
    assert item["feeds"]["ipv4"]["run_id"] == run.id
    assert len(item["feeds"]["ipv4"]["sha256"]) == 64
    assert item["last_run"]["id"] == run.id
    assert item["last_run"]["state"] == "succeeded"
    assert item["scheduled"] is False
    assert item["next_run_at"] is None


@COMPACT
async def test_reappearing_indicator_keeps_first_seen(
    app: Any, client: httpx.AsyncClient, tmp_path: Path, compact: bool
) -> None:
    publish = partial(publish_any, compact=compact)
    t = await make_tenant(client, "a", retain=3, shrink=100)
    await publish(app, tmp_path, t.pipeline_id, {"fqdn": ["a.example", "b.example"]})
    first = (await _search(client, t, "b.example"))["matches"][0]
    assert first["retained"] is False
    await publish(app, tmp_path, t.pipeline_id, {"fqdn": ["a.example"]})
    held = (await _search(client, t, "b.example"))["matches"][0]
    assert held["retained"] is True
    assert held["first_seen"] == first["first_seen"]
    back = await publish(app, tmp_path, t.pipeline_id, {"fqdn": ["a.example", "b.example"]},
                         [entry("fqdn", "a.example"), entry("fqdn", "b.example", ["other"])])
    again = (await _search(client, t, "b.example"))["matches"][0]
    assert again["retained"] is False
    assert again["first_seen"] == first["first_seen"]
    assert again["run_id"] == back.id
    assert again["sources"] == ["other"]


@COMPACT
async def test_large_changes_rewrite_the_type(
    app: Any, client: httpx.AsyncClient, tmp_path: Path, compact: bool
) -> None:
    publish = partial(publish_any, compact=compact)
    t = await make_tenant(client, "a", retain=3, shrink=100)
    names = [f"h{i:05d}.example" for i in range(1500)]
    await publish(app, tmp_path, t.pipeline_id, {"fqdn": names})
    before = (await _search(client, t, names[0]))["matches"][0]
    # 1400 change provenance, 100 vanish (kept by retention): more than half the rows
    entries = [entry("fqdn", n, ["changed"]) for n in names[:1400]]
    await publish(app, tmp_path, t.pipeline_id, {"fqdn": names[:1400]}, entries)
    r = await client.get(f"/pipelines/{t.pipeline_id}/edl/fqdn", headers=h(t.key))
    assert r.headers["x-edl-count"] == "1500"
    now = (await _search(client, t, names[0]))["matches"][0]
    assert now["sources"] == ["changed"]
    assert now["first_seen"] == before["first_seen"]
    gone = (await _search(client, t, names[-1]))["matches"][0]
    assert gone["retained"] is True
    assert gone["sources"] == ["inline"]
    # and everything vanishes except 10: 1390 retired at once
    await publish(app, tmp_path, t.pipeline_id, {"fqdn": names[:10]})
    r = await client.get(f"/pipelines/{t.pipeline_id}/edl/fqdn", headers=h(t.key))
    assert r.headers["x-edl-count"] == "1500"
    assert (await _search(client, t, names[500]))["matches"][0]["retained"] is True


async def test_postgresql_sessions_never_jit_compile_the_search(
    app: Any, database_url: str | None
) -> None:
    """Right after a bulk load (no statistics yet) PostgreSQL JIT-compiled each IP search:
    28 ms of a 30 ms answer. The service's connections turn JIT off."""
    from sqlalchemy import text

    if database_url is None:
        pytest.skip("PostgreSQL only")
    async with AppState.of(app).sessionmaker() as session:
        assert (await session.execute(text("SHOW jit"))).scalar_one() == "off"
