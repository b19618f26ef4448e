"""No key, secret or Authorization value ever reaches api.log."""

from __future__ import annotations

import logging

import httpx
from fastapi import FastAPI

from edl_api.logging_setup import RedactingFilter
from edl_api.state import AppState
from tests.conftest import OPERATOR_LEGACY_KEY, SUPER_KEY
from tests.factories import World
from tests.helpers import h


def test_redaction_filter() -> None:
    f = RedactingFilter(["my-legacy-secret"])
    record = logging.LogRecord(
        "x",
        logging.INFO,
        __file__,
        1,
        "key %s and Authorization: Bearer abc123 and my-legacy-secret",
        ("edlp_0123456789abcdefghij",),
        None,
    )
    f.filter(record)
    text = record.getMessage()
    assert "0123456789abcdefghij" not in text
    assert "abc123" not in text
    assert "my-legacy-secret" not in text


async def test_full_flow_leaves_no_secret_in_the_log(
    client: httpx.AsyncClient, app: FastAPI, world: World
) -> None:
    # Keys in odd places: a URL path and a query string (clients do make such mistakes).
    await client.get(f"/pipelines/{world.a.profile_key}", headers=h(world.a.profile_key))
    await client.get(f"/pipelines?profile_id={world.b.operator_key}", headers=h(SUPER_KEY))
    await client.get("/me", headers={"Authorization": f"Bearer {OPERATOR_LEGACY_KEY}"})
    await client.get("/me", headers=h("edla_notarealkeybutlooksalmostlikeone0123456789abcdefgh"))
    for handler in logging.getLogger().handlers:
        handler.flush()
    log = (AppState.of(app).settings.log_dir / "api.log").read_text()
    assert "GET /pipelines" in log  # requests are logged…
    secrets = [
        SUPER_KEY,
        OPERATOR_LEGACY_KEY,
        world.a.profile_key,
        world.a.operator_key,
        world.a.reader_key,
        world.b.profile_key,
        world.b.operator_key,
    ]
    for secret in secrets:
        assert secret not in log  # …their keys are not
