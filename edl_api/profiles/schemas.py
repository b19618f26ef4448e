from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import ConfigDict, Field

from edl_api.schemas import Name, RequestModel, ResponseModel

RefreshMinutes = Annotated[
    float | None,
    Field(gt=0, le=525_600, description="minutes between scheduled runs (decimals allowed)"),
]


class ProfileCreate(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "acme", "description": "ACME perimeter firewalls"}]
        }
    )

    name: Name
    description: str | None = Field(default=None, max_length=2000)
    idempotency_key: str | None = Field(default=None, max_length=200)


class ProfilePublic(ResponseModel):
    id: int
    name: str
    description: str | None
    created_at: datetime
    key_rotated_at: datetime | None = Field(
        default=None,
        description="when the profile key was last rotated or revoked (null: never)",
    )
    # Private destinations a super-admin granted this profile (on top of the global ones).
    ssrf_allow_cidrs: list[str] = Field(default_factory=list)
    ssrf_allow_hosts: list[str] = Field(default_factory=list)


class ProfileDetail(ProfilePublic):
    """`GET /profiles/{id}`: the profile and its folder for `path:` sources."""

    source_dir: str | None = Field(
        description="EDL_SOURCE_DIR/<id>: the only folder its file sources read (null: "
        "EDL_SOURCE_DIR is unset, file sources are refused)"
    )
    source_files: list[str] = Field(description="files in it (relative paths, sorted)")
    source_files_truncated: bool = Field(description="more files than listed (1000 shown)")


class ProfilePatch(RequestModel):
    """Super-admin only: the profile's own private destinations (each list given
    replaces the stored one; [] clears it)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"ssrf_allow_cidrs": ["10.20.0.0/16"],
                          "ssrf_allow_hosts": ["intel.corp.example"]}]
        }
    )

    ssrf_allow_cidrs: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None, max_length=100
    )
    ssrf_allow_hosts: list[Annotated[str, Field(max_length=253)]] | None = Field(
        default=None, max_length=100
    )


class ProfileBootstrapResponse(ResponseModel):
    profile: ProfilePublic
    api_key: str | None = Field(
        description="the profile's key: shown only in the response that created it"
    )


class ProfileSummary(ProfilePublic):
    pipelines: int
    active_pipelines: int
    configs: int
    last_run_at: datetime | None


class ConfigCreate(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "c2-block",
                    "refresh_interval_minutes": 60,
                    "yaml": (
                        # A reserved name (RFC 2606): the schema's example is fuzzed by
                        # tests/test_schemathesis.py, which must not reach a real host.
                        "sources:\n  - name: feodo\n"
                        "    url: https://feeds.example/feodo/ipblocklist.txt\n"
                        "    tags: [c2]\nrules:\n  exclude_reserved: true\n"
                    ),
                }
            ]
        }
    )

    name: Name
    yaml: str = Field(min_length=1, description="the pipeline config (YAML, see docs/config.md)")
    refresh_interval_minutes: RefreshMinutes = None
    idempotency_key: str | None = Field(default=None, max_length=200)


class ConfigPatch(RequestModel):
    """Any subset; a section given replaces that whole section of the YAML."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "rules": {"allow": ["10.0.0.0/8", "*.corp.example"]},
                    "refresh_interval_minutes": 30,
                }
            ]
        }
    )

    name: Name | None = None
    yaml: str | None = Field(default=None, min_length=1)
    sources: list[dict[str, Any]] | None = None
    augment: dict[str, Any] | None = None
    rules: dict[str, Any] | None = None
    pipeline: dict[str, Any] | None = None
    refresh_interval_minutes: RefreshMinutes = None


class ConfigPublic(ResponseModel):
    id: int
    profile_id: int
    name: str
    version: int
    yaml: str
    refresh_interval_minutes: float | None
    created_at: datetime
    updated_at: datetime


class ConfigReplace(RequestModel):
    """`PUT`: the whole YAML replaced; name and interval kept unless given (null: no
    scheduled refresh)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "yaml": (
                        "sources:\n  - name: feodo\n"
                        "    url: https://feeds.example/feodo/ipblocklist.txt\n"
                    ),
                    "refresh_interval_minutes": 30,
                }
            ]
        }
    )

    name: Name | None = None
    yaml: str = Field(min_length=1, description="the pipeline config (YAML, see docs/config.md)")
    refresh_interval_minutes: RefreshMinutes = None


class ConfigWritten(ConfigPublic):
    """A config write's answer: the config, and what the operator should know about it."""

    warnings: list[str] = Field(
        default_factory=list,
        description="e.g. a refresh interval that nothing will honour (scheduler off)",
    )


class ConfigDiff(ResponseModel):
    config_id: int
    from_version: int
    to_version: int
    diff: str = Field(description="unified diff of the YAML (empty: the same text)")
    changes: dict[str, list[Any]] = Field(
        description="other fields that differ: field -> [in from_version, in to_version]"
    )


class ConfigUsage(ResponseModel):
    pipelines: int = 0
    active_pipelines: int = 0
    runs: int = 0
    last_run_at: datetime | None = None
    last_run_state: str | None = None
    indicators: int = 0


class ConfigWithUsage(ConfigPublic):
    usage: ConfigUsage


class ConfigVersionPublic(ResponseModel):
    config_id: int
    version: int
    name: str
    yaml: str
    refresh_interval_minutes: float | None
    created_at: datetime


class ProfileKeyRotated(ResponseModel):
    profile_id: int
    api_key: str = Field(description="the new profile key: shown only in this response")
    key_rotated_at: datetime


class ProfileDeleted(ResponseModel):
    """`DELETE /profiles/{id}`: what went with it."""

    id: int
    name: str
    deleted_at: datetime
    purge_after: datetime = Field(
        description="its rows are purged after this (EDL_DELETED_RETENTION_DAYS)"
    )
    pipelines_deleted: list[int] = Field(description="live pipelines soft-deleted (?force=true)")
    devices_revoked: int = Field(description="device credentials revoked")
    runs_cancelled: int = Field(description="queued or running runs cancelled")
