"""A key whose cache entry expired is verified once, however many polls arrive with it:
the others wait for that bcrypt instead of queueing their own (past the verifier's queue
they would be refused with 401)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from edl_api.state import AppState
from tests.feeds.conftest import make_tenant, publish
from tests.helpers import basic, expect, h


async def test_concurrent_polls_share_one_verification(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    a = await make_tenant(client, "a")
    await publish(app, tmp_path, a.pipeline_id, {"ipv4": ["192.0.2.1"]})
    token = (await expect(await client.post(
        f"/profiles/{a.profile_id}/devices", json={"name": "shared"}, headers=h(a.key)
    ), 201))["token"]
    state = AppState.of(app)
    verifications = 0
    real = state.verifier.admit

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal verifications
        verifications += 1
        return real(*args, **kwargs)

    state.verifier.admit = counting  # type: ignore[method-assign]
    # Far more polls at once than the verifier queues (`bcrypt_max_pending`).
    many = state.settings.bcrypt_max_pending * 4
    url = f"/pipelines/{a.pipeline_id}/edl/ipv4"
    answers = await asyncio.gather(*(client.get(url, headers=basic(token)) for _ in range(many)))
    assert [r.status_code for r in answers] == [200] * many
    assert verifications == 1
    assert state.verifying == {}  # nothing left behind
