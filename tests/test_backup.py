"""README's backup commands produce a database the service can start on."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from edl_api.app import create_app
from edl_api.settings import Settings
from tests.conftest import PG_URL, SUPER_KEY, _pg_admin, asgi_client, make_settings
from tests.factories import World
from tests.helpers import h


async def _profiles_seen_by(settings: Settings) -> set[str]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with asgi_client(app) as client:
            page = (await client.get("/profiles", headers=h(SUPER_KEY))).json()
    return {p["name"] for p in page["items"]}


async def test_backup_restores(world: World, settings: Settings, tmp_path: Path) -> None:
    restored_dir = tmp_path / "restored"
    restored_dir.mkdir()
    if settings.is_sqlite:
        if shutil.which("sqlite3") is None:
            pytest.skip("sqlite3 command-line tool not installed")
        database = settings.data_dir / "edl.db"
        # README: sqlite3 data/edl.db ".backup data/edl-backup.db" (while running)
        subprocess.run(
            ["sqlite3", str(database), f".backup {restored_dir / 'edl.db'}"], check=True, timeout=60
        )
        restored = make_settings(restored_dir, None, data_dir=restored_dir)
        assert await _profiles_seen_by(restored) == {"tenant-a", "tenant-b"}
        return
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("pg_dump/pg_restore not installed")
    url = make_url(settings.resolved_database_url)
    dump = tmp_path / "edl.dump"
    # README: pg_dump -Fc edl > edl.dump
    with dump.open("wb") as out:
        subprocess.run(
            [
                "pg_dump",
                "-Fc",
                "-h",
                url.host or "127.0.0.1",
                "-U",
                url.username or "postgres",
                url.database or "",
            ],
            stdout=out,
            check=True,
            timeout=120,
        )
    name = f"edl_restore_{uuid.uuid4().hex[:8]}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        subprocess.run(
            [
                "pg_restore",
                "-h",
                url.host or "127.0.0.1",
                "-U",
                url.username or "postgres",
                "-d",
                name,
                str(dump),
            ],
            check=True,
            timeout=120,
        )
        target = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        restored = make_settings(restored_dir, target)
        assert await _profiles_seen_by(restored) == {"tenant-a", "tenant-b"}
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
