"""Devices (feed tokens become devices of vendor generic), the poll ledger

Revision ID: 0009_devices
Revises: 0008_run_logs_and_retries
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_devices"
down_revision = "0008_run_logs_and_retries"
branch_labels = None
depends_on = None


def _device_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["device_id"], ["devices.id"], name=f"fk_{table}_device_id_devices", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("vendor", sa.String(length=20), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=True),
        sa.Column("limits", sa.JSON(), nullable=True),
        sa.Column("feeds", sa.JSON(), nullable=False),
        sa.Column("expected_poll_minutes", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("key_hash", sa.String(length=200), nullable=False),
        sa.Column("pipeline_ids", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("scope_changed_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["profile_id"], ["profiles.id"], name="fk_devices_profile_id_profiles",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
        sa.UniqueConstraint("key_id", name="uq_devices_key_id"),
    )
    op.create_index("ix_devices_profile_id", "devices", ["profile_id"])
    op.create_index("ix_devices_scope_changed_at", "devices", ["scope_changed_at"])
    # Every feed token becomes a generic device with the same id (the `/feed-tokens/{id}`
    # alias keeps answering for it) and the same credential.
    op.execute(
        "INSERT INTO devices (id, profile_id, name, vendor, model, limits, feeds, "
        "expected_poll_minutes, key_id, key_hash, pipeline_ids, created_at, updated_at, "
        "scope_changed_at, revoked_at) "
        "SELECT id, profile_id, name, 'generic', NULL, NULL, '[]', 60, key_id, key_hash, "
        "pipeline_ids, created_at, created_at, NULL, revoked_at FROM feed_tokens"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "SELECT setval(pg_get_serial_sequence('devices', 'id'), "
            "COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) FROM devices"
        )
    with op.batch_alter_table("feed_tokens") as batch:
        batch.drop_index("ix_feed_tokens_profile_id")
    op.drop_table("feed_tokens")

    op.create_table(
        "device_polls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("indicator_type", sa.String(length=10), nullable=False),
        sa.Column("fmt", sa.String(length=20), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("etag", sa.String(length=80), nullable=True),
        sa.Column("run_ids", sa.String(length=200), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("polls", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=True),
        sa.Column("truncated", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.DateTime(), nullable=False),
        sa.Column("last_at", sa.DateTime(), nullable=False),
        _device_fk("device_polls"),
        sa.PrimaryKeyConstraint("id", name="pk_device_polls"),
    )
    op.create_index("ix_device_polls_last_at", "device_polls", ["last_at"])
    op.create_index(
        "ix_device_polls_device_id_last_at", "device_polls", ["device_id", "last_at"]
    )
    op.create_table(
        "device_feed_states",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("indicator_type", sa.String(length=10), nullable=False),
        sa.Column("fmt", sa.String(length=20), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("last_address", sa.String(length=64), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=False),
        sa.Column("served_etag", sa.String(length=80), nullable=True),
        sa.Column("served_run_id", sa.Integer(), nullable=True),
        sa.Column("entries_served", sa.Integer(), nullable=True),
        sa.Column("truncated", sa.Integer(), nullable=False),
        sa.Column("polls", sa.BigInteger(), nullable=False),
        _device_fk("device_feed_states"),
        sa.PrimaryKeyConstraint("id", name="pk_device_feed_states"),
        sa.UniqueConstraint(
            "device_id", "pipeline_id", "indicator_type",
            name="uq_device_feed_states_device_id_pipeline_id_indicator_type",
        ),
    )
    op.create_table(
        "device_poll_counts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("polls", sa.BigInteger(), nullable=False),
        _device_fk("device_poll_counts"),
        sa.PrimaryKeyConstraint("id", name="pk_device_poll_counts"),
        sa.UniqueConstraint("device_id", "status", name="uq_device_poll_counts_device_id_status"),
    )


def downgrade() -> None:
    op.drop_table("device_poll_counts")
    op.drop_table("device_feed_states")
    op.drop_index("ix_device_polls_device_id_last_at", table_name="device_polls")
    op.drop_index("ix_device_polls_last_at", table_name="device_polls")
    op.drop_table("device_polls")
    op.create_table(
        "feed_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("key_hash", sa.String(length=200), nullable=False),
        sa.Column("pipeline_ids", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["profile_id"], ["profiles.id"], name="fk_feed_tokens_profile_id_profiles",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_feed_tokens"),
        sa.UniqueConstraint("key_id", name="uq_feed_tokens_key_id"),
    )
    op.create_index("ix_feed_tokens_profile_id", "feed_tokens", ["profile_id"])
    # Only devices without declared feeds were feed tokens; the others are dropped.
    op.execute(
        "INSERT INTO feed_tokens (id, profile_id, name, key_id, key_hash, pipeline_ids, "
        "created_at, revoked_at) SELECT id, profile_id, name, key_id, key_hash, pipeline_ids, "
        "created_at, revoked_at FROM devices WHERE vendor = 'generic'"
    )
    op.drop_index("ix_devices_scope_changed_at", table_name="devices")
    op.drop_index("ix_devices_profile_id", table_name="devices")
    op.drop_table("devices")
