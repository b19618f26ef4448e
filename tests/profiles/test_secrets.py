"""Per-profile secrets: encrypted at rest, names only out, scoped like every profile object,
and configs may reference only their own profile's names."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from edl_api.models import ProfileConfig, ProfileSecret
from edl_api.secrets import maintenance
from edl_api.secrets.crypto import Keyring, SecretsKeyError, key_file
from edl_api.settings import Settings
from edl_api.state import AppState
from tests.conftest import SUPER_KEY, make_settings
from tests.factories import World, create_config
from tests.helpers import expect, h

VALUE = "tenant-a-token-9c1e"
REF_YAML = """\
sources:
  - name: partner
    url: https://intel.partner.example/list.txt
    headers: {Authorization: "Bearer ${secret:TOKEN}"}
"""


# --- the master key ------------------------------------------------------------------------


def test_round_trip_and_a_wrong_key_refuses() -> None:
    ring = Keyring([Fernet.generate_key()])
    token = ring.encrypt(VALUE)
    assert VALUE.encode() not in token
    assert ring.decrypt(token) == VALUE
    with pytest.raises(SecretsKeyError, match="opens"):
        Keyring([Fernet.generate_key()]).decrypt(token)


def test_key_file_is_made_once_with_mode_0600_and_reused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, None)
    path = key_file(settings)
    first = Keyring.from_settings(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    content = path.read_bytes()
    token = first.encrypt(VALUE)
    again = Keyring.from_settings(settings)  # a restart: the same key, file untouched
    assert path.read_bytes() == content
    assert again.decrypt(token) == VALUE


def test_env_keys_decrypt_with_any_and_rotation_moves_to_the_first(tmp_path: Path) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    token = Keyring([old]).encrypt(VALUE)
    both = make_settings(tmp_path, None, secrets_key=f"{new.decode()},{old.decode()}")
    ring = Keyring.from_settings(both)
    assert ring.decrypt(token) == VALUE
    assert Keyring([new]).decrypt(ring.rotate(token)) == VALUE
    assert not key_file(both).exists()  # an env key never writes a file
    with pytest.raises(ValueError, match="Fernet key"):
        make_settings(tmp_path, None, secrets_key="not-a-key-0123456789")


# --- the API --------------------------------------------------------------------------------


def _ok(response: httpx.Response) -> None:
    assert response.status_code == 204, response.text


def _url(profile_id: int, name: str = "") -> str:
    return f"/profiles/{profile_id}/secrets" + (f"/{name}" if name else "")


async def _rows(app: Any) -> list[ProfileSecret]:
    async with AppState.of(app).sessionmaker() as session:
        return list((await session.execute(select(ProfileSecret))).scalars())


async def test_put_list_delete_never_show_the_value(
    app: Any, client: httpx.AsyncClient, world: World
) -> None:
    a = world.a
    put = await client.put(_url(a.profile_id, "TOKEN"), json={"value": VALUE},
                           headers=h(a.profile_key))
    assert put.status_code == 204, put.text
    listed = await expect(await client.get(_url(a.profile_id), headers=h(a.reader_key)))
    assert [(s["name"], s["source"]) for s in listed["items"]] == [("TOKEN", "value")]
    assert VALUE not in str(listed)
    first_update = listed["items"][0]["updated_at"]
    [row] = await _rows(app)
    assert row.ciphertext
    assert VALUE.encode() not in row.ciphertext
    replaced = await client.put(_url(a.profile_id, "TOKEN"), json={"value": "v2-token"},
                                headers=h(a.operator_key))
    assert replaced.status_code == 204
    listed = await expect(await client.get(_url(a.profile_id), headers=h(a.profile_key)))
    assert listed["total"] == 1
    assert listed["items"][0]["updated_at"] > first_update
    gone = await client.delete(_url(a.profile_id, "TOKEN"), headers=h(a.profile_key))
    assert gone.status_code == 204
    again = await client.delete(_url(a.profile_id, "TOKEN"), headers=h(a.profile_key))
    assert again.status_code == 404
    assert await _rows(app) == []


async def test_scope_roles_and_names(client: httpx.AsyncClient, world: World) -> None:
    a, b = world.a, world.b
    body = {"value": VALUE}
    _ok(await client.put(_url(a.profile_id, "TOKEN"), json=body,
                                  headers=h(a.profile_key)))
    for key in (b.profile_key, b.operator_key):  # another tenant: not found
        for response in (
            await client.put(_url(a.profile_id, "TOKEN"), json=body, headers=h(key)),
            await client.get(_url(a.profile_id), headers=h(key)),
            await client.delete(_url(a.profile_id, "TOKEN"), headers=h(key)),
        ):
            assert response.status_code == 404, response.text
    foreign_read = await client.get(_url(a.profile_id), headers=h(b.reader_key))
    assert foreign_read.status_code == 404
    reader = await client.put(_url(a.profile_id, "X"), json=body, headers=h(a.reader_key))
    assert reader.status_code == 403
    for name in ("lower", "1ABC", "A-B", "A" * 65):
        bad = await client.put(_url(a.profile_id, name), json=body, headers=h(a.profile_key))
        assert bad.status_code == 422, name
    for bad_body in ({}, {"value": "x", "from_env": "EDL_SECRET_X"}, {"value": ""},
                     {"value": "line\nbreak-secret"}):
        bad = await client.put(_url(a.profile_id, "OK"), json=bad_body,
                               headers=h(a.profile_key))
        assert bad.status_code == 422, bad_body
        assert "break-secret" not in bad.text  # a rejected value is never echoed


async def test_from_env_grants_are_super_admin_only(
    client: httpx.AsyncClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDL_SECRET_PARTNER", "env-value-x1")
    a = world.a
    grant = {"from_env": "EDL_SECRET_PARTNER"}
    for key in (a.profile_key, a.operator_key):
        refused = await client.put(_url(a.profile_id, "PARTNER"), json=grant, headers=h(key))
        assert refused.status_code == 403, refused.text
    unknown = await client.put(_url(a.profile_id, "P"), json={"from_env": "EDL_SECRET_NOPE"},
                               headers=h(SUPER_KEY))
    assert unknown.status_code == 422
    assert unknown.json()["error"] == "unknown_env"
    other = await client.put(_url(a.profile_id, "P"), json={"from_env": "EDL_API_KEY"},
                             headers=h(SUPER_KEY))
    assert other.status_code == 422  # only EDL_SECRET_* may be granted
    ok = await client.put(_url(a.profile_id, "PARTNER"), json=grant, headers=h(SUPER_KEY))
    assert ok.status_code == 204
    listed = await expect(await client.get(_url(a.profile_id), headers=h(a.profile_key)))
    assert listed["items"][0] | {"created_at": 0, "updated_at": 0} == {
        "name": "PARTNER", "source": "env", "from_env": "EDL_SECRET_PARTNER",
        "created_at": 0, "updated_at": 0,
    }
    assert "env-value-x1" not in str(listed)


async def test_configs_reference_only_their_own_profiles_secrets(
    client: httpx.AsyncClient, world: World
) -> None:
    a, b = world.a, world.b
    url = f"/profiles/{a.profile_id}/configs"
    nobody = await client.post(url, json={"name": "c", "yaml": REF_YAML}, headers=h(a.profile_key))
    assert nobody.status_code == 422
    assert nobody.json()["error"] == "invalid_config"
    assert nobody.json()["detail"][0]["field"] == "sources.0.headers.Authorization"
    assert "${secret:TOKEN} is not a secret of this profile" in nobody.text
    # B having TOKEN changes nothing of A's answer (no oracle for other tenants' names)
    _ok(await client.put(_url(b.profile_id, "TOKEN"), json={"value": VALUE},
                                  headers=h(b.profile_key)))
    other = await client.post(url, json={"name": "c", "yaml": REF_YAML}, headers=h(a.profile_key))
    assert (other.status_code, other.json()) == (422, nobody.json())
    legacy = await client.post(
        url, json={"name": "c", "yaml": REF_YAML.replace("secret:TOKEN", "EDL_SECRET_TOKEN")},
        headers=h(a.profile_key),
    )
    assert legacy.status_code == 422
    assert "${secret:TOKEN}" in legacy.text
    assert "migrate-secrets" in legacy.text
    # a patch must not introduce one either
    patched = await client.patch(
        f"{url}/{a.config_id}", json={"yaml": REF_YAML}, headers=h(a.profile_key)
    )
    assert patched.status_code == 422
    assert "not a secret of this profile" in patched.text
    _ok(await client.put(_url(a.profile_id, "TOKEN"), json={"value": VALUE},
                                  headers=h(a.profile_key)))
    made = await create_config(client, a.profile_key, a.profile_id, "uses-token", REF_YAML)
    # …and while it references TOKEN, TOKEN cannot be deleted
    busy = await client.delete(_url(a.profile_id, "TOKEN"), headers=h(a.profile_key))
    assert busy.status_code == 409
    assert busy.json()["error"] == "secret_in_use"
    assert f"{made['id']} (uses-token)" in busy.json()["detail"]


# --- profile reach: SSRF grants and the source folder ---------------------------------------


async def test_ssrf_grants_are_super_admin_only_and_validated(
    client: httpx.AsyncClient, world: World
) -> None:
    a, b = world.a, world.b
    body = {"ssrf_allow_cidrs": ["10.20.0.0/16"], "ssrf_allow_hosts": ["Intel.Corp.Example."]}
    for key in (a.profile_key, a.operator_key, a.reader_key):
        refused = await client.patch(f"/profiles/{a.profile_id}", json=body, headers=h(key))
        assert refused.status_code == 403, refused.text
    foreign = await client.patch(f"/profiles/{a.profile_id}", json=body, headers=h(b.operator_key))
    assert foreign.status_code == 404
    for bad in ({"ssrf_allow_cidrs": ["10.0.0.0/33"]}, {"ssrf_allow_hosts": ["*.corp.example"]},
                {"ssrf_allow_hosts": ["a b"]}, {}, {"name": "x"}):
        refused = await client.patch(f"/profiles/{a.profile_id}", json=bad, headers=h(SUPER_KEY))
        assert refused.status_code == 422, bad
    granted = await expect(
        await client.patch(f"/profiles/{a.profile_id}", json=body, headers=h(SUPER_KEY))
    )
    assert granted["ssrf_allow_cidrs"] == ["10.20.0.0/16"]
    assert granted["ssrf_allow_hosts"] == ["intel.corp.example"]
    seen = await expect(await client.get(f"/profiles/{a.profile_id}", headers=h(a.profile_key)))
    assert seen["ssrf_allow_hosts"] == ["intel.corp.example"]
    other = await expect(await client.get(f"/profiles/{b.profile_id}", headers=h(b.profile_key)))
    assert other["ssrf_allow_cidrs"] == []
    assert other["ssrf_allow_hosts"] == []


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return make_settings(tmp_path, database_url, source_dir=tmp_path / "sources")


async def test_get_profile_shows_its_own_folder(
    client: httpx.AsyncClient, world: World, tmp_path: Path
) -> None:
    a = world.a
    seen = await expect(await client.get(f"/profiles/{a.profile_id}", headers=h(a.profile_key)))
    folder = tmp_path / "sources" / str(a.profile_id)
    assert seen["source_dir"] == str(folder.resolve())
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    assert seen["source_files"] == []
    assert seen["source_files_truncated"] is False
    (folder / "lists").mkdir()
    (folder / "lists" / "b.txt").write_text("8.8.8.8\n")
    (folder / "a.txt").write_text("1.1.1.1\n")
    (tmp_path / "sources" / "elsewhere.txt").write_text("9.9.9.9\n")  # not A's
    seen = await expect(await client.get(f"/profiles/{a.profile_id}", headers=h(a.reader_key)))
    assert seen["source_files"] == ["a.txt", os.path.join("lists", "b.txt")]


# --- the migration command ------------------------------------------------------------------


async def test_migrate_secrets_grants_and_rewrites(
    app: Any, client: httpx.AsyncClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDL_SECRET_TOKEN", "env-token-55")
    a = world.a
    maker = AppState.of(app).sessionmaker
    legacy = REF_YAML.replace("secret:TOKEN", "EDL_SECRET_TOKEN")
    async with maker() as session, session.begin():  # a config stored before this change
        config = await session.get(ProfileConfig, a.config_id)
        assert config is not None
        config.yaml = legacy
    dry = await maintenance.migrate_legacy_references(maker, dry_run=True)
    assert dry.configs
    assert await _rows(app) == []
    report = await maintenance.migrate_legacy_references(maker)
    assert report.lines() == [
        f"granted profile {a.profile_id}: TOKEN → EDL_SECRET_TOKEN",
        f"rewrote config {a.config_id} (cfg-a) v1 → v2",
    ]
    got = await expect(await client.get(f"/profiles/{a.profile_id}/configs/{a.config_id}",
                                        headers=h(a.profile_key)))
    assert got["version"] == 2
    assert "${secret:TOKEN}" in got["yaml"]
    [row] = await _rows(app)
    assert (row.profile_id, row.name, row.from_env) == (a.profile_id, "TOKEN", "EDL_SECRET_TOKEN")
    assert (await maintenance.migrate_legacy_references(maker)).lines() == []  # idempotent


async def test_rotate_master_key_file(app: Any, client: httpx.AsyncClient, world: World) -> None:
    a = world.a
    settings = AppState.of(app).settings
    _ok(await client.put(_url(a.profile_id, "TOKEN"), json={"value": VALUE},
                                  headers=h(a.profile_key)))
    old = key_file(settings).read_bytes()
    count, _ = await maintenance.rotate_master_key(settings, AppState.of(app).sessionmaker)
    assert count == 1
    new = key_file(settings).read_bytes()
    assert new != old
    assert len(new.split()) == 1
    assert stat.S_IMODE(key_file(settings).stat().st_mode) == 0o600
    [row] = await _rows(app)
    assert Keyring([new.strip()]).decrypt(row.ciphertext or b"") == VALUE
    with pytest.raises(SecretsKeyError):
        Keyring([old.strip()]).decrypt(row.ciphertext or b"")
