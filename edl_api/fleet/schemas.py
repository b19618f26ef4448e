"""Device requests and views."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from edl_api.engine.entries import FEED_TYPES
from edl_api.feeds.render import FORMATS
from edl_api.schemas import DbId, Name, RequestModel

Vendor = Literal["panos", "fortinet", "checkpoint", "cisco", "generic"]
Model = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
EntryLimit = Annotated[int, Field(ge=1, le=100_000_000)]
# Longer than any firewall's refresh interval (PAN-OS: monthly at most), shorter than a year.
PollMinutes = Annotated[int, Field(ge=1, le=60 * 24 * 31)]


class DeviceFeedIn(RequestModel):
    pipeline_id: DbId
    indicator_type: str = Field(description=f"one of {', '.join(FEED_TYPES)}")
    format: str = Field(default="plain", description="the vendor format of the list URL")
    priority: int = Field(
        default=0, ge=-1000, le=1000,
        description="higher is served whole first when the kind's limit is short",
    )

    @field_validator("indicator_type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in FEED_TYPES:
            raise ValueError(f"must be one of {', '.join(FEED_TYPES)}")
        return value

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in FORMATS:
            raise ValueError(f"must be one of {', '.join(FORMATS)}")
        return value


class DeviceLimits(RequestModel):
    """Entry limits that override the vendor table's row for the model."""

    ip: EntryLimit | None = None
    fqdn: EntryLimit | None = None
    url: EntryLimit | None = None


_EXAMPLE: dict[str, Any] = {
    "name": "pa-edge-01", "vendor": "panos", "model": "PA-3260",
    "feeds": [{"pipeline_id": 1, "indicator_type": "ip", "format": "panos", "priority": 10}],
    "expected_poll_minutes": 5,
}


class DeviceCreate(RequestModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    name: Name
    vendor: Vendor = "generic"
    model: Model | None = None
    limits: DeviceLimits | None = None
    feeds: list[DeviceFeedIn] = Field(default_factory=list, max_length=64)
    expected_poll_minutes: PollMinutes = 60
    idempotency_key: str | None = Field(default=None, max_length=200)


class DeviceUpdate(RequestModel):
    """Only the fields given change; `feeds` replaces the whole list."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"limits": {"ip": 100000}, "expected_poll_minutes": 15}
    ]})

    name: Name | None = None
    vendor: Vendor | None = None
    model: Model | None = None
    limits: DeviceLimits | None = None
    feeds: list[DeviceFeedIn] | None = Field(default=None, max_length=64)
    expected_poll_minutes: PollMinutes | None = None


class KindUse(BaseModel):
    """One capacity kind of one device: what its feeds of that kind add up to."""

    kind: str
    used: int = Field(description="entries the device is served of this kind (after cuts)")
    published: int = Field(description="entries its feeds of this kind publish, uncut")
    limit: int | None
    lists: int
    ratio: float | None = Field(
        description="published / limit (over 1: entries are cut to fit)"
    )
    cut: dict[str, int] = Field(
        default_factory=dict, description="feed (pipeline_id/type) → entries cut to fit"
    )
    warning: str | None = None


class DeviceFeedView(BaseModel):
    pipeline_id: int
    indicator_type: str
    format: str
    priority: int
    url: str
    allocated: int | None = Field(description="entries this feed may use of the limit")
    latest_run_id: int | None
    served_run_id: int | None
    up_to_date: bool
    last_status: int | None
    last_seen_at: datetime | None
    entries_served: int | None
    truncated: int


class DevicePublic(BaseModel):
    id: int
    profile_id: int
    name: str
    vendor: str
    model: str | None
    family: str = Field(description="the vendor table's row the model matched")
    limits: dict[str, int | None] = Field(description="effective entry limits per kind")
    limits_source: str = Field(description="where the limits come from")
    lists_limit: int | None
    expected_poll_minutes: int
    pipeline_ids: list[int] | None = Field(
        description="devices without declared feeds (old feed tokens): pipelines they read"
    )
    feeds: list[DeviceFeedView]
    created_at: datetime
    updated_at: datetime
    revoked_at: datetime | None
    last_seen_at: datetime | None
    last_address: str | None
    stale: bool = Field(description="has not polled within expected_poll_minutes")
    behind: bool = Field(
        description="served an older version than the latest for longer than that"
    )
    up_to_date: bool
    capacity: list[KindUse]
    warnings: list[str]


class DeviceCreated(DevicePublic):
    token: str | None = Field(
        description="shown only in this response; the feed password (HTTP Basic) or X-API-Key"
    )


class PollPublic(BaseModel):
    """Polls of one feed with one answer in one flush window (`polls` of them)."""

    model_config = ConfigDict(from_attributes=True)

    first_at: datetime
    last_at: datetime
    pipeline_id: int | None = Field(description="None: the global feed")
    indicator_type: str
    format: str
    status: int
    etag: str | None
    run_ids: str
    address: str | None
    polls: int
    bytes: int
    entries: int | None
    truncated: int
