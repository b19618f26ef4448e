"""Tenant isolation: per-profile secrets, SSRF grants and profile key rotation

Revision ID: 0007_tenant_isolation
Revises: 0006_artifact_pruned_at
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_tenant_isolation"
down_revision = "0006_artifact_pruned_at"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("profiles") as batch:
        batch.add_column(sa.Column("key_rotated_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("previous_key_id", sa.String(length=32), nullable=True))
        batch.add_column(
            sa.Column("ssrf_allow_cidrs", sa.JSON(), nullable=False, server_default="[]")
        )
        batch.add_column(
            sa.Column("ssrf_allow_hosts", sa.JSON(), nullable=False, server_default="[]")
        )
        batch.create_index("ix_profiles_key_rotated_at", ["key_rotated_at"])
    op.create_table(
        "profile_secrets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("from_env", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["profile_id"], ["profiles.id"],
            name="fk_profile_secrets_profile_id_profiles", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_profile_secrets"),
        sa.UniqueConstraint("profile_id", "name", name="uq_profile_secrets_profile_id_name"),
    )
    op.create_index("ix_profile_secrets_profile_id", "profile_secrets", ["profile_id"])


def downgrade() -> None:
    op.drop_index("ix_profile_secrets_profile_id", table_name="profile_secrets")
    op.drop_table("profile_secrets")
    with op.batch_alter_table("profiles") as batch:
        batch.drop_index("ix_profiles_key_rotated_at")
        batch.drop_column("ssrf_allow_hosts")
        batch.drop_column("ssrf_allow_cidrs")
        batch.drop_column("previous_key_id")
        batch.drop_column("key_rotated_at")
