"""Two real `edl-api serve` processes sharing one PostgreSQL database: a device polling
both shows every poll in one polls page, each process writing its own; the one stopped
(SIGTERM) before its next flush writes its polls at shutdown."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.conftest import SUPER_KEY
from tests.helpers import FINISHED, basic, h, running_server, service_env

YAML = "sources:\n  - name: inline\n    values: [9.9.9.7, 8.8.8.8, 1.1.1.1]\n"


def _check(response: httpx.Response, status: int = 200) -> dict:  # type: ignore[type-arg]
    assert response.status_code == status, response.text
    return response.json()  # type: ignore[no-any-return]


def _setup(api: httpx.Client) -> tuple[str, str, str, str]:
    """A tenant, a published pipeline and a device reading it: (profile key, device path,
    feed path, device token)."""
    made = _check(api.post("/profiles", json={"name": "t"}, headers=h(SUPER_KEY)), 201)
    profile_id, key = made["profile"]["id"], made["api_key"]
    config = _check(api.post(f"/profiles/{profile_id}/configs",
                             json={"name": "c", "yaml": YAML}, headers=h(key)), 201)
    pipeline = _check(api.post("/pipelines", json={"profile_config_id": config["id"],
                                                   "name": "p"}, headers=h(key)), 201)
    run = _check(api.post("/runs", json={"pipeline_id": pipeline["id"], "persist": True},
                          headers=h(key)), 202)
    deadline = time.monotonic() + 60
    while (state := _check(api.get(f"/runs/{run['id']}", headers=h(key)))["state"]) not in FINISHED:
        assert time.monotonic() < deadline, state
        time.sleep(0.2)
    assert state == "succeeded"
    device = _check(api.post(f"/profiles/{profile_id}/devices", headers=h(key), json={
        "name": "fw", "vendor": "fortinet",
        "feeds": [{"pipeline_id": pipeline["id"], "indicator_type": "ipv4"}],
    }), 201)
    view = f"/profiles/{profile_id}/devices/{device['id']}"
    return key, view, f"/pipelines/{pipeline['id']}/edl/ipv4", str(device["token"])


def test_two_processes_each_record_their_polls(
    tmp_path: Path, own_pg_database: tuple[str, str]
) -> None:
    _, url = own_pg_database
    common = {"EDL_DATABASE_URL": url, "EDL_API_KEY": SUPER_KEY,
              "EDL_AUTO_REFRESH_MINUTES": "0"}
    env_a = service_env(tmp_path / "a", EDL_POLL_FLUSH_SECONDS="0.3", **common)
    # B would wait 5 minutes to flush: only its shutdown writes its polls.
    env_b = service_env(tmp_path / "b", EDL_POLL_FLUSH_SECONDS="300", **common)
    with running_server(env_a, tmp_path, log=tmp_path / "a.out") as (_, base_a), \
            httpx.Client(base_url=base_a, timeout=30) as a:
        key, view, feed, token = _setup(a)
        with running_server(env_b, tmp_path, log=tmp_path / "b.out") as (_, base_b), \
                httpx.Client(base_url=base_b, timeout=30) as b:
            for _ in range(2):
                assert b.get(feed, params={"format": "fortinet"},
                             headers=basic(token)).status_code == 200
        # B has stopped (SIGTERM): its final flush wrote its two polls.
        first = a.get(feed, headers=basic(token))
        assert first.status_code == 200
        for _ in range(2):
            answer = a.get(feed, headers=basic(token) | {"If-None-Match": first.headers["etag"]})
            assert answer.status_code == 304
        deadline = time.monotonic() + 10
        while True:
            items = _check(a.get(f"{view}/polls", headers=h(key)))["items"]
            seen = {(i["format"], i["status"]): i["polls"] for i in items}
            if sum(seen.values()) >= 5:
                break
            assert time.monotonic() < deadline, items
            time.sleep(0.2)
        assert seen == {("fortinet", 200): 2, ("plain", 200): 1, ("plain", 304): 2}
        device = _check(a.get(view, headers=h(key)))
        assert device["last_seen_at"] is not None
        assert device["last_address"] == "127.0.0.1"
        (state,) = device["feeds"]
        assert state["last_status"] == 304
        assert state["served_run_id"] is not None
        assert state["up_to_date"] is True

