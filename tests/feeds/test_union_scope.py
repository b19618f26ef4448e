"""The global feed follows the caller's scope at once (issue #12 item 10).

Its members are cached per scope (the profile and pipeline ids a caller may read), never
per caller, and every link change drops them: an admin unlinked from a profile stops
reading that profile's entries on its very next poll, not after the pointer TTL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from edl_api.auth.principal import Principal
from edl_api.feeds.serving import union_key
from tests.conftest import SUPER_KEY
from tests.factories import create_admin
from tests.feeds.conftest import make_tenant, publish
from tests.helpers import expect, h


async def _link(client: httpx.AsyncClient, admin_id: int, profile_id: int, on: bool) -> None:
    path = f"/admin/accounts/{admin_id}/profiles/{profile_id}"
    call = client.post if on else client.delete
    await expect(await call(path, headers=h(SUPER_KEY)), 200)


async def _global(client: httpx.AsyncClient, key: str) -> tuple[int, str]:
    answer = await client.get("/edl/fqdn", headers=h(key))
    return answer.status_code, answer.text


async def test_an_unlinked_admin_stops_reading_the_profile_at_once(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    a = await make_tenant(client, "a")
    b = await make_tenant(client, "b")
    await publish(app, tmp_path, a.pipeline_id, {"fqdn": ["a-only.example"]})
    await publish(app, tmp_path, b.pipeline_id, {"fqdn": ["b-only.example"]})
    admin = await create_admin(client, "ops", "operator")
    for profile_id in (a.profile_id, b.profile_id):
        await _link(client, admin["id"], profile_id, True)
    key = admin["api_key"]

    both = "a-only.example\nb-only.example\n"
    for _ in range(3):  # the route fills the caches; the fast path answers the rest
        assert await _global(client, key) == (200, both)

    await _link(client, admin["id"], a.profile_id, False)
    assert await _global(client, key) == (200, "b-only.example\n")
    filtered = await client.get(f"/edl/fqdn?profile_id={a.profile_id}", headers=h(key))
    assert filtered.status_code == 404  # outside its scope now: as if there were none

    await _link(client, admin["id"], b.profile_id, False)
    status, body = await _global(client, key)
    assert status == 503  # nothing in scope has published
    assert "example" not in body

    await _link(client, admin["id"], a.profile_id, True)
    assert await _global(client, key) == (200, "a-only.example\n")
    # Others' global feeds were never affected.
    assert await _global(client, SUPER_KEY) == (200, both)
    assert await _global(client, b.key) == (200, "b-only.example\n")


def test_the_union_cache_key_is_the_scope_not_the_caller() -> None:
    before = Principal("admin", "operator", id=5, profile_ids=frozenset({1, 2}),
                       scope_key="admin:5")
    after = Principal("admin", "operator", id=5, profile_ids=frozenset({2}),
                      scope_key="admin:5")
    twin = Principal("admin", "reader", id=9, profile_ids=frozenset({2}), scope_key="admin:9")
    token = Principal("feed_token", "feed", id=3, profile_ids=frozenset({2}),
                      pipeline_ids=frozenset({7}), scope_key="feed_token:3")
    # The same caller with another scope (e.g. in a process that has not heard of the
    # unlink's cache drop, once its key cache refreshed) misses the old members.
    assert union_key(before, None, "fqdn") != union_key(after, None, "fqdn")
    assert union_key(after, None, "fqdn") == union_key(twin, None, "fqdn")
    assert union_key(token, None, "fqdn") != union_key(twin, None, "fqdn")
    assert union_key(after, 2, "fqdn") != union_key(after, None, "fqdn")
