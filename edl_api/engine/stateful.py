"""What the pipeline keeps per source between runs, and the sources that are more than a
list of strings: collectors' conversations, dated CSV/JSON records, entries with tags.

State of one source, as the run layer stores it: `{"key": collect.state_key(source),
"data": {"collector": <the collector's own state>, "first_seen": {value: epoch}}}` (each
part only when used). A stored state counts only while its key matches the source; the
collector part is also ignored with `refetch: full` (first_seen is our own knowledge and
survives a full re-pull).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edl_api.engine import collect
from edl_api.engine.collect import Collected, state_key
from edl_api.engine.config import SourceConfig
from edl_api.engine.entries import FeedEntry
from edl_api.engine.indicators import classify
from edl_api.engine.limits import ByteBudget
from edl_api.engine.observations import Observation, parse_when
from edl_api.engine.parsers import ParseStats, decode, parse_csv_rows, parse_json_records
from edl_api.engine.sources import Fetched, Resolver, SourceError, SsrfPolicy, fetch_url

if TYPE_CHECKING:
    import httpx

SourceState = dict[str, Any]  # {"key": str, "data": dict}


def is_stateful(source: SourceConfig) -> bool:
    """Sources whose next run needs something of this one."""
    return collect.collector(source.format) is not None or source.max_age_days is not None


@dataclass(frozen=True)
class Previous:
    collector: dict[str, Any] | None = None
    first_seen: Mapping[str, float] | None = None


def previous_of(source: SourceConfig, stored: Mapping[str, SourceState] | None) -> Previous:
    """The part of the stored state this run may use (nothing of another identity)."""
    entry = (stored or {}).get(source.name)
    if not isinstance(entry, dict) or entry.get("key") != state_key(source):
        return Previous()
    data = entry.get("data")
    if not isinstance(data, dict):
        return Previous()
    collected = data.get("collector")
    first_seen = data.get("first_seen")
    return Previous(
        collected if isinstance(collected, dict) and source.refetch != "full" else None,
        first_seen if isinstance(first_seen, dict) else None,
    )


def new_state(
    source: SourceConfig, collected: dict[str, Any] | None, first_seen: dict[str, float] | None
) -> SourceState | None:
    data: dict[str, Any] = {}
    if collected is not None:
        data["collector"] = collected
    if first_seen is not None:
        data["first_seen"] = first_seen
    return {"key": state_key(source), "data": data} if data else None


class SourceFetcher:
    """The `collect.Fetcher` of one source: every request through `fetch_url` (the SSRF
    guard, headers, Basic auth, the run byte budget); `max_bytes` caps the source's total
    over all its requests, not each one."""

    def __init__(
        self, client: httpx.AsyncClient, source: SourceConfig, policy: SsrfPolicy,
        resolver: Resolver | None, available: Mapping[str, str], secrets: set[str],
        budget: ByteBudget | None,
    ) -> None:
        self.client = client
        self.source = source
        self.policy = policy
        self.resolver = resolver
        self.available = available
        self.secrets = secrets
        self.budget = budget
        self.bytes = 0
        self.requests = 0

    def _too_large(self) -> SourceError:
        return SourceError(f"source is larger than max_bytes ({self.source.max_bytes}, "
                           f"over {self.requests} requests)")

    async def __call__(
        self, url: str, *, method: str = "GET", headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Fetched:
        left = self.source.max_bytes - self.bytes
        if left <= 0:
            raise self._too_large()
        # This request may hold only what the source has left.
        capped = self.source.model_copy(update={"max_bytes": left})
        self.requests += 1
        try:
            fetched = await fetch_url(
                self.client, capped, self.policy, self.resolver, self.available, self.secrets,
                self.budget, url=url, method=method, body=body, extra_headers=headers,
            )
        except SourceError as exc:
            if str(exc).startswith("source is larger than max_bytes"):
                raise self._too_large() from None
            raise
        self.bytes += len(fetched.data)
        return fetched


def parse_observations(
    source: SourceConfig, data: bytes, stats: ParseStats, now: float
) -> list[Observation] | None:
    """A one-body source's entries as observations when its format gives dates, expiry or
    tags; None for the plain string path (text, regex, csv without date_column …)."""
    if source.format == "csv" and source.date_column is not None:
        return [Observation(v, parse_when(when) if when else None)
                for v, when in parse_csv_rows(decode(data), source, stats, source.date_column)]
    if source.format == "json" and source.records is not None:
        return [Observation(v, parse_when(when) if when is not None else None)
                for v, when in parse_json_records(decode(data), source, stats)]
    if source.format == "stix":  # valid_until, labels, dates: expiry applies
        # The pattern parser (ANTLR) loads only for runs that have STIX.
        from edl_api.engine.stixpatterns import parse_stix_observations

        return parse_stix_observations(decode(data), stats, now)
    return None


def merge_collected(collected: Collected, stats: ParseStats) -> list[Observation]:
    """A collector's observations; its records and invalid counts go to the parse stats."""
    stats.lines += collected.records
    stats.invalid.update(collected.invalid)
    return collected.observations


class ExtraTags:
    """Tags a source gave single entries (MISP tags, STIX labels), by normalised entry;
    merged into the built feed entries, which otherwise carry their sources' tags only."""

    def __init__(self) -> None:
        self.by_entry: dict[tuple[str, str], set[str]] = {}

    def add(self, observations: list[Observation]) -> None:
        for item in observations:
            if not item.tags:
                continue
            for indicator in classify(item.value).indicators:
                key = (indicator.indicator_type, indicator.value)
                self.by_entry.setdefault(key, set()).update(item.tags)

    def apply(self, entries: list[FeedEntry]) -> None:
        """In place; a changed entry gets a list of its own (entries share tag lists)."""
        if not self.by_entry:
            return
        for entry in entries:
            extra = self.by_entry.get((entry.indicator_type, entry.value))
            if extra and not extra.issubset(entry.tags):
                entry.tags = sorted(extra.union(entry.tags))


def values_of(observations: list[Observation]) -> Iterator[str]:
    for item in observations:
        yield item.value
