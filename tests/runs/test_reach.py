"""What a run may reach: exactly its config's secrets of its own profile, global ∪ profile
SSRF grants, its profile folder; and a child environment that is an allowlist."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from edl_api.models import PipelineRun, ProfileConfig
from edl_api.runs.child import child_env
from edl_api.runs.reach import ReachError, load_reach
from edl_api.settings import Settings
from edl_api.state import AppState
from tests.conftest import SUPER_KEY, make_settings
from tests.factories import make_pipeline, make_profile
from tests.helpers import h, run_to_end

TWO_REFS = """\
sources:
  - name: a
    url: https://a.example/list.txt
    headers: {X-One: "${secret:ONE}", X-Again: "k=${secret:ONE}"}
  - name: f
    path: lists/x.txt
"""


def test_child_env_is_an_allowlist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOO_SECRET", "x-foo-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    monkeypatch.setenv("EDL_SECRET_ACME", "acme")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.setenv("TZ", "UTC")
    env = child_env()
    assert "FOO_SECRET" not in env
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert not [k for k in env if k.startswith("EDL_")]
    assert env["PATH"] == os.environ["PATH"]
    assert (env["LC_ALL"], env["TZ"], env["PYTHONUNBUFFERED"]) == ("C.UTF-8", "UTC", "1")
    # a real child started with it sees nothing else, and Python still starts
    seen = json.loads(subprocess.run(
        [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
        env=env, capture_output=True, check=True, text=True,
    ).stdout)
    assert "FOO_SECRET" not in seen
    assert "x-foo-secret" not in json.dumps(seen)


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return make_settings(
        tmp_path, database_url, source_dir=tmp_path / "src", ssrf_allow_cidrs="10.1.0.0/16"
    )


async def test_a_run_gets_exactly_its_references_of_its_own_profile(
    app: Any, client: httpx.AsyncClient, settings: Settings, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, _ = await make_profile(client, "a")
    b, _ = await make_profile(client, "b")
    for profile, name, value in ((a, "ONE", "a-one"), (a, "TWO", "a-two"), (b, "ONE", "b-one")):
        put = await client.put(f"/profiles/{profile}/secrets/{name}", json={"value": value},
                               headers=h(SUPER_KEY))
        assert put.status_code == 204
    await client.patch(f"/profiles/{a}", json={"ssrf_allow_cidrs": ["10.2.0.0/16"]},
                       headers=h(SUPER_KEY))
    maker = AppState.of(app).sessionmaker
    async with maker() as session:
        reach = await load_reach(session, settings, a, TWO_REFS)
        assert dict(reach.secrets) == {"ONE": "a-one"}  # not TWO, never B's ONE
        assert reach.ssrf_allow_cidrs == ("10.1.0.0/16", "10.2.0.0/16")
        folder = tmp_path / "src" / str(a)
        assert reach.source_dir == str(folder.resolve())
        assert stat.S_IMODE(folder.stat().st_mode) == 0o750  # made by the parent
        reach_b = await load_reach(session, settings, b, TWO_REFS)
        assert dict(reach_b.secrets) == {"ONE": "b-one"}
        assert reach_b.ssrf_allow_cidrs == ("10.1.0.0/16",)
        with pytest.raises(ReachError, match="secret THREE is not set for this profile"):
            await load_reach(session, settings, a, TWO_REFS.replace("ONE}\"}", "THREE}\"}"))
        with pytest.raises(ReachError, match=r"no longer .*\$\{secret:OLD\}"):
            await load_reach(session, settings, a, TWO_REFS.replace("secret:ONE", "EDL_SECRET_OLD"))
    monkeypatch.setenv("EDL_SECRET_GONE", "v")
    grant = await client.put(f"/profiles/{a}/secrets/TWO", json={"from_env": "EDL_SECRET_GONE"},
                             headers=h(SUPER_KEY))
    assert grant.status_code == 204
    monkeypatch.delenv("EDL_SECRET_GONE")
    async with maker() as session:
        with pytest.raises(ReachError, match="EDL_SECRET_GONE is not set in this worker"):
            await load_reach(session, settings, a, TWO_REFS.replace("secret:ONE", "secret:TWO"))


async def test_a_stored_legacy_reference_fails_its_run_clearly(
    app: Any, client: httpx.AsyncClient
) -> None:
    profile, _ = await make_profile(client, "a")
    pipeline = await make_pipeline(client, profile)
    legacy = TWO_REFS.replace("secret:ONE", "EDL_SECRET_ACME_TOKEN")
    async with AppState.of(app).sessionmaker() as session, session.begin():
        # a config stored before per-profile secrets: the run's snapshot still has it
        await session.execute(update(ProfileConfig).values(yaml=legacy))
    run = await run_to_end(client, pipeline)
    assert run["state"] == "failed"
    assert any("${EDL_SECRET_ACME_TOKEN}" in e and "${secret:ACME_TOKEN}" in e
               for e in run["errors"]), run["errors"]
    async with AppState.of(app).sessionmaker() as session:
        stored = await session.get(PipelineRun, run["id"])
        assert stored is not None
        assert stored.pid is None
