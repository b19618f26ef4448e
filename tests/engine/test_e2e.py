"""End to end: realistic upstream samples -> the exact published feeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edl_api.engine.__main__ import settings_to_json
from edl_api.engine.config import load_config, validate_config_document
from edl_api.engine.document import load_config_document
from edl_api.engine.entries_file import ENTRIES_FILE, read_entries_file
from edl_api.engine.pipeline import EngineResult, EngineSettings, run_pipeline
from edl_api.engine.progress import describe, parse_event
from tests.helpers import FEEDS

EXPECTED: dict[str, list[str]] = {
    "ipv4": [
        "45.95.147.236",
        "91.215.85.17",
        "115.55.237.17",
        "139.59.48.2",
        "162.243.103.246",
        "162.247.74.201",
        "185.220.101.4",
        "185.220.101.5",
        "185.220.101.6",
        "185.220.101.7",
        "195.178.120.5",
    ],
    "ipv6": ["2a01:4f8:c17:1234::2", "2a03:b0c0:3:d0::5f"],
    "cidr": [
        "1.10.16.0/20",
        "1.19.0.0/17",  # DROP 1.19.0.0/16 minus AWS 1.19.128.0/17
        "1.32.128.0/18",
        "2.56.192.0/21",  # two adjacent /22 merged
        "5.134.128.0/19",
        "5.188.10.0/23",
        "45.14.148.0/22",  # covers FireHOL's 45.14.150.0/23
        "94.232.40.0/22",
        "193.169.254.0/23",
        "223.254.0.0/16",
        "2001:678:738::/48",
        "2401:f4c0::/33",  # DROPv6 /32 minus AWS 2401:f4c0:8000::/33
        "2a0f:ca80:1000::/38",  # host bits cleared
    ],
    "fqdn": [
        "cdn.evil-c2.example",
        "login-verify.phish.example",
        "panel.stealer-c2.example",
        "paste.example.net",
        "update.bad-cdn.example",
        "update.evil-c2.example",
        "xn--bcher-kva.example",
    ],
    "url": [
        "115.55.237.17:54713/i",
        "login-verify.phish.example/owa/",
        "paste.example.net/raw/ab12CD",
        "update.bad-cdn.example/Invoice.exe",
        "update.evil-c2.example/gate.php?id=7",
        "xn--bcher-kva.example/shop",
    ],
    "ip": [
        "1.10.16.0/20",
        "1.19.0.0/17",
        "1.32.128.0/18",
        "2.56.192.0/21",
        "5.134.128.0/19",
        "5.188.10.0/23",
        "45.14.148.0/22",
        "45.95.147.236",
        "91.215.85.17",
        "94.232.40.0/22",
        "115.55.237.17",
        "139.59.48.2",
        "162.243.103.246",
        "162.247.74.201",
        "185.220.101.4/30",  # four Tor exits merge in the minimal union
        "193.169.254.0/23",
        "195.178.120.5",
        "223.254.0.0/16",
        "2001:678:738::/48",
        "2401:f4c0::/33",
        "2a01:4f8:c17:1234::2",
        "2a03:b0c0:3:d0::5f",
        "2a0f:ca80:1000::/38",
    ],
}


def _config_text() -> str:
    return (FEEDS / "e2e.yaml").read_text()


async def _run_files() -> EngineResult:
    config = load_config(_config_text())
    return await run_pipeline(config, EngineSettings(source_dir=str(FEEDS)))


async def test_feeds_from_real_formats() -> None:
    result = await _run_files()
    assert result.ok, result.errors
    assert {k: [e.value for e in v] for k, v in result.feeds.items()} == EXPECTED


async def test_provenance_and_tags() -> None:
    result = await _run_files()
    by_value = {(t, e.value): e for t, entries in result.feeds.items() for e in entries}
    merged = by_value[("cidr", "45.14.148.0/22")]
    assert (merged.sources, merged.tags, merged.confidence) == (
        ["drop", "firehol"],
        ["spamhaus"],
        90,
    )
    url = by_value[("url", "115.55.237.17:54713/i")]
    assert (url.sources, url.tags, url.confidence) == (["urlhaus"], ["malware", "web"], 70)
    host = by_value[("ipv4", "115.55.237.17")]  # augment.url_hosts keeps provenance
    assert (host.sources, host.tags) == (["urlhaus"], ["malware"])
    tor = by_value[("ip", "185.220.101.4/30")]
    assert (tor.indicator_type, tor.sources, tor.confidence) == ("cidr", ["tor"], 40)


async def test_report_counts_every_drop() -> None:
    report = (await _run_files()).report
    json.dumps(report)  # JSON-serialisable
    sources = {s["name"]: s for s in report["sources"]}
    assert sources["threatfox"]["invalid"] == {"unrecognised": 1}  # the sha256 row
    assert sources["threatfox"]["indicators"] == {"fqdn": 2, "ipv4": 1, "ipv6": 1, "url": 1}
    assert sources["m365"]["invalid"] == {"bad_domain": 1}  # autodiscover.*.onmicrosoft.com
    assert sources["feodo"]["lines"] == 15
    assert sources["drop"]["bytes"] == (FEEDS / "spamhaus_drop.txt").stat().st_size
    assert all(s["status"] == "ok" and s["error"] is None for s in report["sources"])
    feeds = report["feeds"]
    assert feeds["ipv4"] == {
        "count": 11,
        "dropped": {"allow": 1, "covered_by_network": 1, "exclude_reserved": 1},
        "cut": 0,
    }
    assert feeds["cidr"]["dropped"] == {"exclude_reserved": 4, "min_prefix": 2}
    assert feeds["cidr"]["split"] == {"allow": 2}
    assert feeds["fqdn"]["dropped"] == {"allow": 2, "exclude_regex": 1}
    assert feeds["url"]["dropped"] == {"allow": 1, "exclude_regex": 1, "exclude_reserved": 1}


def _http_config(port: int) -> dict[str, Any]:
    doc = load_config_document(_config_text())
    for source in doc["sources"]:
        source["url"] = f"http://127.0.0.1:{port}/{source.pop('path')}"
    return doc


async def test_same_feeds_over_http(feed_server: Any) -> None:
    config = validate_config_document(_http_config(feed_server.server_address[1]))
    settings = EngineSettings(ssrf_allow_cidrs=("127.0.0.0/8",), total_deadline_seconds=30)
    result = await run_pipeline(config, settings)
    assert result.ok, result.errors
    assert {k: [e.value for e in v] for k, v in result.feeds.items()} == EXPECTED


async def test_required_source_failure_fails_the_run(feed_server: Any) -> None:
    doc = _http_config(feed_server.server_address[1])
    doc["sources"][0]["url"] += ".missing"
    doc["sources"][1]["url"] += ".missing"
    doc["sources"][1]["optional"] = True
    result = await run_pipeline(
        validate_config_document(doc), EngineSettings(ssrf_allow_cidrs=("127.0.0.0/8",))
    )
    assert not result.ok
    assert result.errors == ["source drop: HTTP 404"]
    assert result.warnings == ["source dropv6: HTTP 404"]
    assert all(entries == [] for entries in result.feeds.values())  # nothing to publish
    statuses = [s["status"] for s in result.report["sources"]]
    assert statuses[:3] == ["failed", "failed", "ok"]


def test_cli_run_writes_artifacts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    settings = tmp_path / "settings.json"
    settings.write_text(settings_to_json(EngineSettings(source_dir=str(FEEDS))))
    proc = subprocess.run(
        [sys.executable, "-m", "edl_api.engine", "run", "--config", str(FEEDS / "e2e.yaml"),
         "--out", str(out), "--settings", str(settings)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for feed_type, values in EXPECTED.items():
        assert (out / f"{feed_type}.txt").read_text() == "".join(f"{v}\n" for v in values)
    report = json.loads((out / "report.json").read_text())
    assert report["ok"] is True
    entries = read_entries_file(out / ENTRIES_FILE)
    assert {
        "type": "url",
        "value": "paste.example.net/raw/ab12CD",
        "sources": ["urlhaus"],
        "tags": ["malware", "web"],
        "confidence": 70,
    } in entries
    assert len(entries) == len({(e["type"], e["value"]) for e in entries})
    events = [e for e in map(parse_event, proc.stdout.splitlines()) if e is not None]
    described = [describe(e) for e in events]
    assert any(
        d.startswith("source feodo: ok bytes=917 lines=15 indicators[ipv4=5] invalid=0")
        for d in described
    ), described
    assert [e.data["stage"] for e in events if e.kind == "stage"] == ["fetch", "rules", "aggregate"]
    assert report["options"]["total_deadline_seconds"] == 600


def _engine_run(
    config: Path, out: Path, settings: str, **env: str
) -> subprocess.CompletedProcess[str]:
    settings_file = out.parent / "settings.json"
    settings_file.write_text(settings)
    return subprocess.run(
        [sys.executable, "-m", "edl_api.engine", "run", "--config", str(config),
         "--out", str(out), "--settings", str(settings_file)],
        capture_output=True, text=True, timeout=60, check=False, env={**os.environ, **env},
    )


def test_cli_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources:\n  - name: a\n    path: nope.txt\n")
    proc = _engine_run(bad, tmp_path / "o", json.dumps({"source_dir": str(tmp_path)}))
    assert proc.returncode == 2
    assert "error: source a: cannot read file" in proc.stdout
    assert _engine_run(bad, tmp_path / "o", "[1]").returncode == 1
    unknown = _engine_run(bad, tmp_path / "o", json.dumps({"source_folder": "/"}))
    assert unknown.returncode == 1
    assert "unknown engine settings: source_folder" in unknown.stdout


def test_child_reads_settings_file_not_environment(tmp_path: Path) -> None:
    """The settings file is the child's one channel: EDL_* in its environment do nothing."""
    proc = _engine_run(
        FEEDS / "e2e.yaml", tmp_path / "o", json.dumps({"total_deadline_seconds": 1790}),
        EDL_SOURCE_DIR=str(FEEDS), EDL_RUN_TIMEOUT_SECONDS="5",
    )
    assert proc.returncode == 2  # no source folder granted: the path sources fail
    assert "deadline 1790s" in proc.stdout
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["options"]["total_deadline_seconds"] == 1790


def test_check_config_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edl_api.engine.__main__ import check_config_main

    assert check_config_main(str(FEEDS / "e2e.yaml")) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources:\n  - name: a\n    url: ftp://x/\n    confidence: 900\n")
    assert check_config_main(str(bad)) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == [
        f"{bad}:line 3: sources.0.url: must be http or https",
        f"{bad}:line 4: sources.0.confidence: Input should be less than or equal to 100",
    ]
