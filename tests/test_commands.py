"""commands.txt runs top to bottom with bash against a live server on loopback.

Upstream feeds come from a local stub serving tests/fixtures/feeds/. If the sheet and
the service disagree, a `curl -f` or a `test` in the sheet fails and so does this test.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import loopback, running_server, service_env

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def upstream() -> Iterator[str]:
    with loopback() as server:
        yield server.url


def test_commands_txt_runs_end_to_end(tmp_path: Path, upstream: str) -> None:
    if shutil.which("jq") is None or shutil.which("curl") is None:
        pytest.fail("commands.txt needs curl and jq (apt-get install curl jq)")
    env = service_env(tmp_path, EDL_SSRF_ALLOW_CIDRS="127.0.0.1/32")
    with running_server(env, tmp_path) as (_, base):
        # Twice against the same server: the sheet is re-runnable (unique names, the keys
        # it was shown kept in $WORK) and the second pass creates no second acme or ops.
        for _ in range(2):
            sheet = subprocess.run(
                ["bash", str(ROOT / "commands.txt")],
                env=env | {
                    "BASE": base, "EDL": f"{sys.executable} -m edl_api", "WORK": str(tmp_path),
                    "FEODO_URL": f"{upstream}/feodo_ipblocklist.csv",
                    "DROP_URL": f"{upstream}/spamhaus_drop.txt",
                    "URLHAUS_URL": f"{upstream}/urlhaus.csv",
                },
                cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False,
            )
            out = sheet.stdout
            assert sheet.returncode == 0, (
                f"stdout:\n{out[-3000:]}\nstderr:\n{sheet.stderr[-3000:]}"
            )
        keys = dict(
            line.split("=", 1) for line in (tmp_path / "edl-keys.env").read_text().splitlines()
        )
        admin = {"X-API-Key": keys["ADMIN_KEY"]}
        profiles = httpx.get(f"{base}/profiles", headers=admin, timeout=10).json()["items"]
        assert [p["name"] for p in profiles] == ["acme"]
        accounts = httpx.get(f"{base}/admin/accounts", headers=admin, timeout=10).json()
        assert sorted(a["name"] for a in accounts["items"]) == [
            "noc-viewer", "ops", "soc-operator"
        ]
    assert "commands.txt: all steps done" in out
    assert "succeeded" in out
    assert "conditional poll: HTTP 304" in out
    assert "162.243.103.246" in out  # a Feodo C2 address reached the hosted feed and search
    assert "1.10.16.0/20" in out  # a Spamhaus DROP network too
    assert "x-edl-count" in out.lower()
