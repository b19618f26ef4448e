"""Issue #12, what a run can reach, played against a real `edl-api serve`: tenant B holds
its own profile key and tries to reach A's secret, the service's environment, A's files
and a private destination only A was granted. Each attempt is refused with a clear 4xx
or fails B's run with its reason; the recording upstream never sees A's value in a
request of B's, and no response, record or log carries a secret value."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SUPER_KEY
from tests.helpers import h
from tests.security.conftest import ENV_SECRET_VALUE, Live, LiveTenant, start_live

A_VALUE = "tenant-a-credential-5d2b"
B_VALUE = "tenant-b-credential-81fe"
A_PRIVATE = "9.9.9.77"  # public: the rules keep it, so a leak would be published
GRANT: dict[str, Any] = {"ssrf_allow_cidrs": ["127.0.0.1/32"]}


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One service for the module (a real serve costs seconds to start), without the
    global grant: loopback, where the recorder listens, is private to every tenant until
    a super-admin grants it to one profile."""
    yield from start_live(tmp_path_factory.mktemp("reach"))


def _granted(live: Live, *tenants: LiveTenant) -> None:
    for tenant in tenants:
        done = live.client.patch(f"/profiles/{tenant.profile_id}", json=GRANT,
                                 headers=h(SUPER_KEY))
        assert done.status_code == 200, done.text


def _new_tenant(live: Live, name: str) -> LiveTenant:
    made = live.client.post("/profiles", json={"name": name}, headers=h(SUPER_KEY))
    assert made.status_code == 201, made.text
    return LiveTenant(made.json()["profile"]["id"], made.json()["api_key"])


def _url_source(live: Live, tenant: str, header: str = "") -> str:
    headers = f"\n    headers: {{X-Token: \"{header}\"}}" if header else ""
    return (
        "sources:\n  - name: up\n"
        f"    url: {live.upstream.url}/spamhaus_drop.txt?tenant={tenant}{headers}\n"
    )


def _config(live: Live, tenant: LiveTenant, yaml: str) -> httpx.Response:
    return live.client.post(
        f"/profiles/{tenant.profile_id}/configs", json={"name": "x", "yaml": yaml},
        headers=h(tenant.key),
    )


def _put_secret(live: Live, tenant: LiveTenant, name: str, value: str) -> None:
    put = live.client.put(f"/profiles/{tenant.profile_id}/secrets/{name}",
                          json={"value": value}, headers=h(tenant.key))
    assert put.status_code == 204, put.text


def _seen(live: Live, tenant: str) -> list[str]:
    """Every header value the upstream received in requests tagged `tenant`."""
    return [
        value for path, headers in live.upstream.requests if f"tenant={tenant}" in path
        for value in headers.values()
    ]


def _stored_bytes(folder: Path) -> bytes:
    """Everything the service wrote: database, key file, api.log, run logs, its output."""
    return b"".join(
        path.read_bytes() for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.is_symlink()
    )


def test_secrets_reach_only_their_own_profile(svc: Live) -> None:
    live, a, b = svc, svc.a, svc.b
    _granted(live, a, b)
    # the environment's EDL_SECRET_* is no longer reachable from a config: 422, says how
    steal_env = _config(live, b, _url_source(live, "b", "${EDL_SECRET_ACME_TOKEN}"))
    assert steal_env.status_code == 422, steal_env.text
    assert "no longer supported" in steal_env.text
    assert "${secret:ACME_TOKEN}" in steal_env.text
    # a name nobody has, then the same name once A has it: the same answer to B
    before = _config(live, b, _url_source(live, "b", "${secret:TOKEN}"))
    _put_secret(live, a, "TOKEN", A_VALUE)
    after = _config(live, b, _url_source(live, "b", "${secret:TOKEN}"))
    assert before.status_code == after.status_code == 422
    assert before.json() == after.json()
    assert before.json()["error"] == "invalid_config"
    assert "${secret:TOKEN} is not a secret of this profile" in after.text
    nobody = _config(live, b, _url_source(live, "b", "${secret:NOBODY}"))
    assert nobody.text.replace("NOBODY", "TOKEN") == after.text
    # A's run with its own secret: the upstream got A's value, in A's request
    a_run = live.run(a, live.pipeline(a, _url_source(live, "a", "Bearer ${secret:TOKEN}")))
    assert a_run["state"] == "succeeded", a_run
    assert f"Bearer {A_VALUE}" in _seen(live, "a")
    # B's run with B's own TOKEN gets B's value, never A's
    _put_secret(live, b, "TOKEN", B_VALUE)
    b_run = live.run(b, live.pipeline(b, _url_source(live, "b", "${secret:TOKEN}")))
    assert b_run["state"] == "succeeded", b_run
    assert B_VALUE in _seen(live, "b")
    assert not [v for v in _seen(live, "b") if A_VALUE in v or ENV_SECRET_VALUE in v]
    assert not [v for v in _seen(live, "a") if B_VALUE in v or ENV_SECRET_VALUE in v]
    # no value anywhere: listings, run detail (with its config snapshot), logs, storage
    answers = [
        live.client.get(f"/profiles/{a.profile_id}/secrets", headers=h(a.key)).text,
        live.client.get(f"/runs/{a_run['id']}", headers=h(a.key)).text,
        live.client.get(f"/runs/{a_run['id']}/logs", headers=h(a.key)).text,
        live.client.get(f"/runs/{b_run['id']}/logs", headers=h(b.key)).text,
        live.client.get("/runs", headers=h(SUPER_KEY)).text,
    ]
    assert "${secret:TOKEN}" in answers[1]  # the snapshot keeps the reference only
    for value in (A_VALUE, B_VALUE, ENV_SECRET_VALUE):
        assert not [text for text in answers if value in text], value
        assert value.encode() not in _stored_bytes(live.folder), value


def test_files_stay_in_their_profile_folder(svc: Live) -> None:
    live, a, b = svc, svc.a, svc.b
    shown = live.client.get(f"/profiles/{a.profile_id}", headers=h(a.key)).json()
    a_folder = Path(shown["source_dir"])
    assert a_folder == (live.folder / "sources" / str(a.profile_id)).resolve()
    (a_folder / "private.txt").write_text(f"{A_PRIVATE}\n")
    assert live.client.get(f"/profiles/{a.profile_id}", headers=h(a.key)).json()[
        "source_files"] == ["private.txt"]
    # B climbing out is refused on write
    climb = _config(live, b, f"sources:\n  - name: f\n    path: ../{a.profile_id}/private.txt\n")
    assert climb.status_code == 422
    assert "'..'" in climb.text
    # B naming A's folder as under the old shared root reads B's own folder: nothing there
    b_folder = live.folder / "sources" / str(b.profile_id)
    old_style = live.pipeline(b, f"sources:\n  - name: f\n    path: {a.profile_id}/private.txt\n",
                              name="old-style")
    failed = live.run(b, old_style)
    assert failed["state"] == "failed"
    assert "cannot read file" in " ".join(failed["errors"])
    # a symlink in B's folder pointing into A's (a careless operator) is refused at read
    os.symlink(a_folder / "private.txt", b_folder / "link.txt")
    linked = live.run(b, live.pipeline(b, "sources:\n  - name: f\n    path: link.txt\n",
                                       name="link"))
    assert linked["state"] == "failed"
    assert "escapes the profile's source folder" in " ".join(linked["errors"])
    for pipeline in (old_style, linked["pipeline_id"]):
        feed = live.client.get(f"/pipelines/{pipeline}/edl/ip", headers=h(b.key))
        assert feed.status_code == 503, feed.text  # nothing was ever published
        assert A_PRIVATE not in feed.text
    # A reads its own file
    mine = live.run(a, live.pipeline(a, "sources:\n  - name: f\n    path: private.txt\n"))
    assert mine["state"] == "succeeded", mine
    feed = live.client.get(f"/pipelines/{mine['pipeline_id']}/edl/ip", headers=h(a.key))
    assert feed.text.split() == [A_PRIVATE]


def test_private_destinations_are_granted_per_profile(svc: Live) -> None:
    live = svc
    # two fresh tenants: C will be granted the loopback upstream, D not
    c, d = _new_tenant(live, "c"), _new_tenant(live, "d")
    own = live.client.patch(f"/profiles/{c.profile_id}", json=GRANT, headers=h(c.key))
    assert own.status_code == 403, own.text  # no tenant grants itself a destination
    assert own.json()["error"] == "forbidden"
    other = live.client.patch(f"/profiles/{c.profile_id}", json=GRANT, headers=h(d.key))
    assert other.status_code == 404  # nor another tenant (not even seen)
    _granted(live, c)
    d_run = live.run(d, live.pipeline(d, _url_source(live, "d")))
    assert d_run["state"] == "failed"
    assert "refused: host resolves to a non-global address" in " ".join(d_run["errors"])
    c_run = live.run(c, live.pipeline(c, _url_source(live, "c")))
    assert c_run["state"] == "succeeded", c_run
    assert [path for path, _ in live.upstream.requests if "tenant=c" in path]
    assert not [path for path, _ in live.upstream.requests if "tenant=d" in path]
