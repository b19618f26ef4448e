"""Service settings: every knob comes from the environment (prefix EDL_) or `.env`."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


MIN_LEGACY_KEY_LENGTH = 16
DEFAULT_MAX_QUEUED_RUNS_PER_PROFILE = 50
PLACEHOLDER_KEYS = {"change-me", "changeme", "change-me-please", "secret", "password", "admin"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="EDL_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    data_dir: Path = Path("data")
    log_dir: Path = Path("logs")
    database_url: str | None = None
    log_level: str = "INFO"

    api_key: SecretStr | None = None
    operator_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    reader_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    # How often the refresh scheduler looks for due pipelines (their config's
    # refresh_interval_minutes); on by default: a block list must not silently go stale.
    # 0 turns it off (configs' intervals are then ignored, and `serve` says so).
    auto_refresh_minutes: float = 1.0
    max_concurrent_runs_total: int = Field(default=4, ge=1)
    max_concurrent_runs_per_profile: int = Field(default=2, ge=1)
    # Queued (not running) runs one profile may have: beyond it POST /runs answers 429 and
    # the scheduler skips the profile, so one tenant cannot bury the queue.
    max_queued_runs_per_profile: int = Field(default=DEFAULT_MAX_QUEUED_RUNS_PER_PROFILE, ge=1)
    # Each engine child's address-space limit (RLIMIT_AS), and the bytes all sources of one
    # run may fetch together (decoded: a gzip bomb counts at its inflated size).
    run_memory_mb: int = Field(default=2048, ge=256, le=1024 * 1024)
    run_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)

    ssrf_allow_cidrs: Annotated[list[str], NoDecode] = Field(default_factory=list)
    ssrf_allow_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    source_dir: Path | None = None
    # Master key(s) of the profile secrets (Fernet, comma-separated; the first encrypts).
    # Unset: generated once into EDL_DATA_DIR/secrets.key (mode 0600).
    secrets_key: SecretStr | None = None

    # Limits that keep one caller from exhausting the service.
    page_max: int = Field(default=500, ge=1)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # bcrypt cost for new keys; tests lower it, production keeps 12.
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    key_cache_ttl_seconds: float = Field(default=60.0, ge=0)
    key_cache_size: int = Field(default=10_000, ge=1)
    # A rejected key is answered 401 without bcrypt for this long (0: never remembered).
    key_reject_ttl_seconds: float = Field(default=30.0, ge=0, le=3600)
    # How often each process checks for keys revoked or re-scoped by another process.
    key_revocation_poll_seconds: float = Field(default=2.0, gt=0)
    # bcrypt runs on its own pool of this many threads, at most `bcrypt_max_pending`
    # verifications queued or running (beyond: 401 at once); after `key_max_failures`
    # failures within a minute a key id answers 401 without bcrypt for the cool-down.
    bcrypt_workers: int = Field(default=2, ge=1, le=64)
    bcrypt_max_pending: int = Field(default=16, ge=1, le=10_000)
    key_max_failures: int = Field(default=5, ge=1, le=1000)
    key_failure_cooldown_seconds: float = Field(default=60.0, ge=0, le=3600)

    # Hosted feeds: bytes of rendered feeds kept in memory per process, and how often a
    # process re-reads which artifact each feed points at (another process may publish).
    feed_cache_bytes: int = Field(default=512 * 1024 * 1024, ge=1024 * 1024)
    feed_pointer_ttl_seconds: float = Field(default=2.0, gt=0, le=300)
    # Runs per pipeline whose artifact bytes are kept (the served feeds' always are): a 1M
    # feed stores ~30 MB per run, every few minutes.
    artifact_keep_runs: int = Field(default=20, ge=2, le=100_000)
    # A run that gives no timeout_seconds gets this one: a hung source or engine must not
    # hold a run slot (and its pipeline's next runs) forever.
    run_timeout_seconds: float = Field(default=3600.0, gt=0, le=7 * 24 * 3600)
    # A run interrupted because its process died is re-queued this many times (a retry
    # chain of that length stays interrupted); 0: never.
    retry_interrupted: int = Field(default=1, ge=0, le=10)
    # How long an Idempotency-Key is remembered (a retry after that creates a new object).
    idempotency_retention_hours: float = Field(default=24.0, gt=0, le=24 * 365)
    # A deleted profile's rows (configs, pipelines, runs, feeds, devices) are kept this
    # long, then purged by the dispatcher's housekeeping; 0: at its next pass.
    deleted_retention_days: float = Field(default=30.0, ge=0, le=3650)
    # Devices: the base of the ready-to-paste feed URLs (else the request's own), how often
    # each process writes its recorded polls, and how long the aggregated polls are kept.
    public_url: str | None = Field(default=None, max_length=500)
    poll_flush_seconds: float = Field(default=5.0, gt=0, le=300)
    poll_retention_days: int = Field(default=14, ge=1, le=3650)
    # Alerts by webhook (`edl_api.alerts`): attempts per delivery, the first retry's wait
    # (doubling: 2, 4, 8, 16, 32 min ≈ 1 h over 6 attempts), each POST's timeout, how often
    # each process looks for due deliveries and checks stale feeds/devices and capacity,
    # and how long finished deliveries are kept.
    webhook_max_attempts: int = Field(default=6, ge=1, le=20)
    webhook_retry_seconds: float = Field(default=120.0, gt=0, le=24 * 3600)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    webhook_poll_seconds: float = Field(default=2.0, gt=0, le=300)
    alert_check_seconds: float = Field(default=60.0, gt=0, le=24 * 3600)
    webhook_retention_days: int = Field(default=30, ge=1, le=3650)
    # Off only to measure what recording costs (bench/feeds_bench.py): polls go unrecorded.
    poll_ledger_enabled: bool = True
    # FastAPI's built-in OpenTelemetry hooks cost a few microseconds per request; off
    # unless an OpenTelemetry SDK is configured for this process.
    opentelemetry: bool = False

    @field_validator(
        "operator_keys", "reader_keys", "ssrf_allow_cidrs", "ssrf_allow_hosts", mode="before"
    )
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("api_key", "operator_keys", "reader_keys")
    @classmethod
    def _strong_legacy_keys(cls, value: object) -> object:
        keys = value if isinstance(value, list) else [value]
        for key in keys:
            if key is None:
                continue
            secret = key.get_secret_value() if isinstance(key, SecretStr) else str(key)
            if len(secret) < MIN_LEGACY_KEY_LENGTH or secret.lower() in PLACEHOLDER_KEYS:
                raise ValueError(
                    f"legacy keys must be at least {MIN_LEGACY_KEY_LENGTH} characters and not "
                    "a placeholder (try: openssl rand -hex 24)"
                )
        return value

    @field_validator("secrets_key")
    @classmethod
    def _fernet_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        from cryptography.fernet import Fernet

        parts = [p.strip() for p in value.get_secret_value().split(",") if p.strip()]
        if not parts:
            return None
        for part in parts:
            try:
                Fernet(part.encode("ascii"))
            except (ValueError, UnicodeError):
                raise ValueError(
                    "each key must be a Fernet key (python -c 'from cryptography.fernet "
                    "import Fernet; print(Fernet.generate_key().decode())')"
                ) from None
        return value

    @field_validator("auto_refresh_minutes")
    @classmethod
    def _non_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must be 0 (off) or a positive number of minutes")
        return value

    def legacy_keys(self) -> list[tuple[str, str]]:
        """(secret, role) of every legacy key: super first, then operators, then readers."""
        pairs = [] if self.api_key is None else [(self.api_key.get_secret_value(), "super")]
        pairs += [(key.get_secret_value(), "operator") for key in self.operator_keys]
        pairs += [(key.get_secret_value(), "reader") for key in self.reader_keys]
        return pairs

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'edl.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")
