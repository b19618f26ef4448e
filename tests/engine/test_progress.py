"""Progress events cross the process boundary as typed lines, formatted and parsed once."""

from __future__ import annotations

import io

from hypothesis import given
from hypothesis import strategies as st

from edl_api.engine.progress import (
    MARKER,
    ProgressEvent,
    ProgressState,
    TerminalProgress,
    describe,
    format_event,
    parse_event,
)

names = st.text(min_size=0, max_size=40)


@given(name=names, ok=st.booleans(), size=st.integers(0, 10**9))
def test_events_round_trip_as_one_printable_line(name: str, ok: bool, size: int) -> None:
    event = ProgressEvent("fetched", {"name": name, "ok": ok, "bytes": size, "seconds": 0.5})
    line = format_event(event)
    assert "\n" not in line
    assert line.isprintable()  # JSON escapes control characters and line separators
    assert parse_event(line) == event


def test_ordinary_and_malformed_lines_are_not_events() -> None:
    assert parse_event("2026-12-01T00:00:00Z stage fetch") is None  # free text, not parsed
    assert parse_event(MARKER + "{not json") is None
    assert parse_event(MARKER + "[1, 2]") is None
    assert parse_event(MARKER + '{"event": "reboot"}') is None
    assert parse_event('{"event": "stage", "stage": "fetch"}') is None  # no marker


def test_progress_state_follows_the_events() -> None:
    state = ProgressState()
    state.apply(ProgressEvent("stage", {"stage": "fetch", "sources": 3}))
    state.apply(ProgressEvent("fetched", {"name": "a", "ok": True}))
    state.apply(ProgressEvent("fetched", {"name": "b", "ok": False}))
    state.apply(ProgressEvent("stage", {"stage": "rules"}))
    assert (state.stage, state.sources_done, state.sources_total) == ("rules", 2, 3)
    state.apply(ProgressEvent("done", {"ok": True, "published": {}}))
    assert state.stage == "done"


def test_describe_gives_the_run_log_line() -> None:
    source = ProgressEvent("source", {
        "name": "feodo", "status": "ok", "bytes": 917, "lines": 15,
        "indicators": {"ipv4": 5}, "invalid": {"bad_ip": 2}, "seconds": 0.1, "error": None,
    })
    assert describe(source) == (
        "source feodo: ok bytes=917 lines=15 indicators[ipv4=5] invalid=2 0.1s"
    )
    assert describe(ProgressEvent("stage", {"stage": "aggregate"})) == "stage aggregate"
    failed = ProgressEvent("fetched", {"name": "x", "ok": False, "bytes": 0, "seconds": 1})
    assert describe(failed) == "fetched x: failed bytes=0 1s"


def test_terminal_progress_draws_the_bar() -> None:
    stream = io.StringIO()
    bar = TerminalProgress(stream, width=10)
    bar(ProgressEvent("stage", {"stage": "fetch", "sources": 2}))
    bar(ProgressEvent("fetched", {"name": "a", "ok": True}))
    assert "[#####-----] sources 1/2  stage: fetch" in stream.getvalue()
    bar(ProgressEvent("done", {"ok": True, "published": {}}))
    assert stream.getvalue().endswith("\n")
