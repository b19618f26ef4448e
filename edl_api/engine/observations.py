"""Entries that carry more than their value: what rich sources (STIX, TAXII, MISP, a CSV
`date_column`, a JSON `date_query`) say about each one.

Plain text sources stay on the fast string path (`parsers.parse`); a source whose entries
have dates, an expiry or their own tags yields `Observation`s instead. Times are epoch
seconds (UTC) so the engine compares floats, never datetimes, in its loops.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

DAY_SECONDS = 86_400.0
# Tag grammar of the config (`config.Tag`): what a source's own label is turned into.
_TAG_BAD = re.compile(r"[^A-Za-z0-9._:/+-]+")
_TAG_MAX = 64
# Epoch seconds as text (MISP's `timestamp`), 9-11 digits: 1973..5138, never a year.
_EPOCH = re.compile(r"\d{9,11}(\.\d+)?")


@dataclass(slots=True, frozen=True)
class Observation:
    value: str
    seen: float | None = None  # the source's date of this entry (judged by max_age_days)
    valid_until: float | None = None  # the source's own end of validity (STIX valid_until)
    tags: tuple[str, ...] = ()  # the entry's own labels, already in the tag grammar


def parse_when(value: object) -> float | None:
    """Epoch seconds of a source's date, or None when it is not one.

    Accepts ISO 8601 (`2026-11-30T10:00:00Z`, `2026-11-30T10:00:00.123+01:00`, a bare
    `2026-11-30`), abuse.ch's `2026-11-30 10:00:00`, and epoch seconds as a number or
    digits. A time without a zone is UTC.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
        return number if 0 < number < 1e11 else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > 64:
        return None
    if _EPOCH.fullmatch(text):
        return float(text)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def as_tag(text: str) -> str | None:
    """A source's label (`tlp:white`, `misp-galaxy:threat-actor="APT 28"`) in the config's
    tag grammar: other characters become `-`, at most 64; None when nothing is left."""
    cleaned = _TAG_BAD.sub("-", text.strip()).strip("-._:/+")[:_TAG_MAX].rstrip("-")
    return cleaned or None


def iso(moment: float) -> str:
    """Epoch seconds as the ISO 8601 UTC text the report and explain show."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
