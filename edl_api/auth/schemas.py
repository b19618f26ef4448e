from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field, StrictBool

from edl_api.schemas import Name, RequestModel, ResponseModel


class AdminAccountCreate(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "noc-readers", "role": "reader"}]}
    )

    name: Name
    role: Literal["operator", "reader"]
    is_super_admin: StrictBool = False
    idempotency_key: str | None = Field(default=None, max_length=200)


class AdminAccountPublic(ResponseModel):
    id: int
    name: str
    role: str
    is_super_admin: bool
    created_at: datetime
    revoked_at: datetime | None = None


class AdminAccountCreated(AdminAccountPublic):
    api_key: str | None = Field(
        description="shown only in the response that created it (null on an idempotent replay)"
    )


class AdminProfileLinkPublic(ResponseModel):
    admin_id: int
    profile_id: int
    linked: bool


class Me(ResponseModel):
    kind: str
    id: int | None
    role: str
    is_super_admin: bool
    profile_ids: list[int] | None = Field(description="null means every profile")
