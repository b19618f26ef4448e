"""Expiry: entries past their valid_until or older than max_age_days leave the feeds, are
counted `expired` and named by explain. Dates come from a CSV `date_column` (abuse.ch
style), a JSON `records`/`date_query`, or, without one, from when the source first gave
the entry (first_seen, kept in the source's state across runs). The clock is pinned."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edl_api.engine.__main__ import settings_from_json, settings_to_json
from edl_api.engine.config import PipelineConfig, validate_config_document
from edl_api.engine.expiry import expired_because
from edl_api.engine.explain import ExplainRecord, lookup
from edl_api.engine.observations import parse_when
from edl_api.engine.pipeline import EngineResult, EngineSettings, run_pipeline
from tests.helpers import LoopbackServer, answer

NOW = parse_when("2026-12-01T12:00:00Z") or 0.0
DAY = 86_400.0

# abuse.ch Feodo Tracker's ipblocklist.csv, shape for shape (comment header, quoted rows).
FEODO_CSV = b"""\
################################################################
# abuse.ch Feodo Tracker Botnet C2 IP Blocklist (CSV)          #
# Last updated: 2026-12-01 11:04:09 UTC                        #
################################################################
# "first_seen_utc","dst_ip","dst_port","c2_status","last_online","malware"
"2026-11-28 09:12:44","8.8.4.4","443","online","2026-12-01","QakBot"
"2026-10-01 17:01:02","9.9.9.9","8080","offline","2026-10-20","Emotet"
"not a date","1.0.0.1","443","online","2026-12-01","Pikabot"
# Number of entries: 3
"""

RECORDS_JSON = json.dumps({"data": [
    {"ioc": "fresh.example", "first_seen": "2026-11-30T08:00:00Z"},
    {"ioc": ["old.example", "older.example"], "first_seen": 1_700_000_000},  # 2023
    {"ioc": "undated.example"},
]}).encode()


def _run(config: PipelineConfig, *, now: float = NOW,
         state: dict[str, Any] | None = None) -> EngineResult:
    settings = EngineSettings(ssrf_allow_cidrs=("127.0.0.0/8",), now=now)
    return asyncio.run(run_pipeline(config, settings, state=state))


def _config(*sources: dict[str, Any]) -> PipelineConfig:
    return validate_config_document(
        {"sources": list(sources), "pipeline": {"outputs": ["ipv4", "fqdn"]}}
    )


def _why(record: ExplainRecord | None, value: str) -> list[tuple[str, str]]:
    assert record is not None
    return [(f["step"], f["detail"]) for f in lookup(record, value)]


def test_the_rule() -> None:
    assert expired_because(None, NOW, NOW, None) == "valid_until 2026-12-01 has passed"
    assert expired_because(None, NOW + 1, NOW, None) is None
    assert expired_because(NOW - 40 * DAY, None, NOW, None) is None  # no max_age_days
    assert expired_because(NOW - 29 * DAY, None, NOW, 30) is None
    assert expired_because(NOW - 31 * DAY, None, NOW, 30) == \
        "older than max_age_days 30 (dated 2026-10-31)"
    # The source's date wins over first_seen; first_seen only judges undated entries.
    assert expired_because(NOW - DAY, None, NOW, 30, first_seen=NOW - 90 * DAY) is None
    assert expired_because(None, None, NOW, 30, first_seen=NOW - 90 * DAY) == (
        "older than max_age_days 30 (first seen 2026-09-02; the source gives no date)"
    )


def test_csv_date_column_with_abuse_ch_dates(feed_server: LoopbackServer) -> None:
    feed_server.routes["/feodo.csv"] = lambda handler: answer(handler, 200, FEODO_CSV)
    config = _config({
        "name": "feodo", "url": f"{feed_server.url}/feodo.csv", "format": "csv",
        "column": "dst_ip", "date_column": "first_seen_utc", "max_age_days": 30,
    })
    result = _run(config)
    assert result.ok, result.errors
    assert [e.value for e in result.feeds["ipv4"]] == ["1.0.0.1", "8.8.4.4"]
    (report,) = result.report["sources"]
    assert report["expired"] == 1
    assert report["undated"] == 1  # "not a date": judged by first_seen (new: kept)
    assert result.report["counts"]["expired"] == 1
    assert _why(result.explain, "9.9.9.9") == [
        ("expired", "older than max_age_days 30 (dated 2026-10-01)")
    ]
    # Only the undated entry needs a first_seen; the dated ones carry their own date.
    assert result.state["feodo"]["data"] == {"first_seen": {"1.0.0.1": NOW}}


def test_csv_date_column_missing_fails_the_source(feed_server: LoopbackServer) -> None:
    feed_server.routes["/feodo.csv"] = lambda handler: answer(handler, 200, FEODO_CSV)
    result = _run(_config({
        "name": "feodo", "url": f"{feed_server.url}/feodo.csv", "format": "csv",
        "column": "dst_ip", "date_column": "first_seen", "max_age_days": 30,
    }))
    assert not result.ok
    assert result.errors[0].startswith(
        "source feodo: column first_seen not in header: first_seen_utc, dst_ip"
    )


def test_json_records_and_date_query(feed_server: LoopbackServer) -> None:
    feed_server.routes["/iocs.json"] = lambda handler: answer(handler, 200, RECORDS_JSON)
    result = _run(_config({
        "name": "iocs", "url": f"{feed_server.url}/iocs.json", "format": "json",
        "records": "data", "query": "ioc", "date_query": "first_seen", "max_age_days": 7,
    }))
    assert result.ok, result.errors
    assert [e.value for e in result.feeds["fqdn"]] == ["fresh.example", "undated.example"]
    (report,) = result.report["sources"]
    assert report["expired"] == 2
    assert report["undated"] == 1
    assert _why(result.explain, "older.example") == [
        ("expired", "older than max_age_days 7 (dated 2023-11-14)")
    ]


def test_first_seen_ages_out_an_undated_entry_across_runs() -> None:
    source = {"name": "plain", "values": ["8.8.4.4", "9.9.9.9"], "max_age_days": 30}
    first = _run(_config(source))
    assert [e.value for e in first.feeds["ipv4"]] == ["8.8.4.4", "9.9.9.9"]
    assert first.state["plain"]["data"]["first_seen"] == {"8.8.4.4": NOW, "9.9.9.9": NOW}

    # Ten days later a new entry arrives and one leaves; first_seen is kept, not renewed.
    later = {**source, "values": ["9.9.9.9", "1.0.0.1"]}
    second = _run(_config(later), now=NOW + 10 * DAY, state=first.state)
    assert second.state["plain"]["data"]["first_seen"] == {
        "9.9.9.9": NOW, "1.0.0.1": NOW + 10 * DAY,
    }
    assert second.report["counts"]["expired"] == 0

    # 31 days after the first run: 9.9.9.9 is older than max_age_days, 1.0.0.1 is not.
    third = _run(_config(later), now=NOW + 31 * DAY, state=second.state)
    assert [e.value for e in third.feeds["ipv4"]] == ["1.0.0.1"]
    assert third.report["sources"][0]["expired"] == 1
    assert _why(third.explain, "9.9.9.9") == [
        ("expired", "older than max_age_days 30 (first seen 2026-12-01; the source gives no date)")
    ]
    # The expired entry stays remembered: it must not come back as new next run.
    assert third.state["plain"]["data"]["first_seen"]["9.9.9.9"] == NOW
    fourth = _run(_config(later), now=NOW + 32 * DAY, state=third.state)
    assert [e.value for e in fourth.feeds["ipv4"]] == ["1.0.0.1"]


def test_a_source_without_max_age_days_keeps_no_state() -> None:
    result = _run(_config({"name": "plain", "values": ["8.8.4.4"]}))
    assert result.state == {}
    assert result.report["sources"][0]["expired"] == 0


def test_settings_file_carries_now() -> None:
    settings = settings_from_json(settings_to_json(EngineSettings(now=NOW)))
    assert settings.now == NOW
    assert settings_from_json('{"now": null}').now is None
    with pytest.raises(ValueError, match="now must be epoch seconds"):
        settings_from_json('{"now": "2026-12-01"}')


def _engine(tmp_path: Path, now: float, state: Path | None) -> subprocess.CompletedProcess[str]:
    settings = tmp_path / "settings.json"
    settings.write_text(settings_to_json(EngineSettings(source_dir=str(tmp_path), now=now)))
    command = [sys.executable, "-m", "edl_api.engine", "run", "--config",
               str(tmp_path / "c.yaml"), "--out", str(tmp_path / "out"),
               "--settings", str(settings)]
    if state is not None:
        command += ["--state", str(state)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_engine_cli_reads_and_writes_state(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("8.8.4.4\n")
    (tmp_path / "c.yaml").write_text(
        "sources:\n  - name: f\n    path: list.txt\n    max_age_days: 30\n"
    )
    first = _engine(tmp_path, NOW, tmp_path / "absent.json")  # no state yet: fine
    assert first.returncode == 0, first.stdout
    written = tmp_path / "out" / "state.json"
    assert written.stat().st_mode & 0o077 == 0  # tenant data: owner only
    kept = tmp_path / "kept.json"
    kept.write_bytes(written.read_bytes())
    assert json.loads(kept.read_text())["f"]["data"] == {"first_seen": {"8.8.4.4": NOW}}

    second = _engine(tmp_path, NOW + 40 * DAY, kept)
    assert second.returncode == 0, second.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["counts"]["expired"] == 1
    assert (tmp_path / "out" / "ipv4.txt").read_text() == ""
