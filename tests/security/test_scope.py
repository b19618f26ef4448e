"""Issue #12 items 9 and 10 against a real `edl-api serve`: an entry cannot smuggle a line
break into a published feed, and what an admin reads follows its scope at once (the global
feed after an unlink; `/metrics` without the process-wide counters of every tenant)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import SUPER_KEY
from tests.helpers import answer, h
from tests.security.conftest import Live, start_live

# A CRLF feed whose tricks each read as a `0.0.0.0/0` (or another entry) to a consumer that
# splits lines on Unicode line breaks or honours bidi controls.
TRICKS = [
    "a.example/x\u00850.0.0.0/0",
    "b.example/x\u20280.0.0.0/0",
    "c.example/x\u20290.0.0.0/0",
    "evil.example\u2028",
    "x\u202eexample.com",
    "d.example/x\x1b[2K0.0.0.0/0",
    "e.example/x\r0.0.0.0/0",
]
GOOD = ["good-one.example", "good-two.example", "ok.example/path?q=1", "9.9.9.9"]
BODY = "\r\n".join(["# feed", *GOOD, *TRICKS, ""]).encode()
PROCESS_SERIES = ("edl_feed_requests", "edl_runs_finished", "edl_run_duration_seconds",
                  "edl_source_fetch_failures")


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    live_iter = start_live(tmp_path_factory.mktemp("scope"), EDL_SSRF_ALLOW_CIDRS="127.0.0.0/8")
    live = next(live_iter)
    live.upstream.routes["/trick.txt"] = lambda handler: answer(handler, 200, BODY)
    yield live
    next(live_iter, None)


def _admin(live: Live, name: str) -> dict[str, Any]:
    made = live.client.post("/admin/accounts", json={"name": name, "role": "operator"},
                            headers=h(SUPER_KEY))
    assert made.status_code == 201, made.text
    return dict(made.json())


def _link(live: Live, admin_id: int, profile_id: int, on: bool) -> None:
    method = live.client.post if on else live.client.delete
    done = method(f"/admin/accounts/{admin_id}/profiles/{profile_id}", headers=h(SUPER_KEY))
    assert done.status_code == 200, done.text


def test_the_line_separator_trick_is_counted_and_never_published(svc: Live) -> None:
    yaml = f"sources:\n  - name: trick\n    url: {svc.upstream.url}/trick.txt\n"
    pipeline_id = svc.pipeline(svc.b, yaml, name="trick")
    run = svc.run(svc.b, pipeline_id)
    assert run["state"] == "succeeded", run
    (source,) = run["metadata"]["sources"]
    assert source["invalid"] == {"control_character": len(TRICKS)}
    for kind in ("ip", "fqdn", "url"):  # what the feed holds (it has no networks)
        for fmt in ("plain", "panos", "fortinet", "cisco", "checkpoint", "csv", "json"):
            feed = svc.client.get(f"/pipelines/{pipeline_id}/edl/{kind}?format={fmt}",
                                  headers=h(svc.b.key))
            assert feed.status_code == 200, (kind, fmt, feed.text)
            lines = feed.text.splitlines()  # every Unicode line break
            assert not [line for line in lines if "0.0.0.0/0" in line], (kind, fmt, lines)
            assert not any(ch in feed.text for ch in "\x85\u2028\u2029\u202e\x1b\r"), (kind, fmt)
    feed = f"/pipelines/{pipeline_id}/edl"
    assert svc.client.get(f"{feed}/fqdn", headers=h(svc.b.key)).text \
        == "good-one.example\ngood-two.example\n"
    assert svc.client.get(f"{feed}/url", headers=h(svc.b.key)).text == "ok.example/path?q=1\n"
    assert svc.client.get(f"{feed}/cidr", headers=h(svc.b.key)).status_code == 503


def test_an_unlinked_admin_no_longer_reads_the_profile_in_its_global_feed(svc: Live) -> None:
    yaml = "sources:\n  - name: inline\n    values: [scope-a.example]\n"
    assert svc.run(svc.a, svc.pipeline(svc.a, yaml, name="scope"))["state"] == "succeeded"
    admin = _admin(svc, "scope-ops")
    _link(svc, admin["id"], svc.a.profile_id, True)
    for _ in range(3):  # filled by the route, then answered from the caches
        feed = svc.client.get("/edl/fqdn", headers=h(admin["api_key"]))
        assert feed.status_code == 200, feed.text
        assert "scope-a.example" in feed.text.splitlines()
    _link(svc, admin["id"], svc.a.profile_id, False)
    after = svc.client.get("/edl/fqdn", headers=h(admin["api_key"]))
    assert after.status_code == 503, after.text  # nothing left in its scope
    assert "scope-a.example" not in after.text
    # The profile itself still serves it to its own key.
    own = svc.client.get(f"/edl/fqdn?profile_id={svc.a.profile_id}", headers=h(svc.a.key))
    assert "scope-a.example" in own.text.splitlines()


def test_a_tenant_admin_sees_no_process_wide_series(svc: Live) -> None:
    yaml = "sources:\n  - name: inline\n    values: [metrics-b.example]\n"
    pipeline_id = svc.pipeline(svc.b, yaml, name="metrics")
    assert svc.run(svc.b, pipeline_id)["state"] == "succeeded"
    assert svc.client.get(f"/pipelines/{pipeline_id}/edl/fqdn",
                          headers=h(svc.b.key)).status_code == 200
    everything = svc.client.get("/metrics", headers=h(SUPER_KEY)).text
    for series in PROCESS_SERIES:
        assert f"# TYPE {series}" in everything, series
    admin = _admin(svc, "metrics-ops")
    _link(svc, admin["id"], svc.a.profile_id, True)
    scoped = svc.client.get("/metrics", headers=h(admin["api_key"]))
    assert scoped.status_code == 200, scoped.text
    for series in PROCESS_SERIES:
        assert series not in scoped.text, series
    assert f'pipeline_id="{pipeline_id}"' not in scoped.text  # B's feed: not A's admin's
    assert "edl_published_entries" in scoped.text
