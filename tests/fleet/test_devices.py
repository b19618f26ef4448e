"""Devices through the API: create (token shown once, feed URLs), read, change, rotate,
delete; who may do what; the feed-token alias over devices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from edl_api.state import AppState
from tests.conftest import READER_LEGACY_KEY, SUPER_KEY
from tests.factories import create_pipeline
from tests.feeds.conftest import make_tenant, publish
from tests.helpers import basic, expect, h


def panos(pipeline_id: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": "pa-edge-01", "vendor": "panos", "model": "PA-3260",
        "feeds": [{"pipeline_id": pipeline_id, "indicator_type": "ipv4", "format": "panos",
                   "priority": 10}],
        "expected_poll_minutes": 5, **extra,
    }


async def test_device_lifecycle(app: Any, client: httpx.AsyncClient, tmp_path: Path) -> None:
    a = await make_tenant(client, "a")
    await publish(app, tmp_path, a.pipeline_id, {"ipv4": ["192.0.2.1", "192.0.2.2"]})
    base = f"/profiles/{a.profile_id}/devices"
    made = await expect(await client.post(base, json=panos(a.pipeline_id), headers=h(a.key)), 201)
    token = made["token"]
    assert token.startswith("edlf_")
    assert made["vendor"] == "panos"
    assert made["family"] != "default"  # PA-3260 is in the vendor table
    assert made["limits"]["ip"] is not None
    (feed,) = made["feeds"]
    assert feed["url"] == f"http://edl.test/pipelines/{a.pipeline_id}/edl/ipv4?format=panos"
    assert made["stale"] is False  # just made: not expected to have polled yet
    # The URL as given, with the token as the Basic password, is the list.
    r = await client.get(feed["url"], headers=basic(token))
    assert r.status_code == 200, r.text
    assert r.text.split() == ["192.0.2.1", "192.0.2.2"]

    one = await expect(await client.get(f"{base}/{made['id']}", headers=h(a.key)))
    assert "token" not in one
    assert "key_hash" not in one
    assert "key_id" not in one
    listed = await expect(await client.get(base, headers=h(a.key)))
    assert [d["id"] for d in listed["items"]] == [made["id"]]
    assert listed["total"] == 1

    # A change of limits takes effect for the device's very next poll.
    changed = await expect(await client.patch(
        f"{base}/{made['id']}", json={"limits": {"ip": 1}, "name": "pa-edge-1"},
        headers=h(a.key),
    ))
    assert changed["name"] == "pa-edge-1"
    assert changed["limits"]["ip"] == 1
    assert changed["model"] == "PA-3260"  # untouched fields stay

    # Rotation: the old credential answers 401 at once, the new one reads.
    rotated = await expect(await client.post(f"{base}/{made['id']}/token", headers=h(a.key)), 201)
    assert rotated["token"] != token
    assert (await client.get(feed["url"], headers=basic(token))).status_code == 401
    assert (await client.get(feed["url"], headers=basic(rotated["token"]))).status_code == 200

    # Delete revokes: 401 at once; the device stays readable with include_revoked.
    gone = await expect(await client.delete(f"{base}/{made['id']}", headers=h(a.key)))
    assert gone["revoked_at"] is not None
    assert (await client.get(feed["url"], headers=basic(rotated["token"]))).status_code == 401
    assert (await expect(await client.get(base, headers=h(a.key))))["total"] == 0
    kept = await expect(await client.get(base, params={"include_revoked": "true"},
                                         headers=h(a.key)))
    assert kept["total"] == 1
    r = await client.patch(f"{base}/{made['id']}", json={"name": "x"}, headers=h(a.key))
    assert r.status_code == 409
    assert r.json()["error"] == "device_revoked"
    r = await client.post(f"{base}/{made['id']}/token", headers=h(a.key))
    assert r.status_code == 409


async def test_device_rules(app: Any, client: httpx.AsyncClient) -> None:
    a = await make_tenant(client, "a")
    b = await make_tenant(client, "b")
    base = f"/profiles/{a.profile_id}/devices"

    async def refused(body: dict[str, Any], code: str) -> str:
        r = await client.post(base, json=body, headers=h(a.key))
        assert r.status_code == 422, r.text
        assert r.json()["error"] == code, r.text
        return str(r.json()["detail"])

    # A firewall lists what it reads: there is nothing to budget otherwise.
    detail = await refused({"name": "fw", "vendor": "panos"}, "device_feeds_required")
    assert "feeds" in detail
    await refused({"name": "fw", "limits": {"ip": 10}}, "device_feeds_required")
    # Another profile's pipeline is not one of this profile's.
    await refused(panos(b.pipeline_id), "unknown_pipeline")
    twice = panos(a.pipeline_id)
    twice["feeds"] = twice["feeds"] * 2
    await refused(twice, "duplicate_feed")
    r = await client.post(base, json={**panos(a.pipeline_id), "vendor": "juniper"},
                          headers=h(a.key))
    assert r.status_code == 422
    bad = panos(a.pipeline_id)
    bad["feeds"][0]["format"] = "nope"
    assert (await client.post(base, json=bad, headers=h(a.key))).status_code == 422
    bad["feeds"][0] = {"pipeline_id": a.pipeline_id, "indicator_type": "email"}
    assert (await client.post(base, json=bad, headers=h(a.key))).status_code == 422

    # A generic consumer may read unbudgeted, like the old feed tokens.
    generic = await expect(await client.post(base, json={"name": "siem"}, headers=h(a.key)), 201)
    assert generic["feeds"] == []
    assert generic["vendor"] == "generic"

    # Another tenant's devices are a 404 identical to a missing one; its writes too.
    made = await expect(await client.post(base, json=panos(a.pipeline_id), headers=h(a.key)), 201)
    missing = await client.get(f"{base}/999999", headers=h(a.key))
    for method, url in (("GET", f"{base}/{made['id']}"), ("PATCH", f"{base}/{made['id']}"),
                        ("DELETE", f"{base}/{made['id']}"),
                        ("POST", f"{base}/{made['id']}/token"), ("GET", base)):
        r = await client.request(method, url, json={} if method == "PATCH" else None,
                                 headers=h(b.key))
        assert r.status_code == 404, (method, url, r.text)
        assert r.json() == missing.json()
    wrong_profile = await client.get(
        f"/profiles/{b.profile_id}/devices/{made['id']}", headers=h(b.key)
    )
    assert wrong_profile.status_code == 404
    assert wrong_profile.json() == missing.json()

    # Readers read devices and may not change them; a device credential reads feeds only.
    assert (await client.get(base, headers=h(READER_LEGACY_KEY))).status_code == 200
    r = await client.post(base, json=panos(a.pipeline_id), headers=h(READER_LEGACY_KEY))
    assert r.status_code == 403
    assert (await client.get(base, headers=h(made["token"]))).status_code == 403

    # Idempotency: a replay returns the same device without the token.
    key = {"Idempotency-Key": "dev-1", **h(a.key)}
    first = await expect(await client.post(base, json=panos(a.pipeline_id), headers=key), 201)
    again = await expect(await client.post(base, json=panos(a.pipeline_id), headers=key), 201)
    assert again["id"] == first["id"]
    assert first["token"]
    assert again["token"] is None


async def test_feed_tokens_are_devices(app: Any, client: httpx.AsyncClient, tmp_path: Path) -> None:
    a = await make_tenant(client, "a")
    second = (await create_pipeline(client, a.key, a.config_id, "second"))["id"]
    await publish(app, tmp_path, a.pipeline_id, {"ipv4": ["192.0.2.1"]})
    token = await expect(await client.post(
        f"/profiles/{a.profile_id}/feed-tokens", json={"name": "old-fw",
                                                      "pipeline_ids": [a.pipeline_id]},
        headers=h(a.key),
    ), 201)
    device = await expect(await client.get(
        f"/profiles/{a.profile_id}/devices/{token['id']}", headers=h(a.key)
    ))
    assert device["vendor"] == "generic"
    assert device["name"] == "old-fw"
    assert device["pipeline_ids"] == [a.pipeline_id]
    # A device made on the new route is listed on the old one, its scope its feeds.
    made = await expect(await client.post(
        f"/profiles/{a.profile_id}/devices", json=panos(second), headers=h(a.key)
    ), 201)
    tokens = await expect(await client.get(f"/profiles/{a.profile_id}/feed-tokens",
                                           headers=h(a.key)))
    assert {t["id"]: t["pipeline_ids"] for t in tokens["items"]} == {
        token["id"]: [a.pipeline_id], made["id"]: [second]
    }
    r = await client.get(f"/pipelines/{a.pipeline_id}/edl/ipv4", headers=basic(token["token"]))
    assert r.status_code == 200
    assert r.text == "192.0.2.1\n"
    await expect(await client.delete(f"/profiles/{a.profile_id}/feed-tokens/{made['id']}",
                                     headers=h(a.key)))
    shown = await expect(await client.get(
        f"/profiles/{a.profile_id}/devices/{made['id']}", headers=h(a.key)
    ))
    assert shown["revoked_at"] is not None


async def test_public_url_names_the_feed_urls(app: Any, client: httpx.AsyncClient) -> None:
    AppState.of(app).settings.public_url = "https://edl.example.net/"
    a = await make_tenant(client, "a")
    made = await expect(await client.post(
        f"/profiles/{a.profile_id}/devices", json=panos(a.pipeline_id), headers=h(SUPER_KEY)
    ), 201)
    assert made["feeds"][0]["url"] == (
        f"https://edl.example.net/pipelines/{a.pipeline_id}/edl/ipv4?format=panos"
    )


async def test_a_deleted_profiles_devices_are_missing(client: httpx.AsyncClient) -> None:
    """After `DELETE /profiles/{id}?force=true` its devices answer 404 to every caller, the
    super-admin too, like everything else of a deleted profile (and no new one is made)."""
    a = await make_tenant(client, "a")
    base = f"/profiles/{a.profile_id}/devices"
    made = await expect(await client.post(base, json=panos(a.pipeline_id), headers=h(a.key)), 201)
    await expect(await client.delete(f"/profiles/{a.profile_id}", params={"force": "true"},
                                     headers=h(SUPER_KEY)))
    tokens = f"/profiles/{a.profile_id}/feed-tokens"
    for method, url, body in (
        ("GET", base, None), ("GET", f"{base}/{made['id']}", None),
        ("GET", f"{base}/{made['id']}/polls", None), ("POST", base, {"name": "new"}),
        ("GET", tokens, None), ("POST", tokens, {"name": "new"}),
    ):
        r = await client.request(method, url, headers=h(SUPER_KEY), json=body)
        assert r.status_code == 404, (method, url, r.text)
