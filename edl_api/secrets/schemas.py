from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from edl_api.schemas import RequestModel, ResponseModel

# `${secret:NAME}`: the same grammar as the engine's config (edl_api.engine.config).
SECRET_NAME_PATTERN = r"^[A-Z][A-Z0-9_]{0,63}$"
ENV_NAME_PATTERN = r"^EDL_SECRET_[A-Z0-9_]{1,64}$"
MAX_VALUE_CHARS = 8192
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class SecretPut(RequestModel):
    """Exactly one of `value` (stored encrypted) or `from_env` (super-admin only: this
    profile may use that variable of the service's environment)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"value": "feed-api-token"},
                                        {"from_env": "EDL_SECRET_PARTNER_TOKEN"}]}
    )

    value: str | None = Field(default=None, min_length=1, max_length=MAX_VALUE_CHARS)
    from_env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN)

    @field_validator("value")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        # A header value is one line; the message never echoes the value.
        if value is not None and _CONTROL.search(value):
            raise ValueError("must be one line without control characters")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretPut:
        if (self.value is None) == (self.from_env is None):
            raise ValueError("give exactly one of value or from_env")
        return self


class SecretPublic(ResponseModel):
    """What anyone may see of a secret: never its value."""

    name: str
    source: Literal["value", "env"]
    from_env: str | None = Field(description="the granted environment variable (source env)")
    created_at: datetime
    updated_at: datetime
