"""End to end through the dispatcher: no failure mode ever changes what is served."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest

from edl_api.settings import Settings
from tests.conftest import asgi_client, make_settings, running_app
from tests.factories import create_config, create_pipeline, make_profile
from tests.helpers import answer, expect, h, launch_run, loopback, query, run_to_end, wait_run

GOOD = b"".join(f"9.9.9.{i}\n".encode() for i in range(1, 11))


def _feed(handler: BaseHTTPRequestHandler) -> bool:
    """/feed?mode=ok|500|slow|empty|truncated: the ways an upstream lets a run down."""
    mode = query(handler, "mode", "ok")
    if mode == "500":
        return answer(handler, 500)
    if mode == "slow":
        time.sleep(20)
    if mode == "truncated":
        handler.close_connection = True  # promises all of GOOD, sends 15 bytes
        return answer(handler, 200, GOOD[:15], length=len(GOOD))
    return answer(handler, 200, b"" if mode == "empty" else GOOD)


@pytest.fixture(scope="module")
def upstream_port() -> Iterator[int]:
    with loopback(routes={"/feed": _feed}) as server:
        yield server.port


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return make_settings(tmp_path, database_url, ssrf_allow_cidrs="127.0.0.0/8")


def _yaml(port: int, mode: str) -> str:
    return (
        "sources:\n"
        "  - name: up\n"
        f"    url: http://127.0.0.1:{port}/feed?mode={mode}\n"
        "    timeout_seconds: 30\n"
        "pipeline:\n"
        "  outputs: [ipv4]\n"
    )


async def _pipeline_on_upstream(
    client: httpx.AsyncClient, port: int, mode: str
) -> tuple[int, str, Any, int]:
    """A profile (its key), a config whose one source is the stub upstream in `mode`, and
    a pipeline on it: (profile id, key, config, pipeline id)."""
    profile_id, key = await make_profile(client, "a")
    config = await create_config(client, key, profile_id, "c", _yaml(port, mode))
    pipeline = await create_pipeline(client, key, config["id"], "p")
    return profile_id, key, config, pipeline["id"]


async def test_every_failure_mode_keeps_the_last_good_feed(
    client: httpx.AsyncClient, upstream_port: int
) -> None:
    profile_id, key, config, pipeline_id = await _pipeline_on_upstream(
        client, upstream_port, "ok"
    )
    feed_url = f"/pipelines/{pipeline_id}/edl/ipv4"

    good = await run_to_end(client, pipeline_id, key, persist=True)
    assert good["state"] == "succeeded", good
    served = await client.get(feed_url, headers=h(key))
    assert served.content == GOOD
    assert served.headers["x-edl-run-id"] == str(good["id"])

    async def set_mode(mode: str) -> None:
        await expect(await client.patch(f"/profiles/{profile_id}/configs/{config['id']}",
                                        json={"yaml": _yaml(upstream_port, mode)}, headers=h(key)))

    async def unchanged() -> None:
        r = await client.get(feed_url, headers=h(key))
        assert r.content == GOOD
        assert r.headers["etag"] == served.headers["etag"]
        assert r.headers["x-edl-run-id"] == str(good["id"])

    outcomes = {}
    for mode in ("500", "truncated", "empty"):
        await set_mode(mode)
        run = await run_to_end(client, pipeline_id, key, persist=True)
        outcomes[mode] = run["state"]
        if run["state"] == "succeeded":  # held by the guard, with the reason recorded
            assert all(not a["published"] for a in run["artifacts"]), run
            assert "empty" in run["counts"]["feeds"]["ipv4"]["reason"]
            # and the run's errors say so: no need to dig through counts
            assert any(e.startswith("ipv4 feed not published: guard:") for e in run["errors"])
        await unchanged()
    assert outcomes["500"] == "failed"
    assert outcomes["truncated"] == "failed"
    # an empty upstream either fails the source or is held by the guard
    assert outcomes["empty"] in ("failed", "succeeded")

    await set_mode("slow")
    slow = await launch_run(client, pipeline_id, key, persist=True, timeout_seconds=1)
    run = await wait_run(client, slow["id"], key=key)
    assert run["state"] == "timed_out"
    await unchanged()

    run = await launch_run(client, pipeline_id, key, persist=True)
    await asyncio.sleep(0.5)
    await expect(await client.post(f"/runs/{run['id']}/cancel", headers=h(key)), 202)
    assert (await wait_run(client, run["id"], key=key))["state"] == "cancelled"
    await unchanged()

    # a shrink past the guard holds too (10 → 1 entry is -90 %)
    await expect(await client.patch(
        f"/profiles/{profile_id}/configs/{config['id']}",
        json={"yaml": _yaml(upstream_port, "ok").replace(
            f"url: http://127.0.0.1:{upstream_port}/feed?mode=ok",
            "values: [9.9.9.1]")}, headers=h(key),
    ))
    run = await run_to_end(client, pipeline_id, key, persist=True)
    assert run["state"] == "succeeded"
    [artifact] = [a for a in run["artifacts"] if a["indicator_type"] == "ipv4"]
    assert artifact["published"] is False
    await unchanged()


async def test_a_run_without_a_timeout_gets_the_default_one(
    tmp_path: Path, database_url: str | None, upstream_port: int
) -> None:
    """A hung source must not hold a run slot forever: EDL_RUN_TIMEOUT_SECONDS applies."""
    settings = make_settings(tmp_path, database_url, ssrf_allow_cidrs="127.0.0.0/8",
                             run_timeout_seconds=1)
    async with running_app(settings) as app:
        async with asgi_client(app) as client:
            _, key, _, pipeline_id = await _pipeline_on_upstream(
                client, upstream_port, "slow"
            )
            started = time.monotonic()
            run = await run_to_end(client, pipeline_id, key, persist=True)
            assert run["state"] == "timed_out", run
            assert "timed out after 1 s" in run["errors"]
            assert time.monotonic() - started < 15  # not the source's 20 s stall
