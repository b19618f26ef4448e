"""What a device's credential carries into every poll: its declared feeds and the
capacity they share (resolved once when the key is verified, cached with the principal)."""

from __future__ import annotations

from dataclasses import dataclass, field

from edl_api.fleet.limits import capacity_for, indicator_kind, with_overrides
from edl_api.models import Device


@dataclass(frozen=True, slots=True)
class DeviceFeed:
    pipeline_id: int
    indicator_type: str
    fmt: str = "plain"
    priority: int = 0  # higher is served whole first when the kind's limit is short


# A capacity kind's declared feeds as (pipeline_id, indicator_type, priority).
KindFeeds = tuple[tuple[int, str, int], ...]


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    id: int
    profile_id: int
    name: str
    vendor: str
    model: str | None
    feeds: tuple[DeviceFeed, ...]
    # The effective entry limit per capacity kind (ip, fqdn, url): the vendor table's row
    # for the model with the device's overrides; None = no known limit.
    ip_limit: int | None = None
    fqdn_limit: int | None = None
    url_limit: int | None = None
    expected_poll_minutes: int = 60
    # Derived from `feeds` once (a spec lives as long as its cached principal), so a poll
    # does not regroup the feeds by kind.
    _by_kind: dict[str, KindFeeds] = field(
        init=False, repr=False, compare=False, hash=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        for feed in self.feeds:
            kind = indicator_kind(feed.indicator_type)
            self._by_kind[kind] = (
                *self._by_kind.get(kind, ()),
                (feed.pipeline_id, feed.indicator_type, feed.priority),
            )

    def kind_feeds(self, indicator_type: str) -> KindFeeds:
        """The declared feeds that share `indicator_type`'s capacity kind (its limit)."""
        return self._by_kind.get(indicator_kind(indicator_type), ())

    @property
    def budgeted(self) -> bool:
        """A device with declared feeds reads only those, each cut to its share."""
        return bool(self.feeds)

    def limit(self, kind: str) -> int | None:
        if kind == "ip":
            return self.ip_limit
        if kind == "fqdn":
            return self.fqdn_limit
        if kind == "url":
            return self.url_limit
        raise ValueError(f"unknown capacity kind {kind!r}")

    def feed(self, pipeline_id: int, indicator_type: str) -> DeviceFeed | None:
        for feed in self.feeds:
            if feed.pipeline_id == pipeline_id and feed.indicator_type == indicator_type:
                return feed
        return None


def spec_of(device: Device) -> DeviceSpec:
    """The spec a verified device key carries (the vendor table's limits, overridden)."""
    assert device.id is not None
    capacity = with_overrides(capacity_for(device.vendor, device.model), device.limits or {})
    return DeviceSpec(
        id=device.id, profile_id=device.profile_id, name=device.name, vendor=device.vendor,
        model=device.model,
        feeds=tuple(
            DeviceFeed(int(f["pipeline_id"]), str(f["indicator_type"]),
                       str(f.get("format") or "plain"), int(f.get("priority") or 0))
            for f in device.feeds
        ),
        ip_limit=capacity.ip, fqdn_limit=capacity.fqdn, url_limit=capacity.url,
        expected_poll_minutes=device.expected_poll_minutes,
    )
