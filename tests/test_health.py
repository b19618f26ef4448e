from __future__ import annotations

import httpx

from tests.conftest import SUPER_KEY
from tests.helpers import h


async def test_health_and_me(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200
    r = await client.get("/me", headers=h(SUPER_KEY))
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "super"
    r = await client.get("/me")
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized"
