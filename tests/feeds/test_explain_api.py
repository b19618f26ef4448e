"""GET /profiles/{id}/explain through a real `edl-api serve`: a listed value names its
entry (a covering network counts), a dropped one the step of the latest run that removed
it with its source and raw line; another tenant gets 404 as for a missing object."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import h
from tests.security.conftest import Live, start_live

CONFIG = """\
sources:
  - name: feed
    values:
      - 8.8.4.4
      - 10.1.2.3
      - 1.0.0.0/7
      - co.uk
      - ads.tracker.test
      - 9.9.9.9
      - 203.0.113.0/24
      - good.test
      - bad..name
      - 44.0.0.0/16
rules:
  allow: ["9.9.9.9"]
  exclude_regex: ["tracker"]
pipeline:
  outputs: [ipv4, cidr, fqdn]
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, int]]:
    tmp: Path = tmp_path_factory.mktemp("explain")
    for live in start_live(tmp):
        pipeline = live.pipeline(live.a, CONFIG)
        run = live.run(live.a, pipeline, persist=True)
        assert run["state"] == "succeeded", run
        yield live, pipeline


def _explain(live: Live, key: str, profile: int, value: str, **extra: Any) -> Any:
    return live.client.get(f"/profiles/{profile}/explain",
                           params={"indicator": value, **extra}, headers=h(key))


def _feed(body: dict[str, Any], feed: str) -> dict[str, Any]:
    [pipeline] = body["pipelines"]
    return next(f for f in pipeline["feeds"] if f["feed"] == feed)


@pytest.mark.parametrize(("value", "feed", "step", "detail"), [
    ("10.1.2.3", "ipv4", "reserved", "10.0.0.0/8"),
    ("9.9.9.9", "ipv4", "allowlist", "rules.allow entry 9.9.9.9"),
    ("co.uk", "fqdn", "public_suffix", "public suffix"),
    ("ads.tracker.test", "fqdn", "exclude_regex", "exclude_regex tracker"),
    ("bad..name", "fqdn", "invalid", "bad_domain"),
])
def test_dropped_value_names_the_step_source_and_line(
    served: tuple[Live, int], value: str, feed: str, step: str, detail: str
) -> None:
    live, _ = served
    response = _explain(live, live.a.key, live.a.profile_id, value)
    assert response.status_code == 200, response.text
    found = _feed(response.json(), feed)
    assert found["listed"] is False
    [why] = found["why"]
    assert why["step"] == step
    assert detail in why["detail"]
    assert why["sources"] == ["feed"]
    line = CONFIG.split("values:\n")[1].splitlines().index(f"      - {value}") + 1
    assert why["first_line"] == {"source": "feed", "line": line}


def test_a_network_dropped_for_min_prefix_covers_an_address(served: tuple[Live, int]) -> None:
    live, _ = served
    body = _explain(live, live.a.key, live.a.profile_id, "1.2.3.4").json()
    [why] = _feed(body, "cidr")["why"]
    assert (why["step"], why["entry"], why["covers"]) == ("min_prefix", "0.0.0.0/7", True)


def test_listed_values_and_covering_networks(served: tuple[Live, int]) -> None:
    live, pipeline = served
    body = _explain(live, live.a.key, live.a.profile_id, "8.8.4.4").json()
    listed = _feed(body, "ipv4")
    assert listed["listed"] is True
    assert [e["entry"] for e in listed["entries"]] == ["8.8.4.4"]
    inside = _explain(live, live.a.key, live.a.profile_id, "44.0.7.7",
                      pipeline_id=pipeline).json()
    cidr = _feed(inside, "cidr")
    assert cidr["listed"] is True
    assert cidr["entries"][0]["entry"] == "44.0.0.0/16"
    assert _feed(inside, "ipv4")["why"][0]["step"] == "covered_by_network"
    unknown = _feed(_explain(live, live.a.key, live.a.profile_id, "7.7.7.7").json(), "ipv4")
    assert unknown["why"][0]["step"] == "not_in_sources"


def test_other_tenant_gets_404_and_garbage_gets_422(served: tuple[Live, int]) -> None:
    live, pipeline = served
    foreign = _explain(live, live.b.key, live.a.profile_id, "10.1.2.3")
    missing = _explain(live, live.b.key, 999_999, "10.1.2.3")
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["error"] == missing.json()["error"]
    # B's own profile with A's pipeline id: 404, nothing of A's run shows.
    crossed = _explain(live, live.b.key, live.b.profile_id, "10.1.2.3", pipeline_id=pipeline)
    assert crossed.status_code == 404
    assert _explain(live, live.a.key, live.a.profile_id, "not an indicator").status_code == 422


def _ips(values: list[str]) -> str:
    lines = "".join(f"      - {v}\n" for v in values)
    return f"sources:\n  - name: feed\n    values:\n{lines}pipeline:\n  outputs: [ipv4]\n"


def test_a_value_the_guard_held_names_the_guard(served: tuple[Live, int]) -> None:
    """The latest run carried the value, but the guard kept the last good feed (it would
    have shrunk by more than max_shrink_percent): explain says so, not "not in sources"."""
    live, _ = served
    first = [f"8.8.8.{i}" for i in range(1, 11)]
    pipeline = live.pipeline(live.a, _ips(first), name="guarded")
    assert live.run(live.a, pipeline, persist=True)["state"] == "succeeded"
    config_id = live.client.get(f"/pipelines/{pipeline}", headers=h(live.a.key)).json()[
        "profile_config_id"]
    replaced = live.client.put(
        f"/profiles/{live.a.profile_id}/configs/{config_id}",
        json={"yaml": _ips(["8.8.8.99"])}, headers=h(live.a.key),
    )
    assert replaced.status_code == 200, replaced.text
    held = live.run(live.a, pipeline, persist=True)
    assert held["state"] == "succeeded", held  # held feeds: the run itself succeeded
    body = _explain(live, live.a.key, live.a.profile_id, "8.8.8.99",
                    pipeline_id=pipeline).json()
    found = _feed(body, "ipv4")
    assert found["listed"] is False
    [why] = found["why"]
    assert why["step"] == "guard", why
    assert str(held["id"]) in why["detail"]
    # What the firewalls still get is the last good feed, and explain lists it.
    kept = _feed(_explain(live, live.a.key, live.a.profile_id, "8.8.8.1",
                          pipeline_id=pipeline).json(), "ipv4")
    assert kept["listed"] is True


def test_a_failed_latest_run_is_named(served: tuple[Live, int]) -> None:
    live, _ = served
    broken = ("sources:\n  - name: gone\n    url: http://127.0.0.1:9/feed.txt\n"
              "pipeline:\n  outputs: [ipv4]\n")
    pipeline = live.pipeline(live.a, broken, name="broken")
    run = live.run(live.a, pipeline, persist=True)
    assert run["state"] == "failed", run
    found = _feed(_explain(live, live.a.key, live.a.profile_id, "8.8.8.8",
                           pipeline_id=pipeline).json(), "ipv4")
    assert found["listed"] is False
    [why] = found["why"]
    assert why["step"] == "run_failed", why
    assert f"run {run['id']} failed" in why["detail"]
