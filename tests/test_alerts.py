"""deploy/alerts.yml: promtool accepts it, and its unit tests prove each alert fires on the
series that should trigger it and stays silent otherwise.

promtool comes from Debian's `prometheus` package. Without it the promtool tests skip on a
developer machine and FAIL in CI (env CI set), so CI can never pass them by skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "alerts.yml"
UNIT_TESTS = ROOT / "tests" / "fixtures" / "alerts_test.yml"
TIMEOUT = 60


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail("promtool is required in CI: apt-get install prometheus")
        pytest.skip("promtool not installed (Debian package `prometheus`)")
    return path


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT,
        check=False,
    )


def _rules() -> list[dict[str, object]]:
    document = yaml.safe_load(RULES.read_text())
    groups = document["groups"]
    assert [group["name"] for group in groups] == ["edl"]
    rules: list[dict[str, object]] = groups[0]["rules"]
    return rules


def test_promtool_accepts_the_rules() -> None:
    result = _run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_alert_unit_tests_pass() -> None:
    result = _run("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # 85 % would then warn: the silent 0.85 series must catch it.
        ("edl_device_capacity_ratio > 0.9 and", "edl_device_capacity_ratio > 0.8 and"),
        # Without the upper bound, 120 % raises the warning as well as the critical.
        (" and edl_device_capacity_ratio <= 1", ""),
        # A shorter `for` fires at 10m, which the unit tests say must stay silent.
        ("for: 15m\n        labels:\n          severity: warning\n        annotations:\n"
         "          summary: \"Device {{ $labels.device }} uses",
         "for: 5m\n        labels:\n          severity: warning\n        annotations:\n"
         "          summary: \"Device {{ $labels.device }} uses"),
        # A feed republished hourly must not look stale.
        ("edl_feed_age_seconds > 3 * 3600", "edl_feed_age_seconds > 1800"),
        # Old 4xx (no new ones) must not alert.
        ("rate(edl_device_polls_total{status=~\"4.*\"}[15m])) > 0",
         "edl_device_polls_total{status=~\"4.*\"}) > 0"),
    ],
)
def test_unit_tests_catch_a_wrong_rule(tmp_path: Path, old: str, new: str) -> None:
    """The unit tests are not vacuous: a plausible mistake in a rule makes them fail."""
    rules = RULES.read_text()
    assert old in rules, f"deploy/alerts.yml no longer has {old!r}"
    (tmp_path / "deploy").mkdir()
    (tmp_path / "tests" / "fixtures").mkdir(parents=True)
    (tmp_path / "deploy" / "alerts.yml").write_text(rules.replace(old, new, 1))
    shutil.copyfile(UNIT_TESTS, tmp_path / "tests" / "fixtures" / "alerts_test.yml")
    assert _run("check", "rules", "deploy/alerts.yml", cwd=tmp_path).returncode == 0
    result = _run("test", "rules", "tests/fixtures/alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0, result.stdout
    assert "FAILED" in result.stdout + result.stderr


# --- structure, checked without promtool (runs everywhere) --------------------------------

def test_every_alert_has_a_severity_and_templated_annotations() -> None:
    rules = _rules()
    names = [str(rule["alert"]) for rule in rules]
    assert len(set(names)) == len(names)
    assert {"EdlFeedStale", "EdlDevicesStale", "EdlDevicesBehind", "EdlDeviceCapacityHigh",
            "EdlDeviceOverCapacity"} <= set(names)
    for rule in rules:
        labels, annotations = rule["labels"], rule["annotations"]
        assert isinstance(labels, dict)
        assert isinstance(annotations, dict)
        assert labels["severity"] in ("warning", "critical"), rule["alert"]
        assert "{{ $labels." in annotations["summary"], rule["alert"]
        assert "{{ $labels.profile }}" in annotations["description"], rule["alert"]
    by_name = {rule["alert"]: rule for rule in rules}
    assert by_name["EdlDeviceOverCapacity"]["labels"] == {"severity": "critical"}
    assert by_name["EdlDeviceCapacityHigh"]["for"] == "15m"
    assert by_name["EdlDevicesStale"]["for"] == "10m"


def test_every_alert_is_unit_tested_both_ways() -> None:
    """Each alert has a case where it fires and one where it must stay silent."""
    document = yaml.safe_load(UNIT_TESTS.read_text())
    assert document["rule_files"] == ["../../deploy/alerts.yml"]
    fires: set[str] = set()
    silent: set[str] = set()
    for case in document["tests"]:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else silent).add(check["alertname"])
    names = {str(rule["alert"]) for rule in _rules()}
    assert fires == names
    assert silent == names
