"""Engine settings reach the child through one channel, with the run's own deadline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from edl_api.engine.__main__ import settings_from_json, settings_to_json
from edl_api.runs.child import child_env, engine_deadline, engine_settings
from edl_api.runs.reach import RunReach
from edl_api.settings import Settings
from tests.conftest import make_settings
from tests.factories import make_pipeline, make_profile
from tests.helpers import h, launch_run, slow_yaml, wait_run


async def test_a_long_run_gets_its_own_deadline_not_600s(
    rc: httpx.AsyncClient, upstream_port: int, published: list[int]
) -> None:
    """timeout_seconds 1800: the engine's deadline is 1790 s (the run's limit less its
    margin), where it used to cut every run at 600 s."""
    profile, _ = await make_profile(rc, "a")
    pipeline = await make_pipeline(rc, profile, slow_yaml(upstream_port, 1.0))
    run = await launch_run(rc, pipeline, persist=True, timeout_seconds=1800)
    done = await wait_run(rc, run["id"], timeout=60)
    assert done["state"] == "succeeded", done
    assert done["metadata"]["options"]["total_deadline_seconds"] == 1790
    logs = (await rc.get(f"/runs/{run['id']}/logs", headers=h())).text
    assert "time limit 1800 s" in logs
    assert "deadline 1790s" in logs
    assert published == [run["id"]]


def test_deadline_margin() -> None:
    assert engine_deadline(1800) == 1790
    assert engine_deadline(3600) == 3590
    assert engine_deadline(20) == 18  # short limits keep 90 %
    assert 0 < engine_deadline(0.05) <= 0.1


def test_engine_settings_are_the_one_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDL_SECRET_FEED", "s3cr3t")
    monkeypatch.setenv("EDL_API_KEY", "parent-admin-key-0123456789")
    monkeypatch.setenv("EDL_DATABASE_URL", "postgresql+asyncpg://u:pw@db/x")
    settings: Settings = make_settings(
        tmp_path, None, ssrf_allow_cidrs="10.0.0.0/8", source_dir=tmp_path
    )
    # the run's reach (its profile's secrets, grants, folder): nothing of the environment
    reach = RunReach(("10.0.0.0/8", "10.9.0.0/16"), (), str(tmp_path / "7"), {"FEED": "s3cr3t"})
    engine = engine_settings(settings, 1800, reach)
    assert engine.ssrf_allow_cidrs == ("10.0.0.0/8", "10.9.0.0/16")
    assert engine.source_dir == str(tmp_path / "7")
    assert engine.total_deadline_seconds == 1790
    assert engine.secrets == {"FEED": "s3cr3t"}
    assert "s3cr3t" not in repr(engine)
    assert "s3cr3t" not in repr(reach)
    # no reach: the global grants only, no files, no secrets (never EDL_SECRET_* of the env)
    bare = engine_settings(settings, 1800)
    assert (bare.ssrf_allow_cidrs, bare.source_dir, bare.secrets) == (("10.0.0.0/8",), None, {})
    # what the child reads back is what the run layer built
    assert settings_from_json(settings_to_json(engine)) == engine
    # and its environment holds nothing of ours: no key, no database URL, no secret
    env = child_env()
    assert not [k for k in env if k.startswith("EDL_")]
    assert "s3cr3t" not in json.dumps(env)
    assert env["PATH"] == os.environ["PATH"]
