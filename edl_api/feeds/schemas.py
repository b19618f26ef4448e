from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from edl_api.schemas import DbId, Name, RequestModel


class FeedTokenCreate(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "pa-fw-01", "pipeline_ids": [1, 2]}]}
    )

    name: Name
    pipeline_ids: list[DbId] | None = Field(
        default=None, max_length=1000,
        description="pipelines this token may read; omitted or null: all of the profile's",
    )
    idempotency_key: str | None = Field(default=None, max_length=200)


class FeedTokenPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    profile_id: int
    name: str
    pipeline_ids: list[int] | None
    created_at: datetime
    revoked_at: datetime | None = None


class FeedTokenCreated(FeedTokenPublic):
    token: str | None = Field(description="shown only in this response")


class FeedState(BaseModel):
    count: int
    sha256: str
    updated_at: datetime
    run_id: int


class LastRun(BaseModel):
    id: int
    state: str
    finished_at: datetime | None


class ActivePipeline(BaseModel):
    pipeline_id: int
    name: str
    profile_config_id: int
    feeds: dict[str, FeedState]
    last_run: LastRun | None
    next_run_at: datetime | None
    scheduled: bool


class ActivePipelines(BaseModel):
    items: list[ActivePipeline]


class SearchMatch(BaseModel):
    pipeline_id: int
    pipeline_name: str
    indicator_type: str
    entry: str
    run_id: int | None
    sources: list[str]
    tags: list[str]
    confidence: int
    first_seen: datetime
    last_seen: datetime
    retained: bool = Field(
        description="vanished from its sources, still published by retain_missing_days"
    )


class SearchResult(BaseModel):
    indicator: str
    kind: str | None = Field(description="how the query was read: ipv4, ipv6, cidr, fqdn, url")
    matches: list[SearchMatch]
