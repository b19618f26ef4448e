"""Validation at the edge: unknown fields, bad configs, sizes, paging, error envelope."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import SUPER_KEY
from tests.factories import World
from tests.helpers import h


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("PATCH", "/profiles/{pid}/configs/{cid}", {"profile_id": 2}),
        ("PATCH", "/profiles/{pid}/configs/{cid}", {"version": 99}),
        ("POST", "/pipelines", {"profile_config_id": "{cid}", "name": "x", "profile_id": 2}),
        ("POST", "/pipelines", {"profile_config_id": "{cid}", "name": "x", "id": 5}),
        ("PATCH", "/pipelines/{pipe}", {"deleted_at": None}),
        ("POST", "/profiles/{pid}/configs", {"name": "x", "yaml": "a: 1", "profile_id": 1}),
    ],
)
async def test_mass_assignment_is_refused(
    client: httpx.AsyncClient, world: World, method: str, url: str, body: dict
) -> None:
    a = world.a
    fill = {"pid": a.profile_id, "cid": a.config_id, "pipe": a.pipeline_id}
    body = {
        k: (int(v.format(**fill)) if isinstance(v, str) and "{" in v else v)
        for k, v in body.items()
    }
    r = await client.request(method, url.format(**fill), json=body, headers=h(a.profile_key))
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_error"
    assert isinstance(r.json()["detail"], list)


async def test_admin_and_profile_bodies_forbid_extras(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/admin/accounts",
        json={"name": "x", "role": "operator", "api_key": "mine"},
        headers=h(SUPER_KEY),
    )
    assert r.status_code == 422
    r = await client.post("/profiles", json={"name": "x", "key_hash": "y"}, headers=h(SUPER_KEY))
    assert r.status_code == 422
    r = await client.post(
        "/admin/accounts", json={"name": "x", "role": "root"}, headers=h(SUPER_KEY)
    )
    assert r.status_code == 422


async def test_bad_config_names_line_and_field(client: httpx.AsyncClient, world: World) -> None:
    yaml = "sources:\n  - name: a\n    url: ftp://example.org/x\n    colour: red\n"
    r = await client.post(
        f"/profiles/{world.a.profile_id}/configs",
        json={"name": "bad", "yaml": yaml},
        headers=h(world.a.profile_key),
    )
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "invalid_config"
    problems = {(p["line"], p["field"]) for p in body["detail"]}
    assert (3, "sources.0.url") in problems
    assert (4, "sources.0.colour") in problems


@pytest.mark.parametrize(
    "yaml",
    [
        "sources: &a\n  - name: x\n    values: [1.2.3.4]\nrules: *a\n",  # alias
        "sources: !!python/object:os.system\n  - x\n",  # tag
        "- just\n- a list\n",
        "sources: [",
    ],
)
async def test_unsafe_or_broken_yaml_is_refused(
    client: httpx.AsyncClient, world: World, yaml: str
) -> None:
    r = await client.post(
        f"/profiles/{world.a.profile_id}/configs",
        json={"name": "bad", "yaml": yaml},
        headers=h(world.a.profile_key),
    )
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_config"


async def test_oversized_body_is_413(client: httpx.AsyncClient, world: World) -> None:
    yaml = "sources:\n  - name: a\n    values: [" + "1.2.3.4, " * 200_000 + "]\n"
    r = await client.post(
        f"/profiles/{world.a.profile_id}/configs",
        json={"name": "big", "yaml": yaml},
        headers=h(world.a.profile_key),
    )
    assert r.status_code == 413
    assert r.json()["error"] == "payload_too_large"


async def test_paging_bounds(client: httpx.AsyncClient, world: World) -> None:
    key = h(SUPER_KEY)
    assert (await client.get("/pipelines?limit=501", headers=key)).status_code == 422
    assert (await client.get("/pipelines?limit=0", headers=key)).status_code == 422
    assert (await client.get("/pipelines?offset=-1", headers=key)).status_code == 422
    page = (await client.get("/pipelines?limit=1&offset=1", headers=key)).json()
    assert page["limit"] == 1
    assert page["offset"] == 1
    assert page["total"] == 2
    assert [p["id"] for p in page["items"]] == [world.a.pipeline_id]  # newest first


async def test_error_envelope_everywhere(client: httpx.AsyncClient) -> None:
    missing_route = await client.get("/nope", headers=h(SUPER_KEY))
    assert missing_route.status_code == 404
    assert missing_route.json() == {"error": "not_found", "detail": "Not Found"}
    wrong_method = await client.put("/healthz")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "method_not_allowed"
    bad_id = await client.get("/pipelines/abc", headers=h(SUPER_KEY))
    assert bad_id.status_code == 422
    assert bad_id.json()["error"] == "validation_error"
    not_json = await client.post(
        "/pipelines", content=b"{", headers=h(SUPER_KEY) | {"content-type": "application/json"}
    )
    assert not_json.status_code == 422
