"""A collection's objects are built once per published feed version, however many TIPs ask
at once; a new version is built again (in-process, through the ASGI app)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from edl_api.taxii import views
from edl_api.taxii.service import collection_id
from tests.factories import create_config, create_pipeline, make_profile
from tests.helpers import basic, run_to_end

TAXII = "application/taxii+json;version=2.1"


async def test_parallel_first_requests_build_one_view(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds: list[int] = []
    real = views.build_view

    def counted(entries: Any, published: Any) -> views.CollectionView:
        builds.append(len(entries))
        return real(entries, published)

    monkeypatch.setattr(views, "build_view", counted)
    profile_id, key = await make_profile(client, "taxii-once")
    yaml = "sources:\n  - name: s\n    values: [45.33.32.7, 45.33.32.8]\n"
    config = await create_config(client, key, profile_id, "taxii-once", yaml)
    pipeline = await create_pipeline(client, key, config["id"], "taxii-once")
    assert (await run_to_end(client, pipeline["id"], key, persist=True))["state"] == "succeeded"
    url = (f"/taxii2/{profile_id}/collections/{collection_id(pipeline['id'], 'ipv4')}"
           "/objects/")
    headers = {**basic(key), "Accept": TAXII}

    answers = await asyncio.gather(*(client.get(url, headers=headers) for _ in range(5)))
    assert [a.status_code for a in answers] == [200] * 5
    assert {len(a.json()["objects"]) for a in answers} == {2}
    assert (await client.get(url, headers=headers)).status_code == 200
    assert builds == [2]

    await client.put(f"/profiles/{profile_id}/configs/{config['id']}",
                     json={"yaml": yaml.replace("45.33.32.8", "45.33.32.9, 45.33.32.10")},
                     headers={"X-API-Key": key})
    assert (await run_to_end(client, pipeline["id"], key, persist=True))["state"] == "succeeded"
    again = await client.get(url, headers=headers)
    assert len(again.json()["objects"]) == 3
    assert builds == [2, 3]
