"""Two-tenant isolation: a foreign id is indistinguishable from a missing one.

The table below has one entry per route that takes an id (in its path, its query or its
body), read from `app.routes`: a new route with an id fails `test_every_id_route_is_in_the_table`
until it says how to call it here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from edl_api.app import create_app
from edl_api.settings import Settings
from edl_api.taxii.service import collection_id
from tests.factories import MINIMAL_YAML, Tenant, World
from tests.helpers import api_routes, basic, expect, h, run_to_end

MISSING = 987654
Ids = dict[str, Any]
Fill = Callable[[Ids, Ids], Any]


@dataclass(frozen=True)
class Call:
    """One way to call a route: path ids come from the ids under test (tenant B's, or ids
    that exist nowhere) except those in `own`, taken from the caller's tenant; `query` and
    `body` are built from (ids under test, caller's ids). `echoes`: the error repeats this
    id as sent (the caller's own input, so no leak)."""

    query: Fill | None = None
    body: Fill | None = None
    own: frozenset[str] = field(default_factory=frozenset)
    echoes: str | None = None


PROFILE, PIPELINE = frozenset({"profile_id"}), frozenset({"pipeline_id"})
NAMED = Call(body=lambda t, a: {"name": "renamed"})
DEVICE = frozenset({"profile_id", "device_id"})


def _firewall(pipeline_id: int) -> dict[str, Any]:
    return {"name": "stolen", "vendor": "panos",
            "feeds": [{"pipeline_id": pipeline_id, "indicator_type": "ipv4"}]}

TABLE: dict[tuple[str, str], tuple[Call, ...]] = {
    # super-only: 403 to every tenant caller, whatever the id
    ("DELETE", "/admin/accounts/{account_id}"): (Call(),),
    ("POST", "/admin/accounts/{account_id}/profiles/{profile_id}"): (
        Call(), Call(own=frozenset({"account_id"})),
    ),
    ("DELETE", "/admin/accounts/{account_id}/profiles/{profile_id}"): (Call(),),
    ("POST", "/profiles"): (
        Call(query=lambda t, a: {"owner_admin_id": t["account_id"]},
             body=lambda t, a: {"name": "stolen"}),
    ),
    # profiles and configs
    ("GET", "/profiles/{profile_id}"): (Call(),),
    ("DELETE", "/profiles/{profile_id}"): (Call(), Call(query=lambda t, a: {"force": "true"})),
    ("POST", "/profiles/{profile_id}/configs"): (
        Call(body=lambda t, a: {"name": "x", "yaml": MINIMAL_YAML}),
    ),
    ("GET", "/profiles/{profile_id}/configs"): (Call(),),
    # a profile's reach: its SSRF grants (super-only) and its secrets
    ("PATCH", "/profiles/{profile_id}"): (
        Call(body=lambda t, a: {"ssrf_allow_cidrs": ["10.0.0.0/8"]}),
    ),
    ("PUT", "/profiles/{profile_id}/secrets/{name}"): (Call(body=lambda t, a: {"value": "v"}),),
    ("GET", "/profiles/{profile_id}/secrets"): (Call(),),
    ("DELETE", "/profiles/{profile_id}/secrets/{name}"): (Call(),),
    # the profile key's rotation and revocation
    ("POST", "/profiles/{profile_id}/key"): (Call(),),
    ("DELETE", "/profiles/{profile_id}/key"): (Call(),),
    ("GET", "/profiles/{profile_id}/configs/{config_id}"): (Call(), Call(own=PROFILE)),
    ("PATCH", "/profiles/{profile_id}/configs/{config_id}"): (
        NAMED, Call(body=NAMED.body, own=PROFILE),
    ),
    ("GET", "/profiles/{profile_id}/configs/{config_id}/versions"): (Call(), Call(own=PROFILE)),
    ("GET", "/profiles/{profile_id}/configs/{config_id}/versions/{version}"): (
        Call(), Call(own=PROFILE),
    ),
    ("PUT", "/profiles/{profile_id}/configs/{config_id}"): (
        Call(body=lambda t, a: {"yaml": MINIMAL_YAML}),
        Call(body=lambda t, a: {"yaml": MINIMAL_YAML}, own=PROFILE),
    ),
    ("DELETE", "/profiles/{profile_id}/configs/{config_id}"): (Call(), Call(own=PROFILE)),
    ("GET", "/profiles/{profile_id}/configs/{config_id}/versions/{a}/diff/{b}"): (
        Call(), Call(own=PROFILE),
    ),
    ("POST", "/profiles/{profile_id}/configs/{config_id}/versions/{version}/restore"): (
        Call(), Call(own=PROFILE),
    ),
    # pipelines
    ("POST", "/pipelines"): (
        Call(body=lambda t, a: {"profile_config_id": t["config_id"], "name": "stolen"}),
    ),
    ("GET", "/pipelines"): (
        Call(query=lambda t, a: {"profile_id": t["profile_id"]}),
        Call(query=lambda t, a: {"profile_config_id": t["config_id"]}),
    ),
    ("GET", "/profiles/{profile_id}/pipelines"): (
        Call(), Call(query=lambda t, a: {"profile_config_id": t["config_id"]}, own=PROFILE),
    ),
    ("GET", "/pipelines/{pipeline_id}"): (Call(),),
    ("PATCH", "/pipelines/{pipeline_id}"): (NAMED,),
    ("PATCH", "/pipelines/{pipeline_id}/config"): (
        Call(body=lambda t, a: {"profile_config_id": t["config_id"]}),
        # the caller's own pipeline bound to a foreign config
        Call(body=lambda t, a: {"profile_config_id": t["config_id"]}, own=PIPELINE),
    ),
    ("DELETE", "/pipelines/{pipeline_id}"): (Call(),),
    ("GET", "/profiles/{profile_id}/pipelines/active"): (Call(),),
    ("GET", "/profiles/{profile_id}/pipelines/search"): (
        Call(query=lambda t, a: {"indicator": "203.0.113.7"}),
    ),
    ("GET", "/profiles/{profile_id}/explain"): (
        Call(query=lambda t, a: {"indicator": "203.0.113.7"}),
        # the caller's own profile, another's pipeline: the same 404 as a missing one
        Call(query=lambda t, a: {"indicator": "203.0.113.7", "pipeline_id": t["pipeline_id"]},
             own=PROFILE),
    ),
    # runs, their logs and artifacts
    ("POST", "/runs"): (Call(body=lambda t, a: {"pipeline_id": t["pipeline_id"]}),),
    ("GET", "/runs"): (
        Call(query=lambda t, a: {"pipeline_id": t["pipeline_id"]}),
        Call(query=lambda t, a: {"profile_id": t["profile_id"]}),
    ),
    ("GET", "/runs/{run_id}"): (Call(),),
    ("POST", "/runs/{run_id}/cancel"): (Call(),),
    ("GET", "/runs/{run_id}/logs"): (Call(),),
    ("GET", "/runs/{run_id}/artifacts/{indicator_type}"): (Call(),),
    ("HEAD", "/runs/{run_id}/artifacts/{indicator_type}"): (Call(),),
    ("GET", "/jobs"): (Call(query=lambda t, a: {"profile_id": t["profile_id"]}),),
    # hosted feeds and feed tokens
    # TAXII 2.1: B's API root, B's collection under A's root (a collection id names a
    # pipeline's feed)
    ("GET", "/taxii2/{profile_id}/"): (Call(),),
    ("GET", "/taxii2/{profile_id}/collections/"): (Call(),),
    ("GET", "/taxii2/{profile_id}/collections/{collection_id}/"): (Call(), Call(own=PROFILE)),
    ("GET", "/taxii2/{profile_id}/collections/{collection_id}/objects/"): (
        Call(), Call(own=PROFILE),
    ),
    ("GET", "/taxii2/{profile_id}/collections/{collection_id}/manifest/"): (
        Call(), Call(own=PROFILE),
    ),
    ("GET", "/pipelines/{pipeline_id}/edl/{indicator_type}"): (Call(),),
    ("HEAD", "/pipelines/{pipeline_id}/edl/{indicator_type}"): (Call(),),
    ("GET", "/edl/{indicator_type}"): (Call(query=lambda t, a: {"profile_id": t["profile_id"]}),),
    ("HEAD", "/edl/{indicator_type}"): (Call(query=lambda t, a: {"profile_id": t["profile_id"]}),),
    ("GET", "/pipelines/{pipeline_id}/edl/{indicator_type}.md5"): (Call(),),
    ("HEAD", "/pipelines/{pipeline_id}/edl/{indicator_type}.md5"): (Call(),),
    ("GET", "/edl/{indicator_type}.md5"): (
        Call(query=lambda t, a: {"profile_id": t["profile_id"]}),
    ),
    ("HEAD", "/edl/{indicator_type}.md5"): (
        Call(query=lambda t, a: {"profile_id": t["profile_id"]}),
    ),
    ("POST", "/profiles/{profile_id}/feed-tokens"): (
        Call(body=lambda t, a: {"name": "stolen"}),
        Call(body=lambda t, a: {"name": "stolen", "pipeline_ids": [t["pipeline_id"]]},
             own=PROFILE, echoes="pipeline_id"),
    ),
    ("GET", "/profiles/{profile_id}/feed-tokens"): (Call(),),
    ("DELETE", "/profiles/{profile_id}/feed-tokens/{token_id}"): (Call(), Call(own=PROFILE)),
    # devices (a feed token is a device: the same ids) and their polls
    ("POST", "/profiles/{profile_id}/devices"): (
        Call(body=lambda t, a: {"name": "stolen"}),
        Call(body=lambda t, a: _firewall(t["pipeline_id"]), own=PROFILE, echoes="pipeline_id"),
    ),
    ("GET", "/profiles/{profile_id}/devices"): (Call(),),
    ("GET", "/profiles/{profile_id}/devices/{device_id}"): (Call(), Call(own=PROFILE)),
    ("PATCH", "/profiles/{profile_id}/devices/{device_id}"): (
        NAMED, Call(body=NAMED.body, own=PROFILE),
        Call(body=lambda t, a: {"feeds": _firewall(t["pipeline_id"])["feeds"]},
             own=DEVICE, echoes="pipeline_id"),
    ),
    ("DELETE", "/profiles/{profile_id}/devices/{device_id}"): (Call(), Call(own=PROFILE)),
    ("POST", "/profiles/{profile_id}/devices/{device_id}/token"): (Call(), Call(own=PROFILE)),
    ("GET", "/profiles/{profile_id}/devices/{device_id}/polls"): (Call(), Call(own=PROFILE)),
    # webhooks and their deliveries
    ("POST", "/profiles/{profile_id}/webhooks"): (
        Call(body=lambda t, a: {"url": "https://hooks.example.com/x", "events": ["run_failed"]}),
    ),
    ("GET", "/profiles/{profile_id}/webhooks"): (Call(),),
    ("GET", "/profiles/{profile_id}/webhooks/{webhook_id}"): (Call(), Call(own=PROFILE)),
    ("DELETE", "/profiles/{profile_id}/webhooks/{webhook_id}"): (Call(), Call(own=PROFILE)),
    ("POST", "/profiles/{profile_id}/webhooks/{webhook_id}/test"): (Call(), Call(own=PROFILE)),
    ("GET", "/profiles/{profile_id}/webhooks/{webhook_id}/deliveries"): (
        Call(), Call(own=PROFILE),
    ),
}


def _takes_an_id(route: Any) -> bool:
    """A path or query parameter, or a body field, that names objects by id."""
    names: set[str] = set()
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        pending += dependant.dependencies
        names |= {p.name for p in (*dependant.path_params, *dependant.query_params)}
        for param in dependant.body_params:
            names |= set(getattr(param.field_info.annotation, "model_fields", {}))
    return any(name.endswith(("_id", "_ids")) for name in names)


def test_every_id_route_is_in_the_table(settings: Settings) -> None:
    routes = {
        (method, route.path)
        for route in api_routes(create_app(settings)) if _takes_an_id(route)
        for method in route.methods
    }
    assert sorted(routes - TABLE.keys()) == [], "routes that take an id need a TABLE entry"
    assert sorted(TABLE.keys() - routes) == [], "TABLE entries for routes that are gone"


async def _ids(client: httpx.AsyncClient, tenant: Tenant) -> tuple[Ids, str]:
    """Every id a tenant owns that a route takes (profile, config, pipeline, a finished
    published run, a feed token, an admin linked to the profile), and the feed token."""
    run = await run_to_end(client, tenant.pipeline_id, tenant.profile_key, persist=True)
    assert run["state"] == "succeeded", run
    token = await expect(await client.post(
        f"/profiles/{tenant.profile_id}/feed-tokens", json={"name": "fw"},
        headers=h(tenant.profile_key),
    ), 201)
    webhook = await expect(await client.post(
        f"/profiles/{tenant.profile_id}/webhooks",
        json={"url": "https://hooks.example.com/edl", "events": ["run_failed"]},
        headers=h(tenant.profile_key),
    ), 201)
    return {
        "profile_id": tenant.profile_id, "config_id": tenant.config_id,
        "pipeline_id": tenant.pipeline_id, "run_id": run["id"], "token_id": token["id"],
        "device_id": token["id"], "webhook_id": webhook["id"],
        "account_id": tenant.operator_id,
        "collection_id": collection_id(tenant.pipeline_id, "ipv4"),
    }, token["token"]


def _request(method: str, path: str, call: Call, ids: Ids, own: Ids) -> dict[str, Any]:
    values = {"version": 1, "a": 1, "b": 1, "indicator_type": "ipv4", "name": "TOKEN"} | ids
    values |= {name: own[name] for name in call.own}
    return {
        "method": method, "url": path.format(**values),
        "params": call.query(ids, own) if call.query else None,
        "json": call.body(ids, own) if call.body else None,
    }


@pytest.mark.parametrize("caller", ["profile_key", "operator_key", "reader_key", "feed_token"])
async def test_foreign_ids_look_missing(
    client: httpx.AsyncClient, world: World, caller: str
) -> None:
    """Every id route answers tenant A's callers (profile key, operator, reader, feed token
    over Basic) the same for tenant B's ids as for ids that exist nowhere."""
    own, own_token = await _ids(client, world.a)
    foreign, foreign_token = await _ids(client, world.b)
    missing = dict.fromkeys(foreign, MISSING)
    headers = basic(own_token) if caller == "feed_token" else h(getattr(world.a, caller))
    for (method, path), calls in TABLE.items():
        for call in calls:
            request = _request(method, path, call, foreign, own)
            got = await client.request(**request, headers=headers)
            ref = await client.request(**_request(method, path, call, missing, own),
                                       headers=headers)
            where = f"{caller} {method} {request['url']} {request['params'] or ''}"
            expected = ref.content
            if call.echoes:
                sent = str(foreign[call.echoes]).encode()
                expected = expected.replace(str(MISSING).encode(), sent)
            assert (got.status_code, got.content) == (ref.status_code, expected), where
            if "{" in path and not call.own:  # every id in the path is B's
                assert got.status_code in (401, 403, 404), where
    # Nothing of tenant B changed.
    b = world.b
    pipeline = await expect(await client.get(f"/pipelines/{b.pipeline_id}",
                                             headers=h(b.profile_key)))
    assert (pipeline["name"], pipeline["deleted_at"]) == ("pipe-b", None)
    config = await expect(await client.get(f"/profiles/{b.profile_id}/configs/{b.config_id}",
                                           headers=h(b.profile_key)))
    assert config["name"] == "cfg-b"
    tokens = await expect(await client.get(f"/profiles/{b.profile_id}/feed-tokens",
                                           headers=h(b.profile_key)))
    assert [t["revoked_at"] for t in tokens["items"]] == [None]
    feed = await client.get(f"/pipelines/{b.pipeline_id}/edl/ipv4", headers=basic(foreign_token))
    # B's token still reads B's feed (nothing published there yet: not ready, not refused)
    assert (feed.status_code, feed.json()["error"]) == (503, "feed_not_ready")


@pytest.mark.parametrize("caller", ["profile_key", "operator_key", "reader_key"])
async def test_lists_hold_only_own_objects(
    client: httpx.AsyncClient, world: World, caller: str
) -> None:
    key = getattr(world.a, caller)
    pipelines = (await client.get("/pipelines", headers=h(key))).json()
    assert [p["id"] for p in pipelines["items"]] == [world.a.pipeline_id]
    assert pipelines["total"] == 1
    filtered = await client.get(f"/pipelines?profile_id={world.b.profile_id}", headers=h(key))
    assert filtered.json()["items"] == []
    assert filtered.json()["total"] == 0
    by_config = await client.get(
        f"/pipelines?profile_config_id={world.b.config_id}", headers=h(key)
    )
    assert by_config.json()["items"] == []
    configs = (await client.get(f"/profiles/{world.a.profile_id}/configs", headers=h(key))).json()
    assert [c["id"] for c in configs["items"]] == [world.a.config_id]
    if caller != "profile_key":
        profiles = (await client.get("/profiles", headers=h(key))).json()
        assert [p["id"] for p in profiles["items"]] == [world.a.profile_id]
        me = (await client.get("/me", headers=h(key))).json()
        assert me["profile_ids"] == [world.a.profile_id]
