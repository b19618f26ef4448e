"""Every table of the service (one module avoids import cycles).

Alembic owns the schema (alembic/versions/); these classes describe it for queries.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

# Stable constraint names so migrations are reproducible on SQLite and PostgreSQL.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC: the same on SQLite (no zones) and PostgreSQL."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use edl_api.models.utcnow()")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


def _json(default_factory: Any = dict) -> Any:
    return Field(default_factory=default_factory, sa_column=sa.Column(sa.JSON(), nullable=False))


class AdminAccount(SQLModel, table=True):
    __tablename__ = "admin_accounts"
    # Names are unique among live accounts (409 `name_taken`); a revoked one frees its name.
    __table_args__ = (
        sa.Index(
            "uq_admin_accounts_live_name", "name", unique=True,
            sqlite_where=sa.text("revoked_at IS NULL"),
            postgresql_where=sa.text("revoked_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    role: str = Field(max_length=20)  # operator | reader
    is_super_admin: bool = False
    key_id: str = Field(max_length=32, unique=True)
    key_hash: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Bumped on revoke/link/unlink so every process drops its cached copy of this key.
    scope_changed_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)


class Profile(SQLModel, table=True):
    __tablename__ = "profiles"
    # Names are unique among live profiles (409 `name_taken`); a deleted one frees its name.
    __table_args__ = (
        sa.Index(
            "uq_profiles_live_name", "name", unique=True,
            sqlite_where=sa.text("deleted_at IS NULL"),
            postgresql_where=sa.text("deleted_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    key_id: str = Field(max_length=32, unique=True)
    key_hash: str = Field(max_length=200)
    created_by_admin_id: int | None = Field(default=None)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # Set by rotation or revocation of the profile key (`POST|DELETE /profiles/{id}/key`);
    # `previous_key_id` lets every process drop the old key from its verified-key cache.
    key_rotated_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    previous_key_id: str | None = Field(default=None, max_length=32)
    # Private destinations a super-admin granted this profile alone (on top of the global
    # EDL_SSRF_ALLOW_*, which every tenant gets).
    ssrf_allow_cidrs: list[str] = _json(list)
    ssrf_allow_hosts: list[str] = _json(list)
    # `DELETE /profiles/{id}`: every scope treats it as missing from then on; its rows are
    # purged after EDL_DELETED_RETENTION_DAYS (`profiles.lifecycle`).
    deleted_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)


class ProfileSecret(SQLModel, table=True):
    """One named secret of one profile: a value encrypted at rest, or a grant of a named
    EDL_SECRET_* variable of the service's environment (super-admin only)."""

    __tablename__ = "profile_secrets"
    __table_args__ = (sa.UniqueConstraint("profile_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    profile_id: int = Field(foreign_key="profiles.id", index=True, ondelete="CASCADE")
    name: str = Field(max_length=64)
    ciphertext: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    from_env: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AdminProfileLink(SQLModel, table=True):
    __tablename__ = "admin_profile_links"

    admin_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("admin_accounts.id", ondelete="CASCADE"), primary_key=True
        )
    )
    profile_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True
        )
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ProfileConfig(SQLModel, table=True):
    __tablename__ = "profile_configs"

    id: int | None = Field(default=None, primary_key=True)
    profile_id: int = Field(foreign_key="profiles.id", index=True, ondelete="CASCADE")
    name: str = Field(max_length=200)
    version: int = 1
    yaml: str = Field(sa_type=sa.Text)
    refresh_interval_minutes: float | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # `DELETE …/configs/{id}`: gone for the API; the row stays because past runs and deleted
    # pipelines still reference it (their history keeps its config snapshot).
    deleted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ProfileConfigVersion(SQLModel, table=True):
    """Every version a config ever had, the current one included."""

    __tablename__ = "profile_config_versions"
    __table_args__ = (sa.UniqueConstraint("config_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    config_id: int = Field(foreign_key="profile_configs.id", index=True, ondelete="CASCADE")
    version: int
    name: str = Field(max_length=200)
    yaml: str = Field(sa_type=sa.Text)
    refresh_interval_minutes: float | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Pipeline(SQLModel, table=True):
    __tablename__ = "pipelines"

    id: int | None = Field(default=None, primary_key=True)
    profile_id: int = Field(foreign_key="profiles.id", index=True, ondelete="CASCADE")
    profile_config_id: int = Field(foreign_key="profile_configs.id", index=True)
    name: str = Field(max_length=200)
    concurrency_limit: int = 1
    is_active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    deleted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class PipelineRun(SQLModel, table=True):
    __tablename__ = "pipeline_runs"
    # One scheduler-made run per (pipeline, slot), however many schedulers tick.
    # The claim query reads queued runs oldest first.
    __table_args__ = (
        sa.UniqueConstraint("pipeline_id", "schedule_slot"),
        sa.Index("ix_pipeline_runs_state_created_at", "state", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    pipeline_id: int = Field(foreign_key="pipelines.id", index=True, ondelete="CASCADE")
    profile_id: int = Field(foreign_key="profiles.id", index=True, ondelete="CASCADE")
    profile_config_id: int = Field(foreign_key="profile_configs.id")
    config_version: int
    config_snapshot: str = Field(sa_type=sa.Text)
    state: str = Field(max_length=20, index=True)
    trigger: str = Field(max_length=20)  # api | schedule
    mode: str = Field(max_length=20)  # full | dry_run
    persist: bool = True
    timeout_seconds: float | None = None
    reason: str | None = Field(default=None, max_length=500)
    overrides: dict[str, Any] = _json()
    schedule_slot: str | None = Field(default=None, max_length=40)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    counts: dict[str, Any] = _json()
    errors: list[Any] = _json(list)
    report: dict[str, Any] = _json()
    diff: dict[str, Any] = _json()
    progress: dict[str, Any] = _json()
    cancel_requested: bool = False
    worker: str | None = Field(default=None, max_length=200)
    pid: int | None = None
    # Refreshed by the owning dispatcher while the run is running; a stale heartbeat
    # means the owner died and the run is interrupted (recovery on any process).
    heartbeat_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # A run re-queued because this one was interrupted (its process died) names it here.
    retry_of_run_id: int | None = Field(default=None, index=True)


class RunLogChunk(SQLModel, table=True):
    """A run's log as every process can read it: gzip chunks appended as the run goes."""

    __tablename__ = "run_log_chunks"
    __table_args__ = (sa.UniqueConstraint("run_id", "seq"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="pipeline_runs.id", ondelete="CASCADE")
    seq: int
    lines: int = 0
    content_gzip: bytes = Field(sa_type=sa.LargeBinary)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Artifact(SQLModel, table=True):
    """A run's output for one indicator type: immutable, content-addressed bytes."""

    __tablename__ = "artifacts"
    __table_args__ = (sa.UniqueConstraint("run_id", "indicator_type"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="pipeline_runs.id", index=True, ondelete="CASCADE")
    pipeline_id: int = Field(foreign_key="pipelines.id", index=True, ondelete="CASCADE")
    indicator_type: str = Field(max_length=10)
    sha256: str = Field(max_length=64, index=True)
    count: int = 0
    size: int = 0
    content: bytes = Field(sa_type=sa.LargeBinary)
    content_gzip: bytes = Field(sa_type=sa.LargeBinary)
    published: bool = False
    reason: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # Set when the bytes were dropped (`EDL_ARTIFACT_KEEP_RUNS`); the metadata stays.
    pruned_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class HostedFeed(SQLModel, table=True):
    """What firewalls receive for (pipeline, type): repointed in one transaction per publish."""

    __tablename__ = "hosted_feeds"

    pipeline_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("pipelines.id", ondelete="CASCADE"), primary_key=True
        )
    )
    indicator_type: str = Field(sa_column=sa.Column(sa.String(10), primary_key=True))
    artifact_id: int = Field(foreign_key="artifacts.id")
    run_id: int = Field(foreign_key="pipeline_runs.id")
    sha256: str = Field(max_length=64)
    count: int = 0
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Indicator(SQLModel, table=True):
    """The latest published entries of a pipeline, with provenance carried across runs."""

    __tablename__ = "indicators"
    # Keyed by (pipeline, type, value), nothing else indexed (migration 0016): each index
    # is maintained per row of a million-row publish. On SQLite the rows live in the key's
    # B-tree (WITHOUT ROWID), written in key order.
    __table_args__ = {"sqlite_with_rowid": False}

    # No foreign key (migration 0015: its per-row check cost a 1M publish ~6 s on
    # PostgreSQL); `profiles.lifecycle.purge_deleted` deletes a purged pipeline's rows.
    pipeline_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    indicator_type: str = Field(max_length=10, primary_key=True)
    value: str = Field(max_length=2100, primary_key=True)
    sources: list[str] = _json(list)
    tags: list[str] = _json(list)
    confidence: int = 50
    first_seen: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_seen: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    run_id: int | None = Field(default=None)


class Device(SQLModel, table=True):
    """A firewall (or any consumer) with its own read-only feed credential (`edlf_…`).

    The feed tokens of earlier versions are devices of vendor `generic` without declared
    feeds (migration 0009): they read their profile's feeds (or `pipeline_ids`) unbudgeted.
    A device with `feeds` reads exactly those, each budgeted to the model's capacity."""

    __tablename__ = "devices"

    id: int | None = Field(default=None, primary_key=True)
    profile_id: int = Field(foreign_key="profiles.id", index=True, ondelete="CASCADE")
    name: str = Field(max_length=200)
    vendor: str = Field(default="generic", max_length=20)
    model: str | None = Field(default=None, max_length=100)
    # Per-kind overrides of the vendor table ({"ip": 100000, ...}); None: the table's.
    limits: dict[str, int] | None = Field(default=None, sa_column=sa.Column(sa.JSON()))
    # [{"pipeline_id", "indicator_type", "format", "priority"}]; [] for a plain token.
    feeds: list[dict[str, Any]] = _json(list)
    expected_poll_minutes: int = 60
    key_id: str = Field(max_length=32, unique=True)
    key_hash: str = Field(max_length=200)
    # Legacy feed-token scope (devices without declared feeds): None = all the profile's.
    pipeline_ids: list[int] | None = Field(default=None, sa_column=sa.Column(sa.JSON()))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # Set when feeds, limits or the credential change: every process drops the device's
    # cached principal on its next revocation poll (`auth.revocation`).
    scope_changed_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class DevicePoll(SQLModel, table=True):
    """Polls of one device, aggregated per flush window (`fleet.ledger`): one row per
    (feed, format, status, version, address) seen in the window, with counts."""

    __tablename__ = "device_polls"
    __table_args__ = (sa.Index("ix_device_polls_device_id_last_at", "device_id", "last_at"),)

    id: int | None = Field(default=None, primary_key=True)
    device_id: int = Field(foreign_key="devices.id", ondelete="CASCADE")
    pipeline_id: int = 0  # 0: the global feed `/edl/{type}`
    indicator_type: str = Field(max_length=10)
    fmt: str = Field(max_length=20)
    status: int
    etag: str | None = Field(default=None, max_length=80)
    run_ids: str = Field(default="", max_length=200)  # as X-EDL-Run-Id
    address: str | None = Field(default=None, max_length=64)
    polls: int = 1
    bytes: int = Field(default=0, sa_type=sa.BigInteger)
    entries: int | None = None
    truncated: int = 0
    first_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)


class DeviceFeedState(SQLModel, table=True):
    """What each device was last served of each feed (upserted by every process's flush,
    the newer poll winning)."""

    __tablename__ = "device_feed_states"
    __table_args__ = (sa.UniqueConstraint("device_id", "pipeline_id", "indicator_type"),)

    id: int | None = Field(default=None, primary_key=True)
    device_id: int = Field(foreign_key="devices.id", ondelete="CASCADE")
    pipeline_id: int = 0  # 0: the global feed
    indicator_type: str = Field(max_length=10)
    fmt: str = Field(max_length=20)
    last_seen_at: datetime = Field(sa_type=UTCDateTime)
    last_address: str | None = Field(default=None, max_length=64)
    last_status: int
    served_etag: str | None = Field(default=None, max_length=80)
    served_run_id: int | None = None  # of the last 200/304 (the version the device holds)
    entries_served: int | None = None
    truncated: int = 0
    polls: int = Field(default=0, sa_type=sa.BigInteger)


class DevicePollCount(SQLModel, table=True):
    """Polls per device and status since the device was made (a counter for /metrics)."""

    __tablename__ = "device_poll_counts"
    __table_args__ = (sa.UniqueConstraint("device_id", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    device_id: int = Field(foreign_key="devices.id", ondelete="CASCADE")
    status: int
    polls: int = Field(default=0, sa_type=sa.BigInteger)


class IdempotencyRecord(SQLModel, table=True):
    """Idempotency is a unique constraint on (scope, key), not a lock."""

    __tablename__ = "idempotency_records"
    __table_args__ = (sa.UniqueConstraint("scope", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(max_length=100)
    key: str = Field(max_length=200)
    request_hash: str = Field(max_length=64)
    status_code: int = 201
    response: dict[str, Any] = _json()
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Webhook(SQLModel, table=True):
    """Where a profile's alerts go (`edl_api.alerts`): a URL, the events it takes, the
    body format and an optional signing secret (encrypted like profile secrets)."""

    __tablename__ = "webhooks"

    id: int | None = Field(default=None, primary_key=True)
    profile_id: int = Field(foreign_key="profiles.id", index=True, ondelete="CASCADE")
    url: str = Field(max_length=2048)
    events: list[str] = _json(list)
    format: str = Field(default="json", max_length=10)
    secret_ciphertext: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class WebhookDelivery(SQLModel, table=True):
    """The outbox: one event for one webhook, sent (and retried) by the delivery worker."""

    __tablename__ = "webhook_deliveries"
    # The worker's claim reads pending rows by next_attempt_at.
    __table_args__ = (
        sa.Index("ix_webhook_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    webhook_id: int = Field(foreign_key="webhooks.id", index=True, ondelete="CASCADE")
    event: str = Field(max_length=30)
    payload: dict[str, Any] = _json()
    state: str = Field(default="pending", max_length=20)  # pending | delivered | failed
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_status: int | None = None
    last_error: str | None = Field(default=None, max_length=500)
    # [{"at", "status", "error", "seconds"}] of every attempt (bounded by the max attempts).
    attempt_log: list[Any] = _json(list)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class AlertEpisode(SQLModel, table=True):
    """A condition that alerts once while it lasts (a source failing, a stale feed or
    device, a device near capacity): the row exists while the episode is open; the unique
    key makes every process fire it once."""

    __tablename__ = "alert_episodes"
    __table_args__ = (sa.UniqueConstraint("profile_id", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    profile_id: int = Field(foreign_key="profiles.id", ondelete="CASCADE")
    key: str = Field(max_length=300)
    count: int = 0  # source_failing: failed runs in a row
    fired_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class RunExplain(SQLModel, table=True):
    """A run's explain record: every entry its engine dropped and why (engine/explain.py)."""

    __tablename__ = "run_explains"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="pipeline_runs.id", ondelete="CASCADE", unique=True)
    pipeline_id: int = Field(foreign_key="pipelines.id", index=True, ondelete="CASCADE")
    entries: int = 0
    size: int = 0  # bytes of content_gzip
    content_gzip: bytes = Field(sa_type=sa.LargeBinary)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class SourceState(SQLModel, table=True):
    """What one source of a pipeline remembers for its next run (engine/stateful.py): a
    TAXII cursor and objects, MISP event timestamps, first_seen of entries for
    max_age_days. Written by full, persisted runs whose engine succeeded (runs/sourcestate)."""

    __tablename__ = "source_states"
    __table_args__ = (sa.UniqueConstraint("pipeline_id", "source"),)

    id: int | None = Field(default=None, primary_key=True)
    pipeline_id: int = Field(foreign_key="pipelines.id", ondelete="CASCADE")
    source: str = Field(max_length=64)
    key: str = Field(max_length=64)  # collect.state_key of the source that wrote it
    data_gzip: bytes = Field(sa_type=sa.LargeBinary)  # gzip-compressed JSON
    # The run that wrote it; no foreign key: pruning old runs must not drop the state.
    run_id: int
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
