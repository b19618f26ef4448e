"""Two hosts: two `serve` processes with their own data and log folders on one PostgreSQL
read a run's log the same, whichever of them ran it (GET, tail and follow), and serve
a feed one of them published."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import pytest

from edl_api.feeds.cache import REFRESH_GRACE_SECONDS
from tests.conftest import SUPER_KEY
from tests.factories import make_pipeline, make_profile
from tests.helpers import clean_env, h, launch_run, running_server, slow_yaml, wait_run


def host_env(tmp_path: Path, name: str, database: str, **extra: str) -> dict[str, str]:
    """One host's environment: the shared database, its own data and log folders."""
    return clean_env(
        EDL_DATABASE_URL=database, EDL_API_KEY=SUPER_KEY, EDL_BCRYPT_ROUNDS="4",
        EDL_DATA_DIR=str(tmp_path / name / "data"), EDL_LOG_DIR=str(tmp_path / name / "logs"),
        EDL_AUTO_REFRESH_MINUTES="0", **extra,
    )


@pytest.mark.postgres
async def test_logs_read_the_same_from_both_hosts(
    tmp_path: Path, pg_database: str, upstream_port: int
) -> None:
    def host(name: str) -> dict[str, str]:
        return host_env(tmp_path, name, pg_database, EDL_SSRF_ALLOW_CIDRS="127.0.0.0/8")

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with running_server(host("a"), tmp_path / "a") as (server_a, base_a), \
            running_server(host("b"), tmp_path / "b") as (server_b, base_b):
        async with httpx.AsyncClient(base_url=base_a, timeout=10) as a, \
                httpx.AsyncClient(base_url=base_b, timeout=10) as b:
            # The hosts share a database other tests use too: profile names are unique.
            profile_id, _ = await make_profile(a, f"tenant-{uuid.uuid4().hex[:8]}")
            pipeline_id = await make_pipeline(a, profile_id, slow_yaml(upstream_port, 1.0))
            created = await launch_run(a, pipeline_id)
            run_id = created["id"]
            # Follow from both hosts while it runs: one of them is not running it.
            followed = {}
            for name, client in (("a", a), ("b", b)):
                async with client.stream("GET", f"/runs/{run_id}/logs?follow=true",
                                         headers=h()) as response:
                    assert response.status_code == 200
                    followed[name] = "".join([c async for c in response.aiter_text()])
            run = await wait_run(b, run_id, "succeeded", timeout=15)
            whole = {n: (await c.get(f"/runs/{run_id}/logs", headers=h())).text
                     for n, c in (("a", a), ("b", b))}
            tails = {n: (await c.get(f"/runs/{run_id}/logs?tail=2", headers=h())).text
                     for n, c in (("a", a), ("b", b))}
    ran_on = "a" if f":{server_a.pid}:" in run["worker"] else "b"
    assert f":{(server_a if ran_on == 'a' else server_b).pid}:" in run["worker"]
    other = "b" if ran_on == "a" else "a"
    assert not (tmp_path / other / "logs" / "runs" / f"run-{run_id}.log").exists()
    assert whole["a"] == whole["b"]
    assert "engine started" in whole["a"]
    assert "source slow: ok" in whole["a"]
    assert whole["a"].endswith(" dispatcher: succeeded\n")
    assert tails["a"] == tails["b"]
    assert tails["a"].count("\n") == 2
    # The first follow began while the run ran; the second may start after it ended.
    assert followed[other].endswith(" dispatcher: succeeded\n")
    assert followed["a"] == whole["a"]
    assert followed["b"] == whole["b"]


@pytest.mark.postgres
async def test_a_publish_on_one_host_is_served_by_the_other_within_its_pointer_ttl(
    tmp_path: Path, pg_database: str
) -> None:
    """Host B has the feed cached and answers its polls from memory (`edl-api serve`'s
    protocol path); host A publishes a new version. B's pointer expires after its TTL, the
    next poll re-reads it through the route, and B serves the new version: a fleet polling
    either host gets what was published, within TTL + the refresh grace."""
    ttl = 0.5

    def host(name: str) -> dict[str, str]:
        (tmp_path / name).mkdir()
        return host_env(tmp_path, name, pg_database, EDL_FEED_POINTER_TTL_SECONDS=str(ttl))

    values = "sources:\n  - {{name: x, values: [{}]}}\n".format
    with running_server(host("a"), tmp_path / "a") as (_, base_a), \
            running_server(host("b"), tmp_path / "b") as (_, base_b):
        async with httpx.AsyncClient(base_url=base_a, timeout=10) as a, \
                httpx.AsyncClient(base_url=base_b, timeout=10) as b:
            profile_id, _ = await make_profile(a, f"tenant-{uuid.uuid4().hex[:8]}")
            pipeline_id = await make_pipeline(a, profile_id, values("9.9.9.1"))
            await wait_run(a, (await launch_run(a, pipeline_id, persist=True))["id"],
                           "succeeded")
            feed = f"/pipelines/{pipeline_id}/edl/ipv4"
            old = {}
            for name, client in (("a", a), ("b", b)):
                first = await client.get(feed, headers=h())
                assert first.text == "9.9.9.1\n", (name, first.text)
                old[name] = first.headers["etag"]
                # cached now: answered from memory
                again = await client.get(feed, headers=h() | {"If-None-Match": old[name]})
                assert again.status_code == 304
            config_id = (await a.get(f"/pipelines/{pipeline_id}", headers=h())).json()[
                "profile_config_id"]
            patched = await a.patch(f"/profiles/{profile_id}/configs/{config_id}",
                                    json={"yaml": values("9.9.9.2")}, headers=h())
            assert patched.status_code == 200, patched.text
            await wait_run(a, (await launch_run(a, pipeline_id, persist=True))["id"],
                           "succeeded")
            published = time.monotonic()
            served: dict[str, float] = {}
            bound = ttl + REFRESH_GRACE_SECONDS
            while len(served) < 2 and time.monotonic() - published < bound + 3.0:
                for name, client in (("a", a), ("b", b)):
                    if name in served:
                        continue
                    r = await client.get(feed, headers=h() | {"If-None-Match": old[name]})
                    if r.status_code == 200:
                        assert r.text == "9.9.9.2\n", (name, r.text)
                        served[name] = time.monotonic() - published
                await asyncio.sleep(0.05)
    # the run's own host drops its pointer when it commits; the other re-reads it
    assert set(served) == {"a", "b"}, served
    assert max(served.values()) < bound + 1.0, served
