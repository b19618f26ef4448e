from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, StrictBool, model_validator

from edl_api.runs.state import RunState
from edl_api.schemas import DbId, RequestModel, ResponseModel


class RunCreate(RequestModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"pipeline_id": 1},
        {"pipeline_id": 1, "mode": "dry_run", "timeout_seconds": 600, "persist": False,
         "reason": "check the new allowlist"},
        {"pipeline_id": 1, "mode": "dry_run",
         "config": "sources:\n  - name: ours\n    values: [203.0.113.7]\n"},
    ]})

    pipeline_id: DbId | None = Field(default=None, description="the pipeline to run (required)")
    profile_id: DbId | None = Field(
        default=None, description="optional check: the pipeline must belong to this profile"
    )
    config: str | None = Field(default=None, min_length=1, description=(
        "an unsaved config (YAML) to try instead of the pipeline's: `mode: dry_run` only; "
        "validated like a saved one (422 with line numbers), it becomes the run's snapshot"
    ))
    mode: Literal["full", "dry_run"] = "full"
    timeout_seconds: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    persist: StrictBool = True
    reason: str | None = Field(default=None, max_length=500)
    idempotency_key: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _runnable(self) -> RunCreate:
        if self.pipeline_id is None:
            raise ValueError(
                "give pipeline_id (an inline config is tried as a dry run of a pipeline: "
                "its profile's secrets, folder and run slots)"
            )
        return self


class RunCreated(ResponseModel):
    id: int
    pipeline_id: int
    profile_id: int
    state: RunState
    trigger: str
    mode: str
    created_at: datetime


class RunCancelled(ResponseModel):
    id: int
    state: RunState
    cancel_requested: bool


class RunSummary(ResponseModel):
    id: int
    pipeline_id: int
    profile_id: int
    profile_config_id: int
    config_version: int
    state: RunState
    trigger: str
    mode: str
    persist: bool
    reason: str | None
    timeout_seconds: float | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    counts: dict[str, Any]
    errors: list[Any]
    schedule_slot: str | None
    retry_of_run_id: int | None = Field(default=None, description=(
        "The interrupted run (its process died) this run retries (EDL_RETRY_INTERRUPTED)"
    ))


class ArtifactInfo(ResponseModel):
    indicator_type: str
    count: int
    sha256: str
    bytes: int
    published: bool
    reason: str | None = None
    pruned: bool = False  # bytes dropped (EDL_ARTIFACT_KEEP_RUNS); download answers 410


class SourceReport(ResponseModel):
    name: str
    status: str
    bytes: int | None = None
    lines: int | None = None
    # The engine reports counts per indicator type / per reason.
    indicators: dict[str, int] | int | None = None
    invalid: dict[str, int] | int | None = None
    # Entries past their valid_until or older than max_age_days: not published.
    expired: int | None = None
    # Dated sources (date_column, date_query): entries without a readable date, judged
    # by when this source first gave them instead.
    undated: int | None = None
    requests: int | None = None  # taxii, misp: requests made this run
    seconds: float | None = None
    error: str | None = None


class RunMetadata(ResponseModel):
    config_snapshot: str
    overrides: dict[str, Any]
    sources: list[SourceReport]
    feeds: dict[str, Any] = Field(default_factory=dict)
    # What the engine ran with: outputs, guard, retention, sources, its deadline (s).
    options: dict[str, Any] = Field(default_factory=dict)
    # Per feed type and vendor format, what its renderer leaves out of the published feed
    # (`dropped`, `reasons`: port, wildcard_token, too_long, type_not_supported, invalid_char,
    # whole_internet, and a `sample`), computed at publish; formats that drop nothing absent.
    render_drops: dict[str, Any] = Field(default_factory=dict)


class RunDetail(RunSummary):
    artifacts: list[ArtifactInfo]
    metadata: RunMetadata
    diff: dict[str, Any]
    progress: dict[str, Any]
    worker: str | None = Field(description=(
        "The process running it: `worker-<hex>` for tenants; its `host:pid:start` identity "
        "for callers that see every profile (super-admins, legacy global keys)"
    ))
    retried_by_run_id: int | None = Field(
        default=None, description="The run queued to retry this one, if it was interrupted"
    )


class Job(ResponseModel):
    run_id: int
    pipeline_id: int
    profile_id: int
    state: RunState
    trigger: str
    created_at: datetime
    started_at: datetime | None
    cancel_requested: bool
    worker: str | None = Field(description="As in run detail: `worker-<hex>` for tenants")
    pid: int | None = Field(description="The engine child's host pid; null for tenants")
    progress: dict[str, Any]


class JobList(ResponseModel):
    items: list[Job]
