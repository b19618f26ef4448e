"""Run logs: rotation into gzip segments, reading back in order, tail, sanitising."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from edl_api.runs import logs
from edl_api.settings import Settings
from tests.conftest import SUPER_KEY, make_settings


@pytest.fixture
def log_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, None)


async def test_rotation_into_gzip_segments_read_back_in_order(log_settings: Settings) -> None:
    run_log = logs.RunLog(log_settings, 7, max_bytes=1000)
    lines = [f"line {i:04d} " + "x" * 40 for i in range(200)]
    for line in lines:
        await run_log.write(line, to_engine_log=False)
    run_log.close()

    segments = logs.segments(log_settings, 7)
    assert len(segments) >= 5
    assert [p.name for p in segments][:3] == ["run-7.log.1.gz", "run-7.log.2.gz", "run-7.log.3.gz"]
    for segment in segments:
        with gzip.open(segment, "rb") as packed:
            assert packed.read().endswith(b"\n")
    assert logs.read_all(log_settings, 7).decode().splitlines() == lines
    assert logs.read_tail(log_settings, 7, 3).decode().splitlines() == lines[-3:]
    assert logs.read_tail(log_settings, 7, 50).decode().splitlines() == lines[-50:]
    assert logs.read_tail(log_settings, 7, 10_000).decode().splitlines() == lines
    assert logs.read_tail(log_settings, 7, 0) == b""

    # A log reopened later (another dispatcher) continues the numbering.
    again = logs.RunLog(log_settings, 7, max_bytes=1000)
    for line in lines[:30]:
        await again.write(line, to_engine_log=False)
    again.close()
    assert logs.read_all(log_settings, 7).decode().splitlines() == lines + lines[:30]
    assert logs.read_all(log_settings, 8) == b""


async def test_follow_crosses_rotations(log_settings: Settings) -> None:
    run_log = logs.RunLog(log_settings, 9, max_bytes=300)
    await run_log.write("first", to_engine_log=False)
    run_log.flush()
    written = ["first"]
    polls = 0

    async def running() -> bool:
        nonlocal polls
        polls += 1
        if polls <= 4:
            for i in range(12):
                line = f"poll {polls} line {i} " + "y" * 20
                written.append(line)
                await run_log.write(line, to_engine_log=False)
            run_log.flush()
            return True
        return False

    start = logs.read_all(log_settings, 9)
    chunks = [c async for c in logs.follow(log_settings, 9, running, start, poll_seconds=0)]
    run_log.close()
    assert len(logs.segments(log_settings, 9)) > 3
    assert b"".join(chunks).decode().splitlines() == written


def test_sanitiser_strips_controls_and_secrets(
    log_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDL_SECRET_FEED", "s3cr3t-feed-token")
    sanitiser = logs.Sanitiser(log_settings)
    line = sanitiser.line(
        b"\x1b[31mred\x1b[0m bell\x07 nul\x00 cr\r tab\t "
        b"key=s3cr3t-feed-token Authorization: Bearer abc.def "
        + SUPER_KEY.encode() + b" edlp_ABCDEFGH12345678 \xff\n"
    )
    assert "\x1b" not in line
    assert "\x07" not in line
    assert "\x00" not in line
    assert "\r" not in line
    assert "s3cr3t-feed-token" not in line
    assert SUPER_KEY not in line
    assert "edlp_ABCDEFGH12345678" not in line
    assert "abc.def" not in line
    assert "red" in line
    assert len(sanitiser.line("z" * 50_000)) < logs.MAX_LINE_CHARS + 50
