"""Sources that are conversations, not one body: TAXII 2.1 collections and MISP feeds.

A collector makes several requests through one `Fetcher` (the source's SSRF guard,
headers, Basic auth, deadline and byte caps all apply to every request), returns the
source's entries as `Observation`s and the state it wants back next run (a TAXII
`added_after` cursor, a MISP manifest's event timestamps, the objects seen so far), so a
refresh asks only for what is new. The pipeline owns the state: it hands a collector its
previous `data` only when the source's identity (`state_key`) is unchanged and
`refetch` is not `full`, and stores what it returns after a successful run.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from edl_api.engine.config import SourceConfig
from edl_api.engine.observations import Observation
from edl_api.engine.sources import Fetched


class Fetcher(Protocol):
    async def __call__(
        self, url: str, *, method: str = "GET", headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Fetched:
        """One request of this source (raises `SourceError`); `headers` add to the
        source's own (an `Accept`, a `Content-Type`)."""
        ...


@dataclass
class Collected:
    observations: list[Observation]
    state: dict[str, Any] | None  # JSON-able; None: nothing to remember
    records: int = 0  # objects / attributes read (the report's `lines`)
    invalid: Counter[str] = field(default_factory=Counter)  # e.g. unsupported_pattern
    requests: int = 0


# Records a source gives that are deliberately not ours to publish (a MISP file hash, a
# TAXII pattern on a process): counted in the report, but never as garbage against
# `min_valid_percent`: a threat feed of mostly hashes is still a working feed.
NOT_FOR_US = frozenset({
    "not_ids", "unsupported_type", "unsupported_pattern", "unsupported_pattern_type",
    "partial_pattern",
})

# (source, fetch, previous state data or None, now in epoch seconds) -> Collected
Collector = Callable[[SourceConfig, Fetcher, dict[str, Any] | None, float], Awaitable[Collected]]


def collector(source_format: str) -> Collector | None:
    """The collector of a format, None for the one-body formats (text, csv, json …)."""
    if source_format == "taxii":
        from edl_api.engine.taxii import collect_taxii

        return collect_taxii
    if source_format == "misp":
        from edl_api.engine.misp import collect_misp

        return collect_misp
    return None


def state_key(source: SourceConfig) -> str:
    """What a source's remembered state belongs to: a different server, collection, format
    or filter is a different source, whose old state must not be reused."""
    identity = {
        "url": source.url, "path": source.path, "format": source.format,
        "collection": source.collection, "filters": source.filters,
        "include_non_ids": source.include_non_ids, "types": source.types,
        "column": source.column, "date_column": source.date_column, "query": source.query,
        "records": source.records, "date_query": source.date_query,
    }
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]
