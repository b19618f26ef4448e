"""The indicator store's bulk path (issue #18): grouped rows, set-based inserts.

Rows are read back from the database itself and compared with what the entries say:
a first publish (one statement per provenance group), a churn publish that touches
only the changed rows (the others keep their last_seen), retention, a rewrite, entry lines
the fast reader cannot take (escapes, another JSON form), and a 200k write that leaves
the event loop free.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select, text

from edl_api.feeds import entries_reader, indexing
from edl_api.feeds import indicators as indicator_store
from edl_api.models import HostedFeed, Indicator, PipelineRun
from edl_api.state import AppState
from tests.feeds.conftest import entry, make_tenant, prepare_run, publish, publish_prepared


def _ips(count: int, offset: int = 0) -> list[str]:
    start = int(ipaddress.IPv4Address("11.0.0.0")) + offset * 5
    return [str(ipaddress.IPv4Address(start + i * 5)) for i in range(count)]


def _mixed(values: list[str], kind: str = "ipv4") -> list[dict[str, Any]]:
    """Entries of three provenances (sources, tags, confidence vary)."""
    return [
        entry(kind, v, [f"s{i % 3}", "all"] if i % 3 else ["s0"], tags=[f"t{i % 2}"],
              confidence=40 + i % 3)
        for i, v in enumerate(values)
    ]


def _json(raw: Any) -> Any:
    return orjson.loads(raw) if isinstance(raw, str) else raw


@pytest.fixture(autouse=True)
def _no_watchdog(app: Any, monkeypatch: Any) -> None:
    """The test publishes these runs, no dispatcher task: on a loaded box the watchdog
    would resolve them as orphans mid-publish."""

    async def none() -> list[int]:
        return []

    monkeypatch.setattr(AppState.of(app).dispatcher, "watchdog", none)


async def _rows(app: Any, pipeline_id: int) -> dict[tuple[str, str], tuple[Any, ...]]:
    """(type, value) → (last_seen, sources, tags, confidence, run_id, first_seen) as stored
    (a row rewritten by a publish gets that publish's last_seen)."""
    async with AppState.of(app).sessionmaker() as session:
        found = await session.execute(text(
            "SELECT indicator_type, value, last_seen, sources, tags, confidence, run_id, "
            "first_seen FROM indicators WHERE pipeline_id = :pid"), {"pid": pipeline_id})
        rows = {}
        for kind, value, last_seen, sources, tags, confidence, run_id, first_seen in found:
            rows[(kind, value)] = (last_seen, _json(sources), _json(tags), confidence, run_id,
                                   first_seen)
        return rows


def _expected(entries: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[Any, ...]]:
    return {(e["type"], e["value"]): (e["sources"], e["tags"], e["confidence"])
            for e in entries}


def _provenance(rows: dict[tuple[str, str], tuple[Any, ...]]) -> dict[Any, tuple[Any, ...]]:
    return {key: (row[1], row[2], row[3]) for key, row in rows.items()}


async def test_a_first_publish_stores_every_entry_with_its_own_provenance(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    t = await make_tenant(client, "bulk1", shrink=100)
    ips = _ips(3000)
    # Values the fast reader leaves to the slow one: a quote, a backslash, non-ASCII.
    urls = ['http://a.example/q="x"', "http://b.example/p\\q", "http://ü.example/", "http://c/"]
    names = ["a.example", "b.example"]
    # Sources whose JSON holds a backslash and a tab (escaped for PostgreSQL's COPY).
    odd = [entry("fqdn", "c.example", ["s\\1", "tab\there"], tags=['q"t'])]
    entries = _mixed(ips) + _mixed(urls, "url") + _mixed(names, "fqdn") + odd
    run = await publish(app, tmp_path, t.pipeline_id,
                        {"ipv4": ips, "url": urls, "fqdn": [*names, "c.example"]}, entries)
    assert run.errors == []
    summary = run.counts["indicators"]
    assert summary["method"] == "full"
    assert summary["ipv4"]["inserted"] == 3000
    assert summary["url"]["inserted"] == 4
    rows = await _rows(app, t.pipeline_id)
    assert _provenance(rows) == _expected(entries)
    assert all(row[4] is None for row in rows.values())  # present in the hosted feed
    r = await client.get(f"/profiles/{t.profile_id}/pipelines/search",
                         params={"indicator": ips[1]}, headers={"X-API-Key": t.key})
    assert r.json()["matches"][0]["sources"] == entries[1]["sources"], r.text


async def test_a_churn_publish_touches_only_the_changed_rows(
    app: Any, client: httpx.AsyncClient, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr(indicator_store, "BATCH_ROWS", 7)  # each change spans statements
    t = await make_tenant(client, "bulk2", shrink=100)
    first = _ips(5000)
    entries = _mixed(first)
    await publish(app, tmp_path, t.pipeline_id, {"ipv4": first}, entries)
    before = await _rows(app, t.pipeline_id)
    # 1 %: 50 gone, 50 new, 20 with another provenance
    second = first[50:] + _ips(50, offset=10_000)
    again = [dict(e) for e in entries[50:]] + _mixed(_ips(50, offset=10_000))
    for changed in again[:20]:
        changed["sources"] = ["moved"]
    run = await publish(app, tmp_path, t.pipeline_id, {"ipv4": second}, again)
    assert run.errors == []
    summary = run.counts["indicators"]
    assert summary["method"] == "delta"
    assert {k: summary["ipv4"][k] for k in ("inserted", "updated", "deleted")} == {
        "inserted": 50, "updated": 20, "deleted": 50}
    after = await _rows(app, t.pipeline_id)
    assert _provenance(after) == _expected(again)
    kept = [key for key in after if key in before]
    assert len(kept) == 4950
    # the same last_seen and first_seen: nothing rewritten
    assert all(after[key][0] == before[key][0] and after[key][5] == before[key][5]
               for key in kept)


@pytest.mark.parametrize("compact", [True, False], ids=["delta", "full"])
async def test_retention_and_a_rewrite_keep_vanished_rows(
    app: Any, client: httpx.AsyncClient, tmp_path: Path, compact: bool
) -> None:
    t = await make_tenant(client, f"bulk3{compact}", retain=3, shrink=100)
    first = _ips(2400)
    await publish(app, tmp_path, t.pipeline_id, {"ipv4": first}, _mixed(first),
                  compact=compact)
    before = await _rows(app, t.pipeline_id)
    # 2000 vanish (retained), 200 new: more than half the rows change
    second = first[:400] + _ips(200, offset=50_000)
    run = await publish(app, tmp_path, t.pipeline_id, {"ipv4": second}, _mixed(second),
                        compact=compact)
    assert run.errors == []
    after = await _rows(app, t.pipeline_id)
    assert len(after) == 2600
    gone = [("ipv4", v) for v in first[400:]]
    assert all(after[key][4] is not None for key in gone)  # retained: off the feed
    assert all(after[key][1:4] == before[key][1:4] for key in gone)
    assert all(after[("ipv4", v)][4] is None for v in second)
    if not compact:  # the full comparison rewrote the type
        assert run.counts["indicators"]["ipv4"]["rewritten"] is True
    assert _provenance({k: after[k] for k in after if k not in gone}) == _expected(
        _mixed(second))


async def test_a_churn_over_many_statements_updates_retires_and_deletes_the_right_rows(
    app: Any, client: httpx.AsyncClient, tmp_path: Path, monkeypatch: Any
) -> None:
    """Updates, retirements and deletes are set-based statements of BATCH_ROWS values
    (per provenance for updates): with batches of 7, each kind spans several."""
    monkeypatch.setattr(indicator_store, "BATCH_ROWS", 7)
    t = await make_tenant(client, "bulk6", retain=3, shrink=100)
    first = _ips(300)
    entries = _mixed(first)
    await publish(app, tmp_path, t.pipeline_id, {"ipv4": first}, entries)
    before = await _rows(app, t.pipeline_id)
    async with AppState.of(app).sessionmaker() as session:
        feed = await session.get(HostedFeed, (t.pipeline_id, "ipv4"))
        assert feed is not None
        first_run, first_time = feed.run_id, feed.updated_at
    # 60 vanish (retained), 40 new, 50 change provenance (two new ones)
    second = first[60:] + _ips(40, offset=10_000)
    again = [dict(e) for e in entries[60:]] + _mixed(_ips(40, offset=10_000))
    for i, changed in enumerate(again[:50]):
        changed["sources"], changed["confidence"] = [f"moved{i % 2}"], 90 + i % 2
    run = await publish(app, tmp_path, t.pipeline_id, {"ipv4": second}, again)
    assert run.errors == []
    summary = run.counts["indicators"]["ipv4"]
    assert {k: summary[k] for k in ("inserted", "updated", "retired", "rewritten")} == {
        "inserted": 40, "updated": 50, "retired": 60, "rewritten": False}
    after = await _rows(app, t.pipeline_id)
    assert len(after) == 340
    assert _provenance({k: v for k, v in after.items() if v[4] is None}) == _expected(again)
    async with AppState.of(app).sessionmaker() as session:
        retired = (await session.execute(select(Indicator).where(
            Indicator.pipeline_id == t.pipeline_id, Indicator.run_id.is_not(None)  # type: ignore[union-attr]
        ))).scalars().all()
    # off the feed: the replaced feed's run and time, their provenance and rows kept
    assert sorted(row.value for row in retired) == sorted(first[:60])
    assert all(row.run_id == first_run and row.last_seen == first_time for row in retired)
    assert all(after[("ipv4", v)][:4] == before[("ipv4", v)][:4] for v in first[:60])


def test_the_grouped_reader_matches_one_json_parse_per_line(monkeypatch: Any) -> None:
    """Fast lines, escaped values, another JSON form, blank lines, several types in one
    slice, and a repeated entry (the last wins), with slices far smaller than a line."""
    lines = [
        *(json.dumps(e, separators=(",", ":")) for e in _mixed(_ips(40))),
        json.dumps(entry("url", 'http://x/"q"', ["a"]), separators=(",", ":")),
        json.dumps(entry("fqdn", "é.example", ["b"])),  # spaced form, \\u escape
        "",
        json.dumps(entry("ipv4", _ips(1)[0], ["last"]), separators=(",", ":")),
        '{"type":"cidr","value":"10.0.0.0/8"}',
    ]
    raw = ("\n".join(lines) + "\n").encode()
    reference: dict[str, dict[str, Any]] = {}
    for line in lines:
        if line:
            e = json.loads(line)
            reference.setdefault(e["type"], {})[e["value"]] = (
                orjson.dumps(e.get("sources") or []).decode(),
                orjson.dumps(e.get("tags") or []).decode(), int(e.get("confidence", 50)))
    for size in (512 * 1024, 300, 1):
        monkeypatch.setattr(entries_reader, "PARSE_BYTES", size)
        assert entries_reader.read_provenance(raw) == reference


async def test_a_200k_write_leaves_the_loop_free(
    app: Any, client: httpx.AsyncClient, tmp_path: Path, monkeypatch: Any
) -> None:
    """The indicator store's step alone (plan, 200k grouped inserts, commit): a probe's
    worst lateness stays bounded (the write runs in the driver and worker threads)."""
    t = await make_tenant(client, "bulk5", shrink=100)
    values = _ips(200_000)
    run_id, out_dir, snapshot = await prepare_run(app, tmp_path, t.pipeline_id,
                                                  {"ipv4": values}, _mixed(values))
    worst = 0.0
    probing = False
    real = indexing.write_indicators

    async def probe() -> None:
        nonlocal worst
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.005)
            if probing:
                worst = max(worst, time.perf_counter() - started - 0.005)

    async def watched(*args: Any) -> None:
        nonlocal probing
        probing = True
        try:
            await real(*args)
        finally:
            probing = False

    monkeypatch.setattr("edl_api.feeds.publish.write_indicators", watched)
    task = asyncio.create_task(probe())
    try:
        outcome = await publish_prepared(app, run_id, out_dir, snapshot)
    finally:
        task.cancel()
    assert outcome.errors == []
    async with AppState.of(app).sessionmaker() as session:
        run = await session.get(PipelineRun, run_id)
        assert run is not None
        assert run.counts["indicators"]["ipv4"]["inserted"] == 200_000
    assert worst < 0.1, f"the indicator store write held the loop {worst * 1000:.0f} ms"


async def test_a_type_only_in_the_ip_feed_is_stored_with_its_provenance(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """outputs [ipv4, ip]: the IPv6 entries exist only in the combined feed; their rows
    come from the engine's entries as they are (no line of the ip feed classified), with
    their own provenance, and follow the next publish."""
    t = await make_tenant(client, "bulk7", shrink=100)
    v4 = _ips(300)
    v6 = [f"2001:db8::{i:x}" for i in range(1, 41)]
    entries = _mixed(v4) + _mixed(v6, kind="ipv6")
    await publish(app, tmp_path, t.pipeline_id, {"ipv4": v4, "ip": v4 + v6}, entries)
    rows = await _rows(app, t.pipeline_id)
    assert _provenance(rows) == _expected(entries)
    assert sum(1 for kind, _ in rows if kind == "ipv6") == 40
    # The next run drops 10 IPv6 entries and changes the provenance of 5 more.
    again = _mixed(v4) + [dict(e) for e in _mixed(v6[10:], kind="ipv6")]
    for changed in again[300:305]:
        changed["sources"] = ["moved"]
    run = await publish(app, tmp_path, t.pipeline_id, {"ipv4": v4, "ip": v4 + v6[10:]}, again)
    assert run.errors == []
    assert _provenance(await _rows(app, t.pipeline_id)) == _expected(again)
