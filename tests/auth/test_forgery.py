"""Forged keys (a known key id, a valid checksum, a wrong secret) cannot starve the
service: bcrypt has its own bounded pool, a key id under attack cools down, and an
unknown key id costs the same one bcrypt as a known one."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from edl_api.auth import keys
from edl_api.auth.verifier import FailureLimiter
from edl_api.settings import Settings
from edl_api.state import AppState
from tests.conftest import SUPER_KEY, asgi_client, make_settings, running_app
from tests.factories import make_pipeline, make_profile
from tests.helpers import h, launch_run, wait_run


def forge(key: str) -> str:
    """Another secret under `key`'s id, with a valid checksum (passes `parse_key`)."""
    parsed = keys.parse_key(key)
    assert parsed is not None
    return keys.format_key(parsed.prefix, parsed.key_id, keys.random_secret())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def bcrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every bcrypt verification's hash, in order (real bcrypt still runs)."""
    calls: list[str] = []
    real = keys.verify_secret

    def counting(secret: str, key_hash: str) -> bool:
        calls.append(key_hash)
        return real(secret, key_hash)

    monkeypatch.setattr(keys, "verify_secret", counting)
    return calls


def fake_clock(app: FastAPI, **limits: Any) -> Clock:
    """The app's limiter on a clock the test moves (5 failures, 60 s, unless told)."""
    clock = Clock()
    AppState.of(app).verifier.limiter = FailureLimiter(
        limits.get("max_failures", 5), limits.get("cooldown", 60.0), 1000, clock=clock
    )
    return clock


@asynccontextmanager
async def app_with(tmp_path: Path, settings: Settings, **overrides: Any) -> AsyncIterator[
    tuple[FastAPI, httpx.AsyncClient]
]:
    custom = make_settings(tmp_path / "custom", settings.database_url, **overrides)
    async with running_app(custom) as application, asgi_client(application) as http:
        yield application, http


async def test_forgeries_do_not_delay_an_unrelated_request(
    tmp_path: Path, settings: Settings
) -> None:
    # Real bcrypt near production cost: 8 forgeries are ~1 s of CPU. Before this change
    # they ran on the shared default pool and held up every `asyncio.to_thread` behind
    # them, a run's log read among them (measured on 2 cores: 1.06 s; now ~20 ms).
    async with app_with(tmp_path, settings, bcrypt_rounds=11) as (app, client):
        profile_id, key = await make_profile(client, "attacked")
        run = await launch_run(client, await make_pipeline(client, profile_id))
        await wait_run(client, run["id"])
        logs_url = f"/runs/{run['id']}/logs"
        assert (await client.get(logs_url, headers=h(SUPER_KEY))).status_code == 200

        async def timed_logs() -> float:
            await asyncio.sleep(0.05)  # the forgeries are queued by now
            started = time.perf_counter()
            r = await client.get(logs_url, headers=h(SUPER_KEY))
            assert r.status_code == 200
            return time.perf_counter() - started

        started = time.perf_counter()
        attack = asyncio.gather(*(client.get("/me", headers=h(forge(key))) for _ in range(8)))
        delay = await timed_logs()
        forged = await attack
        forgeries = time.perf_counter() - started
        assert [r.status_code for r in forged] == [401] * 8
        assert delay < 0.5, f"unrelated request took {delay:.2f}s during the forgeries"
        # Now cooling down: the next forgery is refused without bcrypt, at once.
        started = time.perf_counter()
        assert (await client.get("/me", headers=h(forge(key)))).status_code == 401
        assert time.perf_counter() - started < 0.1
        assert forgeries > delay  # the forgeries did cost their bcrypts meanwhile


async def test_after_five_failures_a_key_id_answers_without_bcrypt(
    app: FastAPI, client: httpx.AsyncClient, bcrypt_calls: list[str]
) -> None:
    clock = fake_clock(app)
    profile_id, key = await make_profile(client, "target")
    other_id, other_key = await make_profile(client, "bystander")
    url = f"/profiles/{profile_id}"
    bodies = set()
    for _ in range(5):
        r = await client.get(url, headers=h(forge(key)))
        assert r.status_code == 401
        bodies.add(r.text)
    assert len(bcrypt_calls) == 5
    sixth = await client.get(url, headers=h(forge(key)))
    assert sixth.status_code == 401
    assert sixth.text in bodies  # the same plain 401
    assert len(bcrypt_calls) == 5  # no bcrypt for the sixth
    # A correct key never verified in this process is refused too during the cool-down
    # (it cannot be told from a forgery without bcrypt), and not remembered as rejected.
    assert (await client.get(url, headers=h(key))).status_code == 401
    assert len(bcrypt_calls) == 5
    # Another key id is unaffected.
    assert (await client.get(f"/profiles/{other_id}", headers=h(other_key))).status_code == 200
    # The cool-down ends: the right key works, forgeries cost a bcrypt again.
    clock.now += 61
    assert (await client.get(url, headers=h(key))).status_code == 200
    assert (await client.get(url, headers=h(forge(key)))).status_code == 401
    assert len(bcrypt_calls) == 8


async def test_a_key_that_worked_here_is_never_locked_out(
    app: FastAPI, client: httpx.AsyncClient, bcrypt_calls: list[str]
) -> None:
    fake_clock(app)
    state = AppState.of(app)
    profile_id, key = await make_profile(client, "firewall")
    url = f"/profiles/{profile_id}"
    assert (await client.get(url, headers=h(key))).status_code == 200  # verified and cached
    for _ in range(6):
        await client.get(url, headers=h(forge(key)))
    calls = len(bcrypt_calls)
    # Cached: answered before the limiter, without bcrypt.
    assert (await client.get(url, headers=h(key))).status_code == 200
    assert len(bcrypt_calls) == calls
    # Its cache entry lapses (TTL) mid-attack: this process saw the key pass before, so it
    # may spend a bcrypt on it even while its id cools down.
    parsed = keys.parse_key(key)
    assert parsed is not None
    state.key_cache.drop_key_id(parsed.key_id)
    assert (await client.get(url, headers=h(key))).status_code == 200
    assert len(bcrypt_calls) == calls + 1


async def test_an_unknown_key_id_costs_one_bcrypt_like_a_known_one(
    app: FastAPI, client: httpx.AsyncClient, bcrypt_calls: list[str], settings: Settings
) -> None:
    fake_clock(app)
    _, key = await make_profile(client, "known")
    unknown = keys.format_key(keys.PROFILE_PREFIX, "Z" * 12, keys.random_secret())
    assert (await client.get("/me", headers=h(forge(key)))).status_code == 401
    assert (await client.get("/me", headers=h(unknown))).status_code == 401
    known_hash, dummy_hash = bcrypt_calls
    # The dummy hash has the configured cost, as every key issued here does.
    assert dummy_hash != known_hash
    assert dummy_hash.split("$")[2] == known_hash.split("$")[2] == f"{settings.bcrypt_rounds:02d}"
    # and an unknown id goes through the same limiter: five failures, then no bcrypt
    forged_unknown = [keys.format_key(keys.PROFILE_PREFIX, "Z" * 12, keys.random_secret())
                      for _ in range(5)]
    for forged in forged_unknown:
        assert (await client.get("/me", headers=h(forged))).status_code == 401
    assert len(bcrypt_calls) == 2 + 4  # the fifth failure started the cool-down
    sixth = keys.format_key(keys.PROFILE_PREFIX, "Z" * 12, keys.random_secret())
    assert (await client.get("/me", headers=h(sixth))).status_code == 401
    assert len(bcrypt_calls) == 6


async def test_a_full_bcrypt_queue_answers_at_once(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    started: list[str] = []
    real = keys.verify_secret

    def blocking(secret: str, key_hash: str) -> bool:
        started.append(key_hash)
        release.wait(10)
        return real(secret, key_hash)

    async with app_with(tmp_path, settings, bcrypt_max_pending=2) as (app, client):
        cached_id, cached_key = await make_profile(client, "cached")
        assert (await client.get("/me", headers=h(cached_key))).status_code == 200
        _, key_1 = await make_profile(client, "one")
        _, key_2 = await make_profile(client, "two")
        _, waiting_key = await make_profile(client, "three")
        monkeypatch.setattr(keys, "verify_secret", blocking)
        try:
            stuck = [asyncio.create_task(client.get("/me", headers=h(forge(k))))
                     for k in (key_1, key_2)]
            await until(lambda: len(started) == 2)
            t0 = time.perf_counter()
            # The queue is full: a correct uncached key is answered 401 without waiting...
            assert (await client.get("/me", headers=h(waiting_key))).status_code == 401
            assert time.perf_counter() - t0 < 0.5
            assert len(started) == 2
            # ...while a cached key is answered as ever.
            assert (await client.get("/me", headers=h(cached_key))).status_code == 200
        finally:
            release.set()
        assert [r.status_code for r in await asyncio.gather(*stuck)] == [401, 401]
        await until(lambda: AppState.of(app).verifier.pending == 0)
        # Refused for a full queue is not "rejected": the same key works once there is room.
        assert (await client.get("/me", headers=h(waiting_key))).status_code == 200


def test_the_limiter_forgets_the_oldest_key_ids() -> None:
    limiter = FailureLimiter(5, 60.0, max_tracked=3, clock=Clock())
    for n in range(10):
        limiter.failed(f"id{n}", b"d")
    assert len(limiter) == 3


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)
