"""A database outage under a real `edl-api serve` on PostgreSQL (issue #14 item 2).

The test's own database is closed (`ALLOW_CONNECTIONS false` + its backends terminated)
while a firewall polls at ~20/s: every poll still gets the last feed (stale after the
pointer TTL), the API answers 503 `database_unavailable` with Retry-After on a kept-alive
connection, `/readyz` says why; connections re-allowed, everything recovers without a
restart.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKENDS, SUPER_KEY, _pg_admin
from tests.helpers import FINISHED, basic, h, running_server, service_env

pytestmark = pytest.mark.skipif("postgres" not in BACKENDS, reason="PostgreSQL not selected")

TTL = 0.5
YAML = "sources:\n  - {name: x, values: [9.9.9.7]}\n"


def _close(name: str) -> None:
    asyncio.run(_pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
    asyncio.run(_pg_admin(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))


def _published_feed(client: httpx.Client) -> tuple[int, str, str]:
    """(pipeline id, profile key, an unused feed token) with 9.9.9.7 published."""
    created = client.post("/profiles", json={"name": "fw"}, headers=h(SUPER_KEY))
    assert created.status_code == 201, created.text
    profile_id, key = created.json()["profile"]["id"], created.json()["api_key"]
    config = client.post(f"/profiles/{profile_id}/configs", json={"name": "c", "yaml": YAML},
                         headers=h(key))
    assert config.status_code == 201, config.text
    pipeline = client.post("/pipelines", json={"profile_config_id": config.json()["id"],
                                               "name": "p"}, headers=h(key))
    assert pipeline.status_code == 201, pipeline.text
    pipeline_id = pipeline.json()["id"]
    run = client.post("/runs", json={"pipeline_id": pipeline_id, "persist": True},
                      headers=h(key)).json()
    deadline = time.monotonic() + 30
    while run["state"] not in FINISHED:
        assert time.monotonic() < deadline, run
        time.sleep(0.1)
        run = client.get(f"/runs/{run['id']}", headers=h(key)).json()
    assert run["state"] == "succeeded", run
    token = client.post(f"/profiles/{profile_id}/feed-tokens", json={"name": "spare"},
                        headers=h(key))
    assert token.status_code == 201, token.text
    return pipeline_id, key, token.json()["token"]


def test_polls_ride_out_a_database_outage_and_the_api_recovers(
    tmp_path: Path, own_pg_database: tuple[str, str]
) -> None:
    name, url = own_pg_database
    env = service_env(
        tmp_path, EDL_DATABASE_URL=url, EDL_API_KEY=SUPER_KEY, EDL_AUTO_REFRESH_MINUTES="0",
        EDL_FEED_POINTER_TTL_SECONDS=str(TTL),
    )
    with running_server(env, tmp_path, log=tmp_path / "serve.out") as (_, base), \
            httpx.Client(base_url=base, timeout=10) as client:
        pipeline_id, key, spare_token = _published_feed(client)
        feed = f"/pipelines/{pipeline_id}/edl/ipv4"
        first = client.get(feed, headers=h(key))
        assert first.status_code == 200, first.text
        assert first.text == "9.9.9.7\n"
        etag = first.headers["etag"]
        assert "x-edl-stale" not in first.headers

        _close(name)
        closed = time.monotonic()
        answers: list[tuple[float, httpx.Response]] = []
        while time.monotonic() - closed < 3 * TTL + 1:
            # Half the fleet sends its ETag (304), half fetches the list (200).
            conditional = {"If-None-Match": etag} if len(answers) % 2 else {}
            answers.append((time.monotonic() - closed,
                            client.get(feed, headers=h(key) | conditional)))
            time.sleep(0.05)
        assert len(answers) >= 30
        wrong = [(t, r.status_code, r.text) for t, r in answers
                 if r.status_code not in (200, 304) or (r.status_code == 200
                                                         and r.text != "9.9.9.7\n")]
        assert wrong == [], wrong  # 0 errors, always the last feed
        assert all(r.headers["etag"] == etag for _, r in answers)
        late = [r for t, r in answers if t > 2 * TTL + 0.2]
        assert late
        assert all(r.headers.get("x-edl-stale") == "db-unavailable" for r in late)

        # The API: 503 with Retry-After on the same kept-alive connection.
        api = client.get(f"/pipelines/{pipeline_id}", headers=h(key))
        assert api.status_code == 503, api.text
        assert api.json()["error"] == "database_unavailable"
        assert "SQL" not in api.text
        assert "asyncpg" not in api.text
        assert api.headers["retry-after"] == "5"
        assert api.headers.get("connection", "").lower() != "close"
        # A key not verified before the outage cannot be checked: 503, not 401 or 500.
        unverified = client.get(feed, headers=basic(spare_token))
        assert unverified.status_code == 503, unverified.text
        assert unverified.json()["error"] == "database_unavailable"
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable"
        assert ready.json()["database"].startswith("unreachable: ")
        assert "accepting connections" in ready.json()["database"]

        asyncio.run(_pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        reopened = time.monotonic()
        while client.get(f"/pipelines/{pipeline_id}", headers=h(key)).status_code != 200:
            assert time.monotonic() - reopened < 5, "the API did not recover"
            time.sleep(0.1)
        while "x-edl-stale" in (polled := client.get(feed, headers=h(key))).headers:
            assert time.monotonic() - reopened < 5, "still served stale"
            time.sleep(0.1)
        assert polled.status_code == 200
        assert polled.headers["etag"] == etag
        assert client.get("/readyz").status_code == 200
        assert client.get(feed, headers=basic(spare_token)).status_code == 200
        metrics = client.get("/metrics", headers=h(SUPER_KEY)).text
        stale_serves = [line for line in metrics.splitlines()
                        if line.startswith("edl_feed_stale_serves_total ")]
        assert stale_serves
        assert float(stale_serves[0].split()[1]) >= len(late)
    log = (tmp_path / "logs" / "api.log").read_text()
    # One throttled line for the stale serves, not one per poll.
    assert 1 <= log.count("serving the last known ipv4 feed") <= 2
