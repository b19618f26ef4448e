"""Deliveries reach a receiver on loopback: signed, retried after a 500, in the webhook's
format; refused (and recorded) for a private destination without a grant; source_failing
after N failed runs in a row, once; periodic checks once per episode."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from edl_api.alerts import checks, signing
from edl_api.models import utcnow
from edl_api.state import AppState
from tests.alerts.conftest import Receiver
from tests.conftest import SUPER_KEY, asgi_client, make_settings, running_app
from tests.factories import make_pipeline, make_profile
from tests.helpers import expect, h, run_to_end

SECRET = "receiver-shared-secret-0001"
FAST = {"webhook_poll_seconds": 0.05, "webhook_retry_seconds": 0.2,
        "alert_check_seconds": 3600}


@asynccontextmanager
async def alert_app(tmp_path: Path, database_url: str | None, **overrides: Any
                    ) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    settings = make_settings(tmp_path, database_url, **(FAST | overrides))
    async with running_app(settings) as app, asgi_client(app) as client:
        yield app, client


async def webhook(client: httpx.AsyncClient, profile_id: int, url: str, events: list[str],
                  **extra: Any) -> int:
    body = {"url": url, "events": events, **extra}
    created = await expect(await client.post(f"/profiles/{profile_id}/webhooks", json=body,
                                             headers=h(SUPER_KEY)), 201)
    return int(created["id"])


async def deliveries(client: httpx.AsyncClient, profile_id: int, webhook_id: int,
                     until: str | None = None, timeout: float = 10) -> list[dict[str, Any]]:
    """The webhook's deliveries, once every one is `until` (if given)."""
    deadline = time.monotonic() + timeout
    while True:
        page = await expect(await client.get(
            f"/profiles/{profile_id}/webhooks/{webhook_id}/deliveries", headers=h(SUPER_KEY)))
        items: list[dict[str, Any]] = page["items"]
        if until is None or (items and all(d["state"] == until for d in items)):
            return items
        assert time.monotonic() < deadline, items
        await asyncio.sleep(0.05)


async def test_failed_run_is_signed_and_retried_after_a_500(
    tmp_path: Path, database_url: str | None, receiver: Receiver
) -> None:
    receiver.statuses = [500]
    async with alert_app(tmp_path, database_url, ssrf_allow_cidrs="127.0.0.0/8") as (_, client):
        profile_id, _key = await make_profile(client)
        hook = await webhook(client, profile_id, f"{receiver.url}/hook", ["run_failed"],
                             secret=SECRET)
        broken = f"sources:\n  - name: gone\n    url: {receiver.url}/missing\n"
        pipeline_id = await make_pipeline(client, profile_id, broken, name="broken")
        run = await run_to_end(client, pipeline_id)
        assert run["state"] == "failed"
        posts = await asyncio.to_thread(receiver.wait_for, 2)
        [delivery] = await deliveries(client, profile_id, hook, until="delivered")
    assert [p.path for p in posts] == ["/hook", "/hook"]
    for post in posts:
        assert signing.verify(SECRET, post.headers["X-EDL-Signature"], post.body)
        assert not signing.verify("another-secret-entirely", post.headers["X-EDL-Signature"],
                                  post.body)
        assert post.headers["X-EDL-Delivery"] == str(delivery["id"])
        assert post.headers["X-EDL-Event"] == "run_failed"
    event = json.loads(posts[1].body)
    assert (event["event"], event["profile_id"], event["pipeline_id"], event["run_id"]) == (
        "run_failed", profile_id, pipeline_id, run["id"])
    assert "HTTP 404" in event["detail"]
    assert "broken" in event["summary"]
    assert delivery["attempts"] == 2
    assert [a["status"] for a in delivery["attempt_log"]] == [500, 200]
    assert delivery["attempt_log"][0]["error"] == "HTTP 500"
    # A tampered body or a replayed (old) signature does not verify.
    stamp = posts[1].headers["X-EDL-Signature"]
    assert not signing.verify(SECRET, stamp, posts[1].body + b" ")
    assert not signing.verify(SECRET, stamp, posts[1].body, now=time.time() + 3600)


async def test_slack_format_and_source_failing_once_after_n_runs(
    tmp_path: Path, database_url: str | None, receiver: Receiver
) -> None:
    async with alert_app(tmp_path, database_url, ssrf_allow_cidrs="127.0.0.0/8") as (_, client):
        profile_id, _key = await make_profile(client)
        hook = await webhook(client, profile_id, f"{receiver.url}/slack", ["source_failing"],
                             format="slack")
        yaml = (
            "sources:\n"
            "  - name: good\n    values: [203.0.113.7]\n"
            f"  - name: flaky\n    url: {receiver.url}/missing\n    optional: true\n"
            "    alert_after_failures: 2\n"
        )
        pipeline_id = await make_pipeline(client, profile_id, yaml, name="mixed")
        first = await run_to_end(client, pipeline_id)
        assert first["state"] == "succeeded"  # an optional source only warns
        await asyncio.sleep(0.3)
        assert receiver.received == []  # one failure is not yet news
        await run_to_end(client, pipeline_id)
        [post] = await asyncio.to_thread(receiver.wait_for, 1)
        await run_to_end(client, pipeline_id)  # still failing: the same episode
        await asyncio.sleep(0.3)
        assert len(await deliveries(client, profile_id, hook)) == 1
    assert "X-EDL-Signature" not in post.headers  # no secret, no signature
    text = json.loads(post.body)
    assert list(text) == ["text"]
    assert "source flaky of pipeline mixed" in text["text"]
    assert "failed 2 runs in a row" in text["text"]
    assert "HTTP 404" in text["text"]


async def test_private_destination_without_grant_is_refused_at_delivery(
    tmp_path: Path, database_url: str | None, receiver: Receiver
) -> None:
    """A name is judged when it is resolved: `localhost` passes creation, every delivery
    to it is refused (recorded, naming the settings), and nothing reaches the receiver."""
    async with alert_app(tmp_path, database_url, webhook_max_attempts=2) as (_, client):
        profile_id, _key = await make_profile(client)
        hook = await webhook(client, profile_id, f"http://localhost:{receiver.port}/hook",
                             ["run_failed"])
        await expect(await client.post(f"/profiles/{profile_id}/webhooks/{hook}/test",
                                       headers=h(SUPER_KEY)), 202)
        [delivery] = await deliveries(client, profile_id, hook, until="failed")
    assert receiver.received == []
    assert delivery["attempts"] == 2
    assert delivery["last_status"] is None
    assert "refused" in delivery["last_error"]
    assert "localhost" in delivery["last_error"]
    assert "EDL_SSRF_ALLOW_CIDRS" in delivery["last_error"]


async def test_periodic_checks_fire_once_per_episode(
    tmp_path: Path, database_url: str | None
) -> None:
    async with alert_app(tmp_path, database_url) as (app, client):
        profile_id, _key = await make_profile(client)
        hook = await webhook(client, profile_id, "https://hooks.example.com/edl",
                             ["device_stale", "feed_stale"])
        await make_pipeline(client, profile_id, refresh_interval_minutes=1, name="hourly")
        await expect(await client.post(f"/profiles/{profile_id}/devices",
                                       json={"name": "fw-1", "expected_poll_minutes": 1},
                                       headers=h(SUPER_KEY)), 201)
        state = AppState.of(app)
        assert state.running is not None
        maker = state.running.sessionmaker
        scheduled = state.settings.model_copy(update={"auto_refresh_minutes": 1})
        assert await checks.run_checks(scheduled, maker) == 0  # nothing stale yet
        later = utcnow() + timedelta(minutes=5)
        assert await checks.run_checks(scheduled, maker, now=later) == 2
        assert await checks.run_checks(scheduled, maker, now=later) == 0  # same episodes
        events = sorted(d["event"] for d in await deliveries(client, profile_id, hook))
        assert events == ["device_stale", "feed_stale"]
        # Fresh again (now): both episodes end, so the next staleness alerts again.
        assert await checks.run_checks(scheduled, maker) == 0
        assert await checks.run_checks(scheduled, maker, now=later) == 2
