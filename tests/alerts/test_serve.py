"""End to end through a real `edl-api serve`: a receiver on loopback gets signed
deliveries for a held feed and a failed run, and the first one again after it answered
500."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from edl_api.alerts import signing
from tests.alerts.conftest import Receiver
from tests.conftest import SUPER_KEY
from tests.helpers import h, ok, run_sync, running_server, service_env

SECRET = "serve-test-shared-secret-42"
FINISHED = {"succeeded", "failed", "cancelled", "timed_out", "interrupted"}


def _pipeline(http: httpx.Client, profile_id: int, name: str, yaml: str) -> int:
    config = ok(http.post(f"/profiles/{profile_id}/configs",
                           json={"name": name, "yaml": yaml}), 201)
    return int(ok(http.post("/pipelines", json={"profile_config_id": config["id"],
                                                 "name": name}), 201)["id"])




def test_held_feed_and_failed_run_reach_the_receiver(tmp_path: Path, receiver: Receiver) -> None:
    env = service_env(
        tmp_path, EDL_API_KEY=SUPER_KEY, EDL_SSRF_ALLOW_CIDRS="127.0.0.0/8",
        EDL_AUTO_REFRESH_MINUTES="0", EDL_WEBHOOK_POLL_SECONDS="0.1",
        EDL_WEBHOOK_RETRY_SECONDS="0.3",
    )
    receiver.statuses = [500]
    receiver.feed = "".join(f"45.33.32.{i}\n" for i in range(1, 11)).encode()
    with running_server(env, tmp_path) as (_proc, base), \
            httpx.Client(base_url=base, headers=h(SUPER_KEY), timeout=10) as http:
        profile_id = ok(http.post("/profiles", json={"name": "alerts"}), 201)["profile"]["id"]
        hook = ok(http.post(f"/profiles/{profile_id}/webhooks", json={
            "url": f"{receiver.url}/edl-alerts", "events": ["run_failed", "guard_held"],
            "secret": SECRET}), 201)
        listed = _pipeline(http, profile_id, "listed",
                           f"sources:\n  - name: feed\n    url: {receiver.url}/feed\n")
        assert run_sync(http, listed)["state"] == "succeeded"
        receiver.feed = b"45.33.32.1\n"  # 90 % smaller: the guard keeps the last good feed
        held = run_sync(http, listed)
        assert held["state"] == "succeeded"
        assert "guard" in " ".join(held["errors"])
        broken = _pipeline(http, profile_id, "broken",
                           f"sources:\n  - name: gone\n    url: {receiver.url}/missing\n")
        failed = run_sync(http, broken)
        assert failed["state"] == "failed"
        posts = receiver.wait_for(3)  # guard_held answered 500 once, then each one 200
        deadline = time.monotonic() + 10
        while True:
            page = ok(http.get(f"/profiles/{profile_id}/webhooks/{hook['id']}/deliveries"))
            if all(d["state"] == "delivered" for d in page["items"]) and page["total"] == 2:
                break
            assert time.monotonic() < deadline, [(d['event'], d['payload']) for d in page['items']]
            time.sleep(0.1)
    for post in posts:
        assert signing.verify(SECRET, post.headers["X-EDL-Signature"], post.body)
    events = [json.loads(post.body) for post in posts]
    assert [e["event"] for e in events] == ["guard_held", "guard_held", "run_failed"]
    assert events[0]["run_id"] == held["id"]
    assert events[2]["run_id"] == failed["id"]
    assert "shrink" in events[0]["detail"]
    by_event = {d["event"]: d for d in page["items"]}
    assert [a["status"] for a in by_event["guard_held"]["attempt_log"]] == [500, 200]
    assert by_event["run_failed"]["attempts"] == 1
