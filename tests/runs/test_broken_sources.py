"""End to end through the dispatcher: a broken upstream or a wrong feed URL gives the
operator a clear reason, and what firewalls are served stays byte for byte the same."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest

from edl_api.settings import Settings
from tests.conftest import make_settings
from tests.factories import create_config, create_pipeline, make_profile
from tests.helpers import answer, expect, h, loopback, query, run_to_end

GOOD_IPS = [f"9.9.9.{i}" for i in range(1, 11)]
BODIES = {
    "good": (b"id,ip\n" + b"".join(f"{i},{v}\n".encode() for i, v in enumerate(GOOD_IPS)),
             "text/csv"),
    # the upstream's session expired: its login page, with a 200
    "html": (b"<!DOCTYPE html>\n<html><body><form>Sign in</form></body></html>\n",
             "text/html; charset=utf-8"),
    # the upstream renamed its column
    "renamed": (b"id,address,first_seen\n1,9.9.9.1,2026-01-01\n", "text/csv"),
}


def _list(handler: BaseHTTPRequestHandler) -> bool:
    body, content_type = BODIES[query(handler, "mode", "good")]
    return answer(handler, 200, body, {"Content-Type": content_type})


@pytest.fixture(scope="module")
def upstream_port() -> Iterator[int]:
    with loopback(routes={"/list": _list}) as server:
        yield server.port


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return make_settings(tmp_path, database_url, ssrf_allow_cidrs="127.0.0.0/8")


def _yaml(port: int, mode: str) -> str:
    return (
        "sources:\n"
        "  - name: up\n"
        f"    url: http://127.0.0.1:{port}/list?mode={mode}\n"
        "    format: csv\n"
        "    column: ip\n"
        "pipeline:\n"
        "  outputs: [ipv4, ip]\n"
    )


async def test_broken_sources_and_wrong_urls_leave_the_feed_unchanged(
    client: httpx.AsyncClient, upstream_port: int
) -> None:
    profile_id, key = await make_profile(client, "a")
    config = await create_config(client, key, profile_id, "c", _yaml(upstream_port, "good"))
    pipeline_id = (await create_pipeline(client, key, config["id"], "p"))["id"]
    feed_url = f"/pipelines/{pipeline_id}/edl/ipv4"

    good = await run_to_end(client, pipeline_id, key, persist=True)
    assert good["state"] == "succeeded", good
    served = await client.get(feed_url, headers=h(key))
    assert served.text == "".join(f"{v}\n" for v in sorted(GOOD_IPS, key=_ip_order))

    async def unchanged() -> None:
        r = await client.get(feed_url, headers=h(key))
        assert r.content == served.content
        assert r.headers["etag"] == served.headers["etag"]
        assert r.headers["x-edl-run-id"] == str(good["id"])

    reasons = {
        "html": "source up: returned HTML, not a list",
        "renamed": "source up: column ip not in header: id, address, first_seen",
    }
    for mode, reason in reasons.items():
        await expect(await client.patch(f"/profiles/{profile_id}/configs/{config['id']}",
                                        json={"yaml": _yaml(upstream_port, mode)},
                                        headers=h(key)))
        run = await run_to_end(client, pipeline_id, key, persist=True)
        assert run["state"] == "failed", run
        assert run["errors"] == [reason]
        [source] = run["metadata"]["sources"]
        assert source["status"] == "failed"
        assert reason.endswith(source["error"])
        # a failed run published nothing, and says so
        assert run["counts"]["published"] == {"ipv4": 0, "ip": 0}
        assert run["artifacts"] == []
        await unchanged()

    # a feed type the pipeline does not output: the reason names its outputs
    r = await client.get(f"/pipelines/{pipeline_id}/edl/fqdn", headers=h(key))
    assert r.status_code == 404
    assert r.json() == {
        "error": "feed_type_not_published",
        "detail": f"pipeline {pipeline_id} does not publish a fqdn feed; its outputs: ipv4, ip",
    }
    await unchanged()


def _ip_order(value: str) -> tuple[int, ...]:
    return tuple(int(part) for part in value.split("."))


@pytest.mark.parametrize("mode", ["html", "renamed"])
async def test_a_broken_first_run_leaves_the_feed_not_ready(
    client: httpx.AsyncClient, upstream_port: int, mode: str
) -> None:
    """Before anything was published, a broken source leaves a 503, not an empty list."""
    profile_id, key = await make_profile(client, "a")
    config = await create_config(client, key, profile_id, "c", _yaml(upstream_port, mode))
    pipeline_id = (await create_pipeline(client, key, config["id"], "p"))["id"]
    run: dict[str, Any] = await run_to_end(client, pipeline_id, key, persist=True)
    assert run["state"] == "failed"
    r = await client.get(f"/pipelines/{pipeline_id}/edl/ipv4", headers=h(key))
    assert (r.status_code, r.json()["error"]) == (503, "feed_not_ready")
    assert r.headers["retry-after"] == "60"
