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


def test_escape_log_keeps_every_record_on_one_line() -> None:
    from edl_api.logging_setup import escape_log

    assert escape_log("/healthz\n2026-01-01 FAKE") == "/healthz\\n2026-01-01 FAKE"
    assert escape_log("a\rb\x1b[31mc") == "a\\rb\\u001b[31mc"
    assert escape_log("x\u2028y\u2029z\u0085w") == "x\\u2028y\\u2029z\\u0085w"
    assert escape_log("evil\u202etxt.exe\u2066") == "evil\\u202etxt.exe\\u2066"
    assert escape_log("plain ascii, ünïcödé") == "plain ascii, ünïcödé"


async def test_request_fields_cannot_forge_log_lines(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    for forged in ("%0a2026-01-01 FAKE LINE", "%0d2026-01-01 FAKE", "%1b[31mred", "%e2%80%a8x"):
        await client.get(f"/healthz{forged}")
    # A name is logged by nobody today, but the formatter escapes any message.
    logging.getLogger("edl_api").info("admin %s created", "mallory\n2026-01-01 FAKE")
    for handler in logging.getLogger().handlers:
        handler.flush()
    log = (AppState.of(app).settings.log_dir / "api.log").read_text()
    assert not any(line.startswith("2026-01-01 FAKE") for line in log.splitlines())
    assert "GET /healthz\\n2026-01-01 FAKE LINE 404" in log
    assert "/healthz\\r2026-01-01 FAKE" in log
    assert "/healthz\\u001b[31mred" in log
    assert "/healthz\\u2028x" in log
    assert "mallory\\n2026-01-01 FAKE" in log
    assert "\x1b" not in log
    assert "\u2028" not in log
