"""No key, secret or Authorization value ever reaches api.log."""

from __future__ import annotations

import io
import logging
import logging.handlers
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from edl_api.logging_setup import FLUSH_SECONDS, BatchedHandler, RedactingFilter, configure_logging
from edl_api.settings import Settings
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


# --- batched writing: one poll's access line must not cost more than the poll ------------

_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING) edl_api\.test: \S+$")


@pytest.fixture
def api_log(tmp_path: Path) -> Iterator[Path]:
    """configure_logging on a folder of its own; our handler is taken off root after."""
    configure_logging(Settings(_env_file=None, log_dir=tmp_path, data_dir=tmp_path))  # type: ignore[call-arg]
    yield tmp_path / "api.log"
    root = logging.getLogger()
    for handler in [x for x in root.handlers if isinstance(x, BatchedHandler)]:
        root.removeHandler(handler)
        handler.close()


def test_a_burst_of_info_lines_reaches_api_log_within_a_second_with_no_more_traffic(
    api_log: Path,
) -> None:
    logger = logging.getLogger("edl_api.test")
    logger.info("first")  # a quiet server's line is written at once
    assert "first" in api_log.read_text()
    for n in range(200):  # then a burst: kept, and written by the flusher thread
        logger.info("burst-%d", n)
    assert "burst-199" not in api_log.read_text()
    deadline = time.monotonic() + 3 * FLUSH_SECONDS
    while "burst-199" not in api_log.read_text():
        assert time.monotonic() < deadline, "batched lines never written"
        time.sleep(0.05)
    lines = api_log.read_text().splitlines()
    assert [line.rsplit(" ", 1)[1] for line in lines] == ["first"] + [
        f"burst-{n}" for n in range(200)
    ]


def test_a_warning_is_written_at_once_with_every_line_before_it_in_order(
    api_log: Path,
) -> None:
    logger = logging.getLogger("edl_api.test")
    logger.info("before-0")
    logger.info("before-1")
    logger.warning("trouble")
    lines = api_log.read_text().splitlines()
    assert [line.rsplit(" ", 1)[1] for line in lines] == ["before-0", "before-1", "trouble"]
    assert all(_LINE.match(line) for line in lines)


def test_rotation_keeps_whole_lines_and_the_backups_it_was_given(tmp_path: Path) -> None:
    log_file = logging.handlers.RotatingFileHandler(
        tmp_path / "api.log", maxBytes=4000, backupCount=2, encoding="utf-8"
    )
    handler = BatchedHandler(log_file, io.StringIO())
    handler.setFormatter(logging.Formatter("%(message)s"))
    for n in range(2000):
        handler.handle(logging.makeLogRecord({"msg": f"line-{n:05d}", "levelno": logging.INFO}))
        if n % 50 == 49:
            handler.flush()
    handler.close()
    files = sorted(tmp_path.glob("api.log*"))
    assert [f.name for f in files] == ["api.log", "api.log.1", "api.log.2"]
    for f in files:
        assert f.stat().st_size <= 4000
        assert all(re.fullmatch(r"line-\d{5}", line) for line in f.read_text().splitlines())
    newest = (tmp_path / "api.log").read_text().splitlines()
    assert newest[-1] == "line-01999"


_WRITER = """
import logging, logging.handlers, os, sys, time
from edl_api.logging_setup import BatchedHandler
while not os.path.exists(sys.argv[3]):  # both start writing together
    time.sleep(0.005)
log_file = logging.handlers.RotatingFileHandler(sys.argv[1], maxBytes=0, encoding="utf-8")
handler = BatchedHandler(log_file, open("/dev/null", "w"))
handler.setFormatter(logging.Formatter("%(message)s"))
for n in range(20000):
    handler.handle(logging.makeLogRecord({"msg": sys.argv[2] * 40 + f"-{n}", "levelno": 20}))
handler.close()
"""


def test_two_processes_appending_to_one_api_log_never_split_a_line(tmp_path: Path) -> None:
    target, go = tmp_path / "api.log", tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(target), tag, str(go)])
        for tag in ("a", "b")
    ]
    try:
        time.sleep(0.5)
        go.touch()
        for proc in procs:
            assert proc.wait(timeout=60) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    lines = target.read_text().splitlines()
    assert len(lines) == 40000
    assert all(re.fullmatch(r"(a{40}|b{40})-\d+", line) for line in lines)
    switches = sum(1 for one, two in zip(lines, lines[1:], strict=False) if one[0] != two[0])
    assert switches >= 2, "the two writers did not overlap: the test proved nothing"
