"""Fleet metrics on /metrics: feed age, each device's last poll age, stale and behind
devices, capacity ratio and polls by status — each caller sees only its own profiles'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from edl_api.state import AppState
from tests.conftest import SUPER_KEY
from tests.factories import World
from tests.feeds.conftest import publish
from tests.helpers import basic, expect, h


def _series(text: str, name: str) -> dict[str, float]:
    """`name{labels}` → value for every sample of one family."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            series, value = line.rsplit(" ", 1)
            found[series] = float(value)
    return found


async def test_fleet_figures_are_scoped_to_the_callers_profiles(
    app: Any, client: httpx.AsyncClient, world: World, tmp_path: Path
) -> None:
    a, b = world.a, world.b
    await publish(app, tmp_path, a.pipeline_id, {"ipv4": [f"192.0.2.{i}" for i in range(9)]})
    await publish(app, tmp_path, b.pipeline_id, {"ipv4": ["198.51.100.1"]})
    made = await expect(await client.post(
        f"/profiles/{a.profile_id}/devices", headers=h(a.profile_key), json={
            "name": 'pa "edge" 01', "vendor": "panos", "model": "PA-3260",
            "limits": {"ip": 10}, "expected_poll_minutes": 5,
            "feeds": [{"pipeline_id": a.pipeline_id, "indicator_type": "ipv4"}],
        }), 201)
    other = await expect(await client.post(
        f"/profiles/{b.profile_id}/devices", headers=h(b.profile_key), json={
            "name": "b-secret-fw", "vendor": "panos", "model": "PA-3260",
            "feeds": [{"pipeline_id": b.pipeline_id, "indicator_type": "ipv4"}],
        }), 201)
    url = made["feeds"][0]["url"]
    for _ in range(2):
        assert (await client.get(url, headers=basic(made["token"]))).status_code == 200
    assert (await client.get(url, auth=("fw", made["token"] + "x"))).status_code == 401
    await AppState.of(app).ledger.flush()

    scoped = await client.get("/metrics", headers=h(a.operator_key))
    assert scoped.status_code == 200
    text = scoped.text
    pa, pb, dev = a.profile_id, b.profile_id, made["id"]
    # Names are operator text: quotes arrive escaped, one series each.
    device = f'device="pa \\"edge\\" 01",device_id="{dev}",profile="{pa}"'
    assert _series(text, "edl_device_polls_total") == {
        f'edl_device_polls_total{{{device},status="200"}}': 2.0
    }
    (age,) = _series(text, "edl_device_last_poll_age_seconds").items()
    assert age[0] == f"edl_device_last_poll_age_seconds{{{device}}}"
    assert 0 <= age[1] < 60
    assert _series(text, "edl_device_capacity_ratio") == {
        f'edl_device_capacity_ratio{{device="pa \\"edge\\" 01",device_id="{dev}",kind="ip",'
        f'profile="{pa}"}}': 0.9
    }
    assert _series(text, "edl_devices_stale") == {f'edl_devices_stale{{profile="{pa}"}}': 0.0}
    assert _series(text, "edl_devices_behind") == {f'edl_devices_behind{{profile="{pa}"}}': 0.0}
    ages = _series(text, "edl_feed_age_seconds")
    assert set(ages) == {
        f'edl_feed_age_seconds{{pipeline="{a.pipeline_id}",profile="{pa}",type="ipv4"}}'
    }
    assert all(0 <= value < 60 for value in ages.values())
    # Nothing of tenant B: not its device, not its profile, not its feed.
    assert "b-secret-fw" not in text
    assert f'device_id="{other["id"]}"' not in text
    assert f'profile="{pb}"' not in text

    everything = (await client.get("/metrics", headers=h(SUPER_KEY))).text
    assert "b-secret-fw" in everything
    assert _series(everything, "edl_devices_stale") == {
        f'edl_devices_stale{{profile="{pa}"}}': 0.0, f'edl_devices_stale{{profile="{pb}"}}': 0.0,
    }
    # B's device never polled: no age sample; its capacity is small.
    assert f'device_id="{other["id"]}"' not in "".join(
        _series(everything, "edl_device_last_poll_age_seconds"))
    assert f'edl_device_capacity_ratio{{device="b-secret-fw",device_id="{other["id"]}",' \
        f'kind="ip",profile="{pb}"}}' in everything

    # A deleted device leaves the fleet's figures.
    await expect(await client.delete(f"/profiles/{pa}/devices/{dev}", headers=h(a.profile_key)))
    after = (await client.get("/metrics", headers=h(a.operator_key))).text
    assert _series(after, "edl_device_polls_total") == {}
    assert _series(after, "edl_devices_stale") == {}
