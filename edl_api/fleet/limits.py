"""The vendor capacity table: how many EDL entries a firewall loads, summed over its lists.

The figures are data (limits.yaml, shipped in the package), each row citing the vendor
document it comes from. The file is read and validated once at import: a malformed row is
a packaging bug and must fail loudly, not budget a firewall with a wrong number.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

import yaml

VENDORS: tuple[str, ...] = ("panos", "fortinet", "checkpoint", "cisco", "generic")
KINDS: tuple[str, ...] = ("ip", "fqdn", "url")

_LIMIT_KEYS = (*KINDS, "lists")
_ROW_KEYS = frozenset({"family", "patterns", *_LIMIT_KEYS, "source"})
_OPTIONAL_ROW_KEYS = frozenset({"note"})
# Feed indicator types → the capacity they consume. PAN-OS and FortiOS count a CIDR or a
# range as one IP entry (see limits.yaml), so every IP-ish type shares the "ip" budget.
_KIND_OF_TYPE = {"ipv4": "ip", "ipv6": "ip", "cidr": "ip", "ip": "ip", "fqdn": "fqdn", "url": "url"}


class LimitsDataError(ValueError):
    """limits.yaml does not have the shape this module relies on."""


@dataclass(frozen=True, slots=True)
class Capacity:
    vendor: str
    family: str  # the table row that matched, e.g. "PA-5200" or "default"
    ip: int | None  # None = no known limit
    fqdn: int | None
    url: int | None
    lists: int | None  # max number of lists/EDLs on the device
    source: str  # the citation of the row
    matched: bool  # False: model unknown/missing, vendor's most conservative row used

    def limit(self, kind: str) -> int | None:
        """The entry limit for a capacity kind (ip, fqdn, url)."""
        if kind not in KINDS:
            raise ValueError(f"unknown capacity kind {kind!r}; expected one of {', '.join(KINDS)}")
        value: int | None = getattr(self, kind)
        return value


@dataclass(frozen=True, slots=True)
class _Row:
    capacity: Capacity  # matched=True; callers flip it for the fallback
    patterns: tuple[re.Pattern[str], ...]


@dataclass(frozen=True, slots=True)
class _Vendor:
    rows: tuple[_Row, ...]
    default: Capacity  # matched=False


def _fail(where: str, problem: str) -> LimitsDataError:
    return LimitsDataError(f"limits.yaml: {where}: {problem}")


def _limit_value(where: str, key: str, value: Any) -> int | None:
    # bool is an int subclass; `true` as a limit is a typo, not 1.
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(where, f"{key} must be an integer >= 1 or null, got {value!r}")
    return value


def _parse_row(vendor: str, index: int, raw: Any) -> _Row:
    where = f"{vendor} row {index}"
    if not isinstance(raw, dict):
        raise _fail(where, "must be a mapping")
    missing = _ROW_KEYS - raw.keys()
    unknown = raw.keys() - _ROW_KEYS - _OPTIONAL_ROW_KEYS
    if missing:
        raise _fail(where, f"missing {', '.join(sorted(missing))}")
    if unknown:
        raise _fail(where, f"unknown keys {', '.join(sorted(map(str, unknown)))}")
    family, source, patterns = raw["family"], raw["source"], raw["patterns"]
    if not isinstance(family, str) or not family.strip():
        raise _fail(where, "family must be a non-empty string")
    where = f"{vendor} {family}"
    if not isinstance(source, str) or not source.strip():
        raise _fail(where, "source must be a non-empty citation")
    if not isinstance(patterns, list) or not patterns:
        raise _fail(where, "patterns must be a non-empty list")
    compiled = []
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise _fail(where, f"pattern {pattern!r} must be a non-empty string")
        try:
            compiled.append(re.compile(pattern, re.IGNORECASE))
        except re.error as exc:
            raise _fail(where, f"pattern {pattern!r} does not compile: {exc}") from exc
    limits = {key: _limit_value(where, key, raw[key]) for key in _LIMIT_KEYS}
    capacity = Capacity(
        vendor=vendor, family=family, ip=limits["ip"], fqdn=limits["fqdn"], url=limits["url"],
        lists=limits["lists"], source=" ".join(source.split()), matched=True,
    )
    return _Row(capacity, tuple(compiled))


def _at_most(a: int | None, b: int | None) -> bool:
    """a is no more generous than b (None = unlimited)."""
    return b is None or (a is not None and a <= b)


def _parse_vendor(vendor: str, raw: Any) -> _Vendor:
    if not isinstance(raw, dict) or not isinstance(raw.get("families"), list):
        raise _fail(vendor, "must be a mapping with a families list")
    rows = tuple(_parse_row(vendor, i, row) for i, row in enumerate(raw["families"]))
    if not rows:
        raise _fail(vendor, "has no families")
    names = [row.capacity.family for row in rows]
    if len(set(names)) != len(names):
        raise _fail(vendor, "family names must be unique")
    by_name = {row.capacity.family: row.capacity for row in rows}
    default_name = raw.get("default_family")
    default = by_name.get(default_name) if isinstance(default_name, str) else None
    if default is None:
        raise _fail(vendor, f"default_family {default_name!r} is not a family")
    # The fallback for an unknown model must never promise more than any known model.
    for other in rows:
        for key in _LIMIT_KEYS:
            if not _at_most(getattr(default, key), getattr(other.capacity, key)):
                raise _fail(vendor, f"default_family {default.family} is not the most "
                                    f"conservative: {other.capacity.family} has a smaller {key}")
    return _Vendor(rows, replace(default, matched=False))


def parse_table(document: Any) -> dict[str, _Vendor]:
    """Validate a loaded limits document; raises LimitsDataError on any defect."""
    if not isinstance(document, dict) or not isinstance(document.get("vendors"), dict):
        raise _fail("top level", "must be a mapping with a vendors mapping")
    vendors = document["vendors"]
    if set(vendors) != set(VENDORS):
        raise _fail("vendors", f"must be exactly {', '.join(VENDORS)}, got {sorted(vendors)}")
    table = {vendor: _parse_vendor(vendor, vendors[vendor]) for vendor in VENDORS}
    generic = table["generic"].rows
    if any(row.capacity.limit(k) is not None for row in generic for k in KINDS):
        raise _fail("generic", "must have no limits")
    return table


def load_table(text: str) -> dict[str, _Vendor]:
    """Parse and validate limits YAML text."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LimitsDataError(f"limits.yaml: not valid YAML: {exc}") from exc
    return parse_table(document)


_TABLE = load_table(resources.files("edl_api.fleet").joinpath("limits.yaml").read_text("utf-8"))


def _normalise(model: str) -> str:
    # "FortiGate 60F", "PA_3220", " pa-3250 " → "fortigate-60f", "pa-3220", "pa-3250"
    return re.sub(r"[\s_]+", "-", model.strip().lower())


def _vendor(vendor: str) -> _Vendor:
    try:
        return _TABLE[vendor]
    except KeyError:
        raise ValueError(
            f"unknown vendor {vendor!r}; expected one of {', '.join(VENDORS)}"
        ) from None


def capacity_for(vendor: str, model: str | None) -> Capacity:
    """The row for `model` (case-insensitive match on a per-row list of regex patterns,
    e.g. PA-3220 / PA-3260 / "pa-3250" → PA-3200 family). Unknown or missing model → the
    vendor's most conservative row with matched=False. generic → all None, matched=True.
    Unknown vendor → ValueError."""
    table = _vendor(vendor)
    if vendor == "generic":
        return table.rows[0].capacity
    if model is not None and model.strip():
        wanted = _normalise(model)
        for row in table.rows:
            if any(pattern.match(wanted) for pattern in row.patterns):
                return row.capacity
    return table.default


def with_overrides(capacity: Capacity, overrides: Mapping[str, int | None]) -> Capacity:
    """`limits` given on the device win per kind (keys ip/fqdn/url); family/source say
    'override' for the overridden kinds (e.g. source gets ' + device override: ip').

    A None value means "not given" (the table's figure stays): a missing override must
    never silently lift a firewall's cap to unlimited."""
    given: dict[str, int] = {}
    for kind, value in overrides.items():
        if kind not in KINDS:
            raise ValueError(f"unknown limit {kind!r}; expected one of {', '.join(KINDS)}")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"limit {kind} must be an integer >= 1, got {value!r}")
        given[kind] = value
    if not given:
        return capacity
    kinds = ", ".join(kind for kind in KINDS if kind in given)
    return replace(
        capacity,
        family=f"{capacity.family} + override",
        source=f"{capacity.source} + device override: {kinds}",
        ip=given.get("ip", capacity.ip),
        fqdn=given.get("fqdn", capacity.fqdn),
        url=given.get("url", capacity.url),
    )


def model_families(vendor: str) -> list[str]:
    """The family names of a vendor (for error messages / docs)."""
    return [row.capacity.family for row in _vendor(vendor).rows]


def indicator_kind(indicator_type: str) -> str:
    """Feed type → capacity kind: ipv4, ipv6, cidr, ip → "ip"; fqdn → "fqdn"; url → "url"."""
    try:
        return _KIND_OF_TYPE[indicator_type]
    except KeyError:
        raise ValueError(f"unknown indicator type {indicator_type!r}") from None
