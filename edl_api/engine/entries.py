"""What the engine publishes: the feed types and one entry of a feed with its provenance."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from edl_api.engine.config import INDICATOR_TYPES, OUTPUT_TYPES

FEED_TYPES: tuple[str, ...] = OUTPUT_TYPES
# The indicator types a feed is made of: the combined `ip` feed holds hosts and networks.
BASE_TYPES: dict[str, tuple[str, ...]] = {
    **{kind: (kind,) for kind in INDICATOR_TYPES},
    "ip": ("ipv4", "ipv6", "cidr"),
}


@dataclass(slots=True)
class FeedEntry:
    value: str
    indicator_type: str  # ipv4 | ipv6 | cidr | fqdn | url
    sources: list[str]
    tags: list[str]
    confidence: int
    first_seen: datetime | None = None
    last_seen: datetime | None = None
