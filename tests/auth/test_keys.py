from __future__ import annotations

import time

import httpx
from fastapi import FastAPI
from sqlalchemy import event

from edl_api.auth import keys
from edl_api.state import AppState
from tests.conftest import SUPER_KEY
from tests.factories import World, create_admin
from tests.helpers import h


def test_key_format_and_checksum() -> None:
    new = keys.generate_key(keys.PROFILE_PREFIX, rounds=4)
    assert new.plaintext.startswith("edlp_")
    assert len(new.plaintext) == 55
    parsed = keys.parse_key(new.plaintext)
    assert parsed is not None
    assert parsed.key_id == new.key_id
    assert keys.verify_secret(parsed.secret, new.key_hash)
    assert parsed.secret not in new.key_hash
    # One changed character breaks the checksum.
    tampered = new.plaintext[:20] + ("A" if new.plaintext[20] != "A" else "B") + new.plaintext[21:]
    assert keys.parse_key(tampered) is None
    assert keys.parse_key("edlx_" + new.plaintext[5:]) is None
    assert keys.parse_key("") is None


def test_cache_expires_and_drops_by_key_id() -> None:
    cache: keys.VerifiedKeyCache[str] = keys.VerifiedKeyCache(ttl_seconds=0.05, max_entries=2)
    cache.put("k1", "id1", "one")
    assert cache.get("k1") == "one"
    cache.drop_key_id("id1")
    assert cache.get("k1") is None
    cache.put("k2", "id2", "two")
    time.sleep(0.06)
    assert cache.get("k2") is None
    for i in range(3):
        cache.put(f"k{i}", f"id{i}", str(i))
    assert cache.get("k0") is None
    assert cache.get("k2") == "2"


async def test_malformed_or_bad_checksum_key_costs_no_query(
    client: httpx.AsyncClient, app: FastAPI, world: World
) -> None:
    statements: list[str] = []

    def record(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(AppState.of(app).engine.sync_engine, "before_cursor_execute", record)
    try:
        good = world.a.profile_key
        bad_checksum = good[:-1] + ("0" if good[-1] != "0" else "1")
        for key in ("nonsense", "edlp_short", bad_checksum):
            r = await client.get("/me", headers=h(key))
            assert r.status_code == 401
            assert r.headers["www-authenticate"].startswith("Bearer")
        assert statements == []
    finally:
        event.remove(AppState.of(app).engine.sync_engine, "before_cursor_execute", record)


async def test_verified_key_is_cached(
    client: httpx.AsyncClient, app: FastAPI, world: World
) -> None:
    await client.get("/me", headers=h(world.a.operator_key))
    statements: list[str] = []

    def record(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(AppState.of(app).engine.sync_engine, "before_cursor_execute", record)
    try:
        for _ in range(5):
            assert (await client.get("/me", headers=h(world.a.operator_key))).status_code == 200
        assert statements == []  # no lookup, no bcrypt: the cache answered
    finally:
        event.remove(AppState.of(app).engine.sync_engine, "before_cursor_execute", record)


async def test_revoked_key_fails_on_next_request(client: httpx.AsyncClient) -> None:
    account = await create_admin(client, "short-lived", "operator")
    key = account["api_key"]
    assert (await client.get("/me", headers=h(key))).status_code == 200  # now cached
    revoked = await client.delete(f"/admin/accounts/{account['id']}", headers=h(SUPER_KEY))
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    r = await client.get("/me", headers=h(key))
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized"


async def test_wrong_secret_with_real_key_id_is_401(
    client: httpx.AsyncClient, world: World
) -> None:
    real = keys.parse_key(world.a.operator_key)
    assert real is not None
    body = f"edla_{real.key_id}{'x' * 32}"
    forged = body + keys._checksum(body)
    assert (await client.get("/me", headers=h(forged))).status_code == 401


async def test_bearer_and_header_both_work_basic_does_not(
    client: httpx.AsyncClient, world: World
) -> None:
    key = world.a.profile_key
    assert (await client.get("/me", headers={"Authorization": f"Bearer {key}"})).status_code == 200
    # HTTP Basic is for feed routes only (firewalls); API routes refuse it.
    basic = await client.get("/me", auth=("fw", key))
    assert basic.status_code == 401


async def test_a_key_appears_in_exactly_one_response(client: httpx.AsyncClient) -> None:
    seen: list[str] = []
    account = await create_admin(client, "once", "operator")
    key = account["api_key"]
    profile = await client.post("/profiles", json={"name": "once"}, headers=h(key))
    profile_key = profile.json()["api_key"]
    for url in (
        "/admin/accounts",
        "/profiles",
        "/me",
        f"/profiles/{profile.json()['profile']['id']}",
    ):
        for caller in (SUPER_KEY, key):
            seen.append((await client.get(url, headers=h(caller))).text)
    seen.append((await client.get("/openapi.json")).text)
    assert not any(key in text or profile_key in text for text in seen)


async def test_a_rejected_key_costs_one_bcrypt_per_ttl_not_one_per_poll(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: object
) -> None:
    """A firewall polling with a revoked or mistyped token must not cost a bcrypt per poll."""
    calls: list[str] = []
    real = keys.verify_secret

    def counting(secret: str, key_hash: str) -> bool:
        calls.append(secret)
        return real(secret, key_hash)

    monkeypatch.setattr(keys, "verify_secret", counting)  # type: ignore[attr-defined]
    account = await create_admin(client, "typo", "operator")
    key = account["api_key"]
    parsed = keys.parse_key(key)
    assert parsed is not None
    body = f"edla_{parsed.key_id}{'A' * 32}"  # the real key id, another secret
    wrong = body + keys._checksum(body)
    assert keys.parse_key(wrong) is not None
    calls.clear()
    for _ in range(5):
        assert (await client.get("/me", headers=h(wrong))).status_code == 401
    assert len(calls) == 1  # verified once, then remembered as rejected
    assert (await client.get("/me", headers=h(key))).status_code == 200  # the right key works
    # a revoked key: rejected once through the database, then without it
    await client.delete(f"/admin/accounts/{account['id']}", headers=h(SUPER_KEY))
    calls.clear()
    for _ in range(3):
        assert (await client.get("/me", headers=h(key))).status_code == 401
    # revoked: no account row, yet one (dummy) bcrypt as for a known id; then remembered
    assert len(calls) == 1
    # the memory lapses: after the TTL the key is looked up again
    rejected: keys.RejectedKeyCache = AppState.of(app).rejected_keys
    assert rejected.rejected(wrong)
    later = time.monotonic() + 31
    monkeypatch.setattr(keys.time, "monotonic", lambda: later)  # type: ignore[attr-defined]
    assert not rejected.rejected(wrong)
