"""A revocation or unlink made by one process reaches another process's key cache."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from edl_api.app import create_app
from edl_api.settings import Settings
from tests.conftest import SUPER_KEY, asgi_client, make_settings
from tests.factories import World, create_admin
from tests.helpers import h


async def test_revocation_in_another_process_is_seen(
    client: httpx.AsyncClient, world: World, tmp_path: Path, settings: Settings
) -> None:
    # A second app on the same database stands for a second `edl-api serve` process.
    other = create_app(
        make_settings(
            tmp_path / "other", settings.resolved_database_url, key_revocation_poll_seconds=0.1
        )
    )
    async with other.router.lifespan_context(other):
        async with asgi_client(other) as second:
            account = await create_admin(client, "roaming", "operator")
            key = account["api_key"]
            assert (await second.get("/me", headers=h(key))).status_code == 200  # cached there
            url = f"/profiles/{world.a.profile_id}"
            assert (await second.get(url, headers=h(world.a.reader_key))).status_code == 200
            # Revoke and unlink through the FIRST process.
            await client.delete(f"/admin/accounts/{account['id']}", headers=h(SUPER_KEY))
            await client.delete(
                f"/admin/accounts/{world.a.reader_id}/profiles/{world.a.profile_id}",
                headers=h(SUPER_KEY),
            )
            for _ in range(50):
                revoked = await second.get("/me", headers=h(key))
                unlinked = await second.get(url, headers=h(world.a.reader_key))
                if revoked.status_code == 401 and unlinked.status_code == 404:
                    break
                await asyncio.sleep(0.1)
            assert revoked.status_code == 401
            assert unlinked.status_code == 404
