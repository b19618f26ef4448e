"""Expiry: which entries of a source have aged out, judged once per run at `now`.

The rule (docs/config.md, "Expiry"): an entry is expired when its own `valid_until` is at
or before `now`, or when the source has `max_age_days` and the entry is older than that:
by the date the source gives (`seen`: a CSV `date_column`, a JSON `date_query`, STIX
`modified`, MISP `timestamp`) or, for an entry without one, by when this source first
gave it (`first_seen`, remembered across runs in the source's state). Expired entries are
not ingested; the pipeline counts them and records them for explain.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from edl_api.engine.indicators import TRIM
from edl_api.engine.observations import DAY_SECONDS, Observation


def _day(moment: float) -> str:
    # Day precision on purpose: explain stores one reason per distinct detail text, so
    # a date per second would make one reason per expired entry.
    try:
        return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d")
    except (OverflowError, OSError, ValueError):
        return "?"


def expired_because(
    seen: float | None, valid_until: float | None, now: float, max_age_days: int | None,
    first_seen: float | None = None,
) -> str | None:
    """Why an entry is expired at `now` (the explain detail), or None while it is live.

    `seen` is the source's date of the entry; `first_seen` (used only without `seen`) is
    when this source first gave it."""
    if valid_until is not None and valid_until <= now:
        return f"valid_until {_day(valid_until)} has passed"
    if max_age_days is None:
        return None
    cutoff = now - max_age_days * DAY_SECONDS
    if seen is not None:
        if seen < cutoff:
            return f"older than max_age_days {max_age_days} (dated {_day(seen)})"
        return None
    if first_seen is not None and first_seen < cutoff:
        return (f"older than max_age_days {max_age_days} (first seen {_day(first_seen)}; "
                "the source gives no date)")
    return None


@dataclass
class Aging:
    """One source's pass through the expiry rule.

    `previous_first_seen` is the source's remembered {value: first epoch}; `first_seen`
    is the new map (None when the source has no `max_age_days`): every undated value the
    source gives now, expired ones included (else an expired entry would come back as new
    next run), and no value the source stopped giving."""

    now: float
    max_age_days: int | None
    previous_first_seen: Mapping[str, float] = field(default_factory=dict)
    expired: list[tuple[str, str]] = field(default_factory=list)  # (value, why)
    undated: int = 0  # entries without a source date, judged by first_seen
    first_seen: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if self.max_age_days is not None:
            self.first_seen = {}

    def _first(self, value: str) -> float:
        assert self.first_seen is not None
        found = self.first_seen.get(value)
        if found is None:
            previous = self.previous_first_seen.get(value)
            found = previous if isinstance(previous, int | float) else self.now
            self.first_seen[value] = found
        return found

    def admit(self, observations: Iterable[Observation]) -> list[Observation]:
        """The live observations; expired ones go to `expired`."""
        live: list[Observation] = []
        append = live.append
        tracking = self.first_seen is not None
        for item in observations:
            value = item.value.strip(TRIM)
            first = None
            if item.seen is None and tracking:
                self.undated += 1
                first = self._first(value)
            why = expired_because(item.seen, item.valid_until, self.now, self.max_age_days,
                                  first)
            if why is None:
                append(item)
            else:
                self.expired.append((value, why))
        return live

    def admit_tokens(self, tokens: Iterable[str]) -> list[str]:
        """A plain source's tokens (no dates): judged by first_seen alone."""
        if self.first_seen is None:
            return list(tokens)
        assert self.max_age_days is not None
        cutoff = self.now - self.max_age_days * DAY_SECONDS
        live: list[str] = []
        for token in tokens:
            value = token.strip(TRIM)
            first = self._first(value)
            if first < cutoff:
                self.expired.append((value, expired_because(
                    None, None, self.now, self.max_age_days, first) or "expired"))
            else:
                live.append(token)
        return live
