"""Per-source state between runs (TAXII cursors, MISP timestamps, first_seen for expiry)

Revision ID: 0014_source_states
Revises: 0013_config_delete
"""

import sqlalchemy as sa

from alembic import op

revision = "0014_source_states"
down_revision = "0013_config_delete"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "source_states",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("data_gzip", sa.LargeBinary(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["pipeline_id"], ["pipelines.id"], name="fk_source_states_pipeline_id_pipelines",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_source_states"),
        sa.UniqueConstraint("pipeline_id", "source", name="uq_source_states_pipeline_id_source"),
    )


def downgrade() -> None:
    op.drop_table("source_states")
