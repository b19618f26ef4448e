"""Refresh is on by default: a config's refresh_interval_minutes is honoured by a plain
`edl-api serve` with no EDL_AUTO_REFRESH_MINUTES set; 0 turns it off, and says so."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from edl_api.runs.scheduler import refresh_warnings
from edl_api.settings import Settings
from tests.conftest import SUPER_KEY
from tests.helpers import FINISHED, h, running_server, service_env

YAML = "sources:\n  - name: inline\n    values: [162.243.103.246, evil.example]\n"


def _active(client: httpx.Client, profile_id: int) -> dict[str, Any]:
    """The one pipeline that hosts data (listed once a run published)."""
    items = client.get(f"/profiles/{profile_id}/pipelines/active", headers=h()).json()["items"]
    assert len(items) == 1
    return dict(items[0])


def test_a_plain_serve_refreshes_configs_that_ask(tmp_path: Path) -> None:
    env = service_env(tmp_path, EDL_API_KEY=SUPER_KEY)
    assert not any(name == "EDL_AUTO_REFRESH_MINUTES" for name in env)
    log = tmp_path / "serve.out"
    # Turned off, `serve` says what that means.
    with running_server(env | {"EDL_AUTO_REFRESH_MINUTES": "0"}, tmp_path, log=log) as (_, base):
        with httpx.Client(base_url=base, timeout=10) as client:
            profile_id = client.post("/profiles", json={"name": "acme"}, headers=h()).json()[
                "profile"]["id"]
            config = client.post(f"/profiles/{profile_id}/configs", headers=h(), json={
                "name": "c2", "yaml": YAML, "refresh_interval_minutes": 1,
            }).json()
            pipeline = client.post("/pipelines", headers=h(), json={
                "profile_config_id": config["id"], "name": "c2",
            }).json()
            assert client.get("/runs", headers=h()).json()["total"] == 0
    text = log.read_text()
    assert "scheduled refresh is OFF (EDL_AUTO_REFRESH_MINUTES=0)" in text
    assert "refresh_interval_minutes are ignored" in text

    # The same install started with no setting at all: the first tick comes at start and
    # queues the due pipeline, which publishes its feed.
    started = time.monotonic()
    with running_server(env, tmp_path, log=log) as (_, base):
        with httpx.Client(base_url=base, timeout=10) as client:
            while True:
                runs = client.get(
                    "/runs", params={"trigger": "schedule"}, headers=h()
                ).json()["items"]
                if runs and runs[0]["state"] in FINISHED:
                    break
                assert time.monotonic() - started < 20, f"no scheduled run finished: {runs}"
                time.sleep(0.1)
            on = _active(client, profile_id)
    assert len(runs) == 1
    assert runs[0]["pipeline_id"] == pipeline["id"]
    assert runs[0]["state"] == "succeeded"
    assert runs[0]["reason"] == "scheduled every 1 min"
    assert on["scheduled"] is True
    assert on["last_run"]["id"] == runs[0]["id"]
    assert on["feeds"]["ip"]["count"] == 1
    assert "scheduled refresh is on: every 1 min" in log.read_text()


def test_config_write_warnings_about_refresh() -> None:
    on = Settings(_env_file=None)  # type: ignore[call-arg]
    assert on.auto_refresh_minutes == 1  # the default
    assert refresh_warnings(on, 60) == []
    assert refresh_warnings(on, None) == []
    off = Settings(_env_file=None, auto_refresh_minutes=0)  # type: ignore[call-arg]
    [warning] = refresh_warnings(off, 60)
    assert "EDL_AUTO_REFRESH_MINUTES=0" in warning
    assert "not refreshed" in warning
    assert refresh_warnings(off, None) == []  # nothing asked, nothing to warn about
    coarse = Settings(_env_file=None, auto_refresh_minutes=5)  # type: ignore[call-arg]
    [warning] = refresh_warnings(coarse, 1)
    assert "at most every 5 min" in warning
