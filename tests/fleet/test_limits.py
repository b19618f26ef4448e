"""The vendor capacity table: model → family and figures, fallbacks, overrides, citations."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import yaml

from edl_api.fleet.limits import (
    KINDS,
    VENDORS,
    Capacity,
    LimitsDataError,
    capacity_for,
    indicator_kind,
    load_table,
    model_families,
    with_overrides,
)

LIMITS_TEXT = resources.files("edl_api.fleet").joinpath("limits.yaml").read_text("utf-8")


# PAN-OS 11.1 "External Dynamic List": (family, ip, fqdn, url) per model as operators type it.
PANOS_CASES = [
    ("PA-3220", "PA-3200", 150_000, 1_000_000, 100_000),
    ("PA-3260", "PA-3200", 150_000, 1_000_000, 100_000),
    ("pa-3250", "PA-3200", 150_000, 1_000_000, 100_000),
    ("PA3250", "PA-3200", 150_000, 1_000_000, 100_000),
    ("PA-5220", "PA-5200", 150_000, 4_000_000, 250_000),
    ("PA-5280", "PA-5200", 150_000, 4_000_000, 250_000),
    ("PA-5410", "PA-5400", 50_000, 4_000_000, 250_000),
    ("PA-7080", "PA-7000", 150_000, 500_000, 100_000),
    ("PA-7050 100G", "PA-7000-HC", 150_000, 4_000_000, 250_000),
    ("PA-3410", "PA-3400", 50_000, 1_000_000, 100_000),
    ("PA-440", "PA-400", 50_000, 1_000_000, 100_000),
    ("PA-460", "PA-400", 50_000, 1_000_000, 100_000),
    ("PA-410", "PA-220-class", 50_000, 50_000, 50_000),  # the PA-400 row excepts it
    ("PA-220", "PA-220-class", 50_000, 50_000, 50_000),
    ("PA-850", "PA-800", 50_000, 1_000_000, 100_000),
    ("PA-820", "PA-800", 50_000, 1_000_000, 100_000),
    ("VM-300", "VM-300", 50_000, 500_000, 100_000),
    ("PA-VM-500", "VM-500", 50_000, 2_000_000, 100_000),
    ("vm-700", "VM-500", 50_000, 2_000_000, 100_000),
    ("VM-50 Lite", "PA-220-class", 50_000, 50_000, 50_000),
    ("VM-100", "PA-220-class", 50_000, 50_000, 50_000),
    ("VM-1000-HV", "PA-220-class", 50_000, 50_000, 50_000),
]


@pytest.mark.parametrize(("model", "family", "ip", "fqdn", "url"), PANOS_CASES)
def test_panos_models_get_their_documented_family_and_figures(
    model: str, family: str, ip: int, fqdn: int, url: int
) -> None:
    capacity = capacity_for("panos", model)
    assert (capacity.family, capacity.ip, capacity.fqdn, capacity.url) == (family, ip, fqdn, url)
    assert capacity.lists == 30
    assert capacity.matched is True
    assert "PAN-OS 11.1" in capacity.source
    assert capacity.limit("ip") == ip
    assert capacity.limit("fqdn") == fqdn


@pytest.mark.parametrize(
    ("model", "family", "ip", "fqdn", "url"),
    [
        ("FortiGate 60F", "entry-level", 300_000, 1_000_000, 150_000),
        ("FGT-40F", "entry-level", 300_000, 1_000_000, 150_000),
        ("FortiWiFi-61F", "entry-level", 300_000, 1_000_000, 150_000),
        ("FG-601E", "mid-range", 300_000, 3_000_000, 300_000),  # the 677896 page's example
        ("FortiGate-100F", "mid-range", 300_000, 3_000_000, 300_000),
        ("FortiGate-1800F", "high-end", 300_000, 5_000_000, 2_000_000),
        ("FortiGate-6K", "high-end", 300_000, 5_000_000, 2_000_000),
    ],
)
def test_fortigate_tiers(model: str, family: str, ip: int, fqdn: int, url: int) -> None:
    capacity = capacity_for("fortinet", model)
    assert (capacity.family, capacity.ip, capacity.fqdn, capacity.url) == (family, ip, fqdn, url)
    assert capacity.matched is True
    assert "677896" in capacity.source
    assert capacity.lists is None  # FortiOS documents no feed-count limit


@pytest.mark.parametrize("model", [None, "", "   ", "PA-1410", "PA-9999", "firewall in rack 3"])
def test_unknown_or_missing_panos_model_gets_the_smallest_row_unmatched(
    model: str | None,
) -> None:
    capacity = capacity_for("panos", model)
    assert capacity.matched is False
    assert (capacity.ip, capacity.fqdn, capacity.url) == (50_000, 50_000, 50_000)


@pytest.mark.parametrize("vendor", VENDORS)
def test_each_vendor_fallback_is_no_more_generous_than_any_known_family(vendor: str) -> None:
    fallback = capacity_for(vendor, None)
    assert fallback.matched is (vendor == "generic")
    for family in model_families(vendor):
        assert family  # names are shown to operators in error messages
    # The fallback never promises more than a real row of the same vendor.
    table = yaml.safe_load(LIMITS_TEXT)["vendors"][vendor]["families"]
    for row in table:
        for kind in (*KINDS, "lists"):
            mine, theirs = getattr(fallback, kind), row[kind]
            assert theirs is None or (mine is not None and mine <= theirs), (row["family"], kind)


def test_fortigate_vm_is_not_guessed_into_a_tier() -> None:
    capacity = capacity_for("fortinet", "FortiGate-VM02")
    assert capacity.matched is False
    assert capacity.family == "entry-level"


def test_model_independent_vendors() -> None:
    checkpoint = capacity_for("checkpoint", "Quantum 6200")
    assert checkpoint.matched is True
    assert (checkpoint.ip, checkpoint.fqdn, checkpoint.url) == (2_000_000,) * 3
    assert "R81.20" in checkpoint.source
    cisco = capacity_for("cisco", "FPR-2130")
    assert (cisco.ip, cisco.fqdn, cisco.url, cisco.lists) == (None, None, None, None)
    assert cisco.matched is True
    assert "Custom Lists and Feeds" in cisco.source


def test_generic_has_no_limits_and_counts_as_matched() -> None:
    for model in (None, "anything", "PA-5220"):
        capacity = capacity_for("generic", model)
        assert capacity.matched is True
        assert [capacity.limit(kind) for kind in KINDS] == [None, None, None]
        assert capacity.lists is None


def test_every_row_cites_a_source() -> None:
    document = yaml.safe_load(LIMITS_TEXT)["vendors"]
    assert set(document) == set(VENDORS)
    for vendor, spec in document.items():
        for row in spec["families"]:
            assert row["source"].strip(), (vendor, row["family"])
            # A row without a figure says why (in its note) rather than leaving a blank.
            if vendor != "generic" and any(row[k] is None for k in (*KINDS, "lists")):
                assert row.get("note", "").strip(), (vendor, row["family"])
        if vendor in ("panos", "fortinet", "checkpoint", "cisco"):
            assert all("https://" in row["source"] for row in spec["families"]), vendor


def test_unknown_vendor_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown vendor"):
        capacity_for("juniper", "SRX300")
    with pytest.raises(ValueError, match="unknown vendor"):
        model_families("PANOS ")


def test_model_families_lists_the_table_rows() -> None:
    families = model_families("panos")
    assert families[0] == "PA-5200"
    assert {"PA-3200", "PA-7000", "PA-220-class"} <= set(families)
    assert model_families("fortinet") == ["entry-level", "mid-range", "high-end"]


def test_overrides_win_per_kind_and_say_so() -> None:
    base = capacity_for("panos", "PA-3260")
    capacity = with_overrides(base, {"ip": 120_000, "url": None})
    assert (capacity.ip, capacity.fqdn, capacity.url) == (120_000, base.fqdn, base.url)
    assert capacity.family == "PA-3200 + override"
    assert capacity.source.endswith(" + device override: ip")
    assert capacity.matched is True
    both = with_overrides(base, {"url": 10, "ip": 5})
    assert both.source.endswith(" + device override: ip, url")
    # Overrides may also raise a limit (the operator knows their hardware).
    assert with_overrides(base, {"fqdn": 3_000_000}).fqdn == 3_000_000
    # Nothing given → the row as it was.
    assert with_overrides(base, {}) == base
    assert with_overrides(base, {"ip": None}) == base
    # An override on generic turns "unlimited" into a budget.
    assert with_overrides(capacity_for("generic", None), {"fqdn": 1000}).fqdn == 1000


@pytest.mark.parametrize(
    "overrides", [{"lists": 5}, {"ips": 5}, {"ip": 0}, {"ip": -1}, {"ip": True}, {"ip": "5"}]
)
def test_bad_overrides_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="limit"):
        with_overrides(capacity_for("panos", "PA-220"), overrides)  # type: ignore[arg-type]


def test_capacity_limit_rejects_unknown_kind() -> None:
    capacity = capacity_for("panos", "PA-220")
    assert isinstance(capacity, Capacity)
    with pytest.raises(ValueError, match="capacity kind"):
        capacity.limit("lists")


@pytest.mark.parametrize(
    ("indicator_type", "kind"),
    [("ipv4", "ip"), ("ipv6", "ip"), ("cidr", "ip"), ("ip", "ip"), ("fqdn", "fqdn"),
     ("url", "url")],
)
def test_indicator_kind(indicator_type: str, kind: str) -> None:
    assert indicator_kind(indicator_type) == kind


def test_indicator_kind_rejects_unknown_types() -> None:
    for bad in ("domain", "IPV4", "", "hash"):
        with pytest.raises(ValueError, match="indicator type"):
            indicator_kind(bad)


# --- the data file is validated: every defect is named, none slips through -----------------

def _broken(edit: str) -> str:
    document = yaml.safe_load(LIMITS_TEXT)
    rows = document["vendors"]["panos"]["families"]
    if edit == "missing key":
        del rows[0]["url"]
    elif edit == "zero limit":
        rows[0]["ip"] = 0
    elif edit == "string limit":
        rows[0]["ip"] = "150k"
    elif edit == "bool limit":
        rows[0]["lists"] = True
    elif edit == "empty source":
        rows[0]["source"] = "  "
    elif edit == "bad pattern":
        rows[0]["patterns"] = ["pa-(52"]
    elif edit == "no patterns":
        rows[0]["patterns"] = []
    elif edit == "unknown key":
        rows[0]["ipv4"] = 5
    elif edit == "duplicate family":
        rows[1]["family"] = rows[0]["family"]
    elif edit == "default not conservative":
        document["vendors"]["panos"]["default_family"] = "PA-5200"
    elif edit == "default missing":
        document["vendors"]["panos"]["default_family"] = "PA-9000"
    elif edit == "vendor missing":
        del document["vendors"]["cisco"]
    elif edit == "generic limited":
        document["vendors"]["generic"]["families"][0]["ip"] = 5
    return yaml.safe_dump(document)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("missing key", "missing url"),
        ("zero limit", "ip must be an integer >= 1"),
        ("string limit", "ip must be an integer >= 1"),
        ("bool limit", "lists must be an integer >= 1"),
        ("empty source", "source must be"),
        ("bad pattern", "does not compile"),
        ("no patterns", "patterns must be"),
        ("unknown key", "unknown keys ipv4"),
        ("duplicate family", "unique"),
        ("default not conservative", "most conservative"),
        ("default missing", "is not a family"),
        ("vendor missing", "must be exactly"),
        ("generic limited", "no limits"),
    ],
)
def test_broken_data_is_refused(edit: str, message: str) -> None:
    with pytest.raises(LimitsDataError, match=message):
        load_table(_broken(edit))


def test_not_yaml_is_refused() -> None:
    with pytest.raises(LimitsDataError, match="not valid YAML"):
        load_table("vendors: [unclosed")


def test_shipped_file_loads() -> None:
    assert set(load_table(LIMITS_TEXT)) == set(VENDORS)


def test_a_broken_shipped_file_fails_the_import(tmp_path: Path) -> None:
    """The module validates at import: a package shipped with a bad table cannot start."""
    package = tmp_path / "edl_api"
    (package / "fleet").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "fleet" / "__init__.py").write_text("")
    source = resources.files("edl_api.fleet").joinpath("limits.py").read_text("utf-8")
    (package / "fleet" / "limits.py").write_text(source)
    (package / "fleet" / "limits.yaml").write_text(_broken("zero limit"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", "import edl_api.fleet.limits"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode != 0
    assert "LimitsDataError" in result.stderr
    assert "ip must be an integer >= 1" in result.stderr
    # The same copy with the good file imports fine (the failure is the data, not the copy).
    shutil.copyfile(
        str(resources.files("edl_api.fleet").joinpath("limits.yaml")),
        package / "fleet" / "limits.yaml",
    )
    ok = subprocess.run(
        [sys.executable, "-c", "import edl_api.fleet.limits as m; print(m.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert str(tmp_path) in ok.stdout
