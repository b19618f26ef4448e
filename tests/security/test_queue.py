"""Attacks on shared capacity, against a real `edl-api serve`: tenant A floods the queue
(issue #12: "205 queued runs of A kept B's run queued") and feeds its runs gzip and JSON
bombs ("4 small gzip bombs → 1.3 GiB"). A is refused with clear errors; B's runs start
promptly and succeed; A's feed keeps its last good content."""

from __future__ import annotations

import gzip
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from tests.helpers import answer, h
from tests.security.conftest import Live, start_live

QUEUE_CAP = 5
MIB = 1024 * 1024
GZIP_BOMB = gzip.compress(b"198.51.100.7\n" * (32 * MIB // 13), compresslevel=9)  # ~32 KB
JSON_BOMB = gzip.compress(b"[" + b"[]," * 8_000_000 + b"[]]", compresslevel=9)  # ~25 KB


def _slow(handler: BaseHTTPRequestHandler) -> bool:
    time.sleep(30)  # holds A's running runs; the service stops them at teardown
    return answer(handler, 200, b"203.0.113.9\n")


def _gzip(body: bytes) -> object:
    def route(handler: BaseHTTPRequestHandler) -> bool:
        return answer(handler, 200, body, {"Content-Type": "text/plain",
                                           "Content-Encoding": "gzip"})
    return route


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    live_iter = start_live(
        tmp_path_factory.mktemp("queue"), EDL_SSRF_ALLOW_CIDRS="127.0.0.0/8",
        EDL_MAX_QUEUED_RUNS_PER_PROFILE=str(QUEUE_CAP), EDL_RUN_MAX_BYTES=str(64 * MIB),
        EDL_RUN_MEMORY_MB="400",
    )
    live = next(live_iter)
    live.upstream.routes.update({
        "/slow": _slow, "/gzip-bomb": _gzip(GZIP_BOMB),  # type: ignore[dict-item]
        "/json-bomb": _gzip(JSON_BOMB),  # type: ignore[dict-item]
    })
    yield live
    for _ in live_iter:  # stop the service and the upstream
        pass


def test_a_flood_is_capped_and_b_still_starts_at_once(limited: Live) -> None:
    live = limited
    slow = live.pipeline(live.a, f"sources:\n  - {{name: s, url: '{live.upstream.url}/slow'}}\n",
                         "slow")
    statuses: Counter[int] = Counter()
    refusal = None
    for _ in range(QUEUE_CAP + 10):
        response = live.client.post("/runs", json={"pipeline_id": slow, "persist": False},
                                    headers=h(live.a.key))
        statuses[response.status_code] += 1
        if response.status_code == 429:
            refusal = response
    assert set(statuses) == {202, 429}, statuses
    assert refusal is not None
    assert refusal.json()["error"] == "queue_full"
    assert int(refusal.headers["Retry-After"]) > 0
    queued = live.client.get("/runs?state=queued", headers=h(live.a.key)).json()["total"]
    assert queued == QUEUE_CAP

    quick = live.pipeline(live.b, "sources:\n  - {name: v, values: [203.0.113.7]}\n", "quick")
    launched = time.monotonic()
    run_id = live.client.post("/runs", json={"pipeline_id": quick, "persist": False},
                              headers=h(live.b.key)).json()["id"]
    while live.client.get(f"/runs/{run_id}", headers=h(live.b.key)).json()["state"] == "queued":
        assert time.monotonic() - launched < 2, "B's run waited behind A's queue"
        time.sleep(0.05)
    for run in live.client.get("/runs?state=queued", headers=h(live.a.key)).json()["items"]:
        live.client.post(f"/runs/{run['id']}/cancel", headers=h(live.a.key))


def test_bombs_fail_only_their_run_and_keep_the_feed(limited: Live) -> None:
    live = limited
    base = live.upstream.url
    good_yaml = f"sources:\n  - {{name: drop, url: '{base}/spamhaus_drop.txt'}}\n"
    pipeline = live.pipeline(live.b, good_yaml, "target")
    assert live.run(live.b, pipeline, persist=True)["state"] == "succeeded"
    feed = live.client.get(f"/pipelines/{pipeline}/edl/cidr", headers=h(live.b.key))
    assert feed.status_code == 200
    configs = live.client.get(f"/profiles/{live.b.profile_id}/configs",
                              headers=h(live.b.key)).json()["items"]
    config_id = next(c["id"] for c in configs if c["name"] == "target")

    # Four small gzip bombs, each inside its own max_bytes: the run's budget stops them.
    gzip_yaml = "sources:\n" + "".join(
        f"  - {{name: g{i}, url: '{base}/gzip-bomb'}}\n" for i in range(4)
    )
    # A JSON source that parses into far more objects than its bytes: the memory limit.
    json_yaml = f"sources:\n  - {{name: j, url: '{base}/json-bomb', format: json}}\n"
    quick = live.pipeline(live.b, "sources:\n  - {name: v, values: [203.0.113.7]}\n", "other")
    for yaml, error in ((gzip_yaml, "run byte budget of 64 MiB reached at source g"),
                        (json_yaml, "memory limit of 400 MiB reached")):
        patched = live.client.patch(f"/profiles/{live.b.profile_id}/configs/{config_id}",
                                    json={"yaml": yaml}, headers=h(live.b.key))
        assert patched.status_code == 200, patched.text
        bystander = live.client.post("/runs", json={"pipeline_id": quick, "persist": False},
                                     headers=h(live.b.key)).json()["id"]
        run = live.run(live.b, pipeline, persist=True)
        assert run["state"] == "failed"
        assert any(e.startswith(error) for e in run["errors"]), run["errors"]
        assert live.client.get("/healthz").status_code == 200
        again = live.client.get(f"/pipelines/{pipeline}/edl/cidr", headers=h(live.b.key))
        assert again.content == feed.content
        # A run of the same tenant started alongside is not affected.
        deadline = time.monotonic() + 30
        while (other := live.client.get(f"/runs/{bystander}", headers=h(live.b.key)).json())[
            "state"
        ] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert other["state"] == "succeeded", other["errors"]
