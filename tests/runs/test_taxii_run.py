"""A TAXII 2.1 collection (OASIS medallion on loopback, Basic auth from a profile secret)
pulled through POST /runs twice by a real engine child: the second run asks with
`added_after` (the server's request log says so) and the feed still holds the earlier
entries, from the state the first run stored."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from edl_api.settings import Settings
from tests.conftest import make_settings
from tests.factories import create_config, create_pipeline, make_profile
from tests.helpers import h, run_to_end
from tests.medallion_server import COLLECTION_TITLE, READER_PASSWORD, indicator, medallion


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return make_settings(tmp_path, database_url, ssrf_allow_cidrs="127.0.0.0/8")


async def _feed(client: httpx.AsyncClient, pipeline_id: int, key: str) -> set[str]:
    served = await client.get(f"/pipelines/{pipeline_id}/edl/ipv4", headers=h(key))
    assert served.status_code == 200, served.text
    return set(served.text.split())


async def test_second_run_is_incremental_and_keeps_earlier_entries(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    profile_id, key = await make_profile(client, f"taxii-{time.time_ns()}")
    put = await client.put(f"/profiles/{profile_id}/secrets/TAXII_PASS",
                           json={"value": READER_PASSWORD}, headers=h(key))
    assert put.status_code == 204, put.text
    with medallion(tmp_path) as server:
        yaml = (
            "sources:\n"
            "  - name: vendor\n"
            f"    url: {server.root}\n"
            "    format: taxii\n"
            f"    collection: {COLLECTION_TITLE}\n"
            "    basic_auth: {username: reader, password: \"${secret:TAXII_PASS}\"}\n"
            "pipeline:\n"
            "  outputs: [ipv4, fqdn]\n"
        )
        config = await create_config(client, key, profile_id, "c", yaml)
        pipeline_id = (await create_pipeline(client, key, config["id"], "p"))["id"]

        first = await run_to_end(client, pipeline_id, key, persist=True)
        assert first["state"] == "succeeded", first
        assert first["counts"]["expired"] == 1  # 185.220.101.99: past its valid_until
        before = await _feed(client, pipeline_id, key)
        assert {"185.220.101.10", "185.220.101.7"} <= before
        assert "185.220.101.99" not in before

        server.add_objects([indicator(20, "[ipv4-addr:value = '185.220.101.20']")])
        mark = server.mark()
        second = await run_to_end(client, pipeline_id, key, persist=True)
        assert second["state"] == "succeeded", second
        pages = [line for line in server.requests()[mark:] if "/objects/" in line]
        assert pages
        assert all("added_after=" in unquote(line) for line in pages)
        after = await _feed(client, pipeline_id, key)
        assert after == before | {"185.220.101.20"}
