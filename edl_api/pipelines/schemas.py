from __future__ import annotations

from datetime import datetime

from pydantic import ConfigDict, Field, StrictBool

from edl_api.schemas import DbId, Name, RequestModel, ResponseModel


class PipelineCreate(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"profile_config_id": 1, "name": "c2-block", "concurrency_limit": 1}]
        }
    )

    profile_config_id: DbId
    name: Name
    concurrency_limit: int = Field(default=1, ge=1, le=64)
    is_active: StrictBool = True
    idempotency_key: str | None = Field(default=None, max_length=200)


class PipelineConfigPatch(RequestModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"profile_config_id": 2}]})

    profile_config_id: DbId


class PipelinePatch(RequestModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"is_active": False}]})

    name: Name | None = None
    concurrency_limit: int | None = Field(default=None, ge=1, le=64)
    is_active: StrictBool | None = None


class PipelinePublic(ResponseModel):
    id: int
    profile_id: int
    profile_config_id: int
    name: str
    concurrency_limit: int
    is_active: bool
    created_at: datetime
    deleted_at: datetime | None
