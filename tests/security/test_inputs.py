"""Hostile input against a real `edl-api serve`: every case of issue #12's "5xx on bad
input" and "log injection" answers a clear 4xx and leaves api.log one line per record.
SQLite always; PostgreSQL (int4 ids: 2^31 overflows there) when it is reachable."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SUPER_KEY
from tests.helpers import h
from tests.security.conftest import Live, start_live

YAML = "sources:\n  - name: inline\n    values: [203.0.113.7]\n"


def _nested(depth: int) -> Any:
    value: Any = "10.0.0.0/8"
    for _ in range(depth):
        value = [value]
    return value


def _api_log(live: Live) -> str:
    return (live.folder / "logs" / "api.log").read_text()


def _play_bad_inputs(live: Live) -> None:
    key = h(live.a.key)
    pid = live.a.profile_id
    pipeline = live.pipeline(live.a, YAML)
    for number in (2**63, 2**31):
        for path in (f"/profiles/{number}", f"/pipelines/{number}", f"/runs/{number}",
                     f"/pipelines/{number}/edl/ip", f"/profiles/{pid}/configs/{number}"):
            r = live.client.get(path, headers=h(SUPER_KEY))
            assert r.status_code == 404, (path, r.text)
        for query in (f"/runs?pipeline_id={number}", f"/pipelines?profile_id={number}",
                      f"/edl/ip?profile_id={number}"):
            r = live.client.get(query, headers=h(SUPER_KEY))
            assert r.status_code == 422, (query, r.text)
        r = live.client.post("/runs", json={"pipeline_id": number}, headers=key)
        assert r.status_code == 422, r.text
    config_id = live.client.get(f"/pipelines/{pipeline}", headers=key).json()[
        "profile_config_id"]
    deep = live.client.patch(
        f"/profiles/{pid}/configs/{config_id}", json={"rules": {"allow": _nested(400)}},
        headers=key,
    )
    assert deep.status_code == 422
    assert "nested deeper than 32" in deep.text
    deep_yaml = live.client.post(
        f"/profiles/{pid}/configs",
        json={"name": "deep", "yaml": "a:\n" + "".join(f"{'  ' * i}- \n" for i in range(1, 80))},
        headers=key,
    )
    assert deep_yaml.status_code == 422
    assert "nested too deeply" in deep_yaml.text
    search = live.client.get(
        f"/profiles/{pid}/pipelines/search",
        params={"indicator": "::1-ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"}, headers=key,
    )
    assert search.status_code == 422
    assert "at most 500" in search.text
    token = live.client.post(
        "/profiles/2147483000/feed-tokens", json={"name": "fw"}, headers=h(SUPER_KEY)
    )
    assert token.status_code == 404
    options = live.client.options("/runs", headers=key)
    assert options.status_code == 405
    assert options.headers["allow"] == "GET, POST"
    for raw in (b"S\xff\xfex", b"[" * 100_000):  # not UTF-8; deep beyond any parser
        json_type = {"content-type": "application/json"}
        r = live.client.post("/runs", content=raw, headers=key | json_type)
        assert r.status_code in (400, 422), r.text
    log = _api_log(live)
    assert " 500 " not in log
    assert "unexpected error" not in log


def test_bad_inputs_answer_4xx_on_sqlite(live: Live) -> None:
    _play_bad_inputs(live)


@pytest.fixture
def live_pg(tmp_path: Path, own_pg_database: tuple[str, str]) -> Iterator[Live]:
    # A database of its own: the session's shared one may already hold profiles named
    # "a" and "b" (names are unique), made by other tests' servers.
    yield from start_live(tmp_path, EDL_DATABASE_URL=own_pg_database[1])


def test_bad_inputs_answer_4xx_on_postgresql(live_pg: Live) -> None:
    _play_bad_inputs(live_pg)


def test_log_lines_cannot_be_forged(live: Live) -> None:
    # Raw bytes on the wire: the server percent-decodes the path before it is logged.
    for forged in ("%0a2026-01-01 00:00:00,000 INFO edl_api: FAKE LINE", "%0d2026 FAKE",
                   "%1b[31mred", "%e2%80%a8sep", "%c2%85nel"):
        live.client.get(f"/healthz{forged}")
    # The access line is written once the response is out: wait for the last one.
    deadline = time.monotonic() + 5
    while "nel 404" not in (log := _api_log(live)):
        assert time.monotonic() < deadline, log[-2000:]
        time.sleep(0.05)
    lines = log.splitlines()
    assert not any("FAKE" in line and "GET /healthz" not in line for line in lines)
    assert "GET /healthz\\n2026-01-01 00:00:00,000 INFO edl_api: FAKE LINE 404" in log
    assert "/healthz\\r2026 FAKE" in log
    assert "/healthz\\u001b[31mred" in log
    assert "/healthz\\u2028sep" in log
    assert "/healthz\\u0085nel" in log
    for raw in ("\x1b", "\u2028", "\u0085", "\r"):
        assert raw not in log
