"""Diff two versions of a config, restore one, delete a config."""

from __future__ import annotations

import httpx

from tests.factories import MINIMAL_YAML, World, create_pipeline
from tests.helpers import expect, h

SECOND = "sources:\n  - name: other\n    values: [192.0.2.1]\n"


async def test_diff_and_restore(client: httpx.AsyncClient, world: World) -> None:
    a = world.a
    url = f"/profiles/{a.profile_id}/configs/{a.config_id}"
    await expect(await client.patch(
        url, json={"yaml": SECOND, "name": "renamed", "refresh_interval_minutes": 15},
        headers=h(a.profile_key),
    ))
    diff = await expect(await client.get(f"{url}/versions/1/diff/2", headers=h(a.reader_key)))
    assert (diff["from_version"], diff["to_version"]) == (1, 2)
    assert diff["diff"].startswith("--- version 1\n+++ version 2\n")
    assert "+  - name: other\n" in diff["diff"]
    assert diff["changes"] == {"name": ["cfg-a", "renamed"], "refresh_interval_minutes": [None, 15]}
    same = await expect(await client.get(f"{url}/versions/2/diff/2", headers=h(a.reader_key)))
    assert same["diff"] == ""
    assert same["changes"] == {}
    text = await client.get(f"{url}/versions/2/diff/1",
                            headers={**h(a.reader_key), "Accept": "text/plain"})
    assert text.headers["content-type"].startswith("text/plain")
    assert text.text.startswith("--- version 2\n+++ version 1\n")
    missing = await client.get(f"{url}/versions/1/diff/9", headers=h(a.reader_key))
    assert missing.status_code == 404

    restored = await expect(
        await client.post(f"{url}/versions/1/restore", headers=h(a.profile_key)), 201
    )
    assert restored["version"] == 3
    assert (restored["name"], restored["yaml"]) == ("cfg-a", MINIMAL_YAML)
    assert restored["refresh_interval_minutes"] is None
    assert restored["warnings"] == []
    versions = await expect(await client.get(f"{url}/versions", headers=h(a.reader_key)))
    assert [v["version"] for v in versions["items"]] == [3, 2, 1]  # history is kept
    again = await expect(await client.get(f"{url}/versions/1/diff/3", headers=h(a.reader_key)))
    assert again["diff"] == ""
    reader = await client.post(f"{url}/versions/1/restore", headers=h(a.reader_key))
    assert reader.status_code == 403
    foreign = f"/profiles/{world.b.profile_id}/configs/{world.b.config_id}"
    for response in (
        await client.post(f"{foreign}/versions/1/restore", headers=h(a.profile_key)),
        await client.get(f"{foreign}/versions/1/diff/1", headers=h(a.profile_key)),
    ):
        assert response.status_code == 404


async def test_restore_is_validated_again(client: httpx.AsyncClient, world: World) -> None:
    a = world.a
    secrets = f"/profiles/{a.profile_id}/secrets/TOKEN"
    stored = await client.put(secrets, json={"value": "s3cret"}, headers=h(a.profile_key))
    assert stored.status_code == 204
    with_secret = (
        "sources:\n  - name: feed\n    url: https://feeds.example/x.txt\n"
        "    headers: {Authorization: 'Bearer ${secret:TOKEN}'}\n"
    )
    url = f"/profiles/{a.profile_id}/configs/{a.config_id}"
    await expect(await client.put(url, json={"yaml": with_secret}, headers=h(a.profile_key)))
    await expect(await client.put(url, json={"yaml": SECOND}, headers=h(a.profile_key)))
    assert (await client.delete(secrets, headers=h(a.profile_key))).status_code == 204
    refused = await client.post(f"{url}/versions/2/restore", headers=h(a.profile_key))
    assert refused.status_code == 422
    assert "TOKEN" in refused.text
    current = await expect(await client.get(url, headers=h(a.profile_key)))
    assert current["version"] == 3


async def test_delete_config(client: httpx.AsyncClient, world: World) -> None:
    a = world.a
    url = f"/profiles/{a.profile_id}/configs/{a.config_id}"
    await create_pipeline(client, a.profile_key, a.config_id, "second")
    in_use = await client.delete(url, headers=h(a.profile_key))
    assert in_use.status_code == 409
    body = in_use.json()
    assert body["error"] == "config_in_use"
    assert [p["name"] for p in body["detail"]["pipelines"]] == ["pipe-a", "second"]
    assert "'pipe-a'" in body["detail"]["message"]
    assert "'second'" in body["detail"]["message"]
    assert (await client.get(url, headers=h(a.profile_key))).status_code == 200
    pipelines = await expect(await client.get(
        "/pipelines", params={"profile_id": a.profile_id}, headers=h(a.profile_key)
    ))
    for pipeline in pipelines["items"]:
        gone = await client.delete(f"/pipelines/{pipeline['id']}", headers=h(a.profile_key))
        assert gone.status_code == 200
    assert (await client.delete(url, headers=h(a.reader_key))).status_code == 403
    foreign = f"/profiles/{world.b.profile_id}/configs/{world.b.config_id}"
    assert (await client.delete(foreign, headers=h(a.profile_key))).status_code == 404
    assert (await client.delete(url, headers=h(a.profile_key))).status_code == 204
    assert (await client.get(url, headers=h(a.profile_key))).status_code == 404
    assert (await client.get(f"{url}/versions", headers=h(a.profile_key))).status_code == 404
    assert (await client.delete(url, headers=h(a.profile_key))).status_code == 404
    listed = await expect(await client.get(f"/profiles/{a.profile_id}/configs",
                                           headers=h(a.profile_key)))
    assert listed["items"] == []
    reuse = await client.post("/pipelines", json={"profile_config_id": a.config_id,
                                                  "name": "again"}, headers=h(a.profile_key))
    assert reuse.status_code == 404
    # The other tenant's config is untouched.
    assert (await client.get(foreign, headers=h(world.b.profile_key))).status_code == 200
