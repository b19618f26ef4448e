"""Explain records: every entry a run's engine dropped and why (one gzip blob per run)

Revision ID: 0012_explain
Revises: 0011_profile_lifecycle
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_explain"
down_revision = "0011_profile_lifecycle"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_explains",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("content_gzip", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["pipeline_runs.id"], name="fk_run_explains_run_id_pipeline_runs",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["pipeline_id"], ["pipelines.id"], name="fk_run_explains_pipeline_id_pipelines",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_run_explains"),
        sa.UniqueConstraint("run_id", name="uq_run_explains_run_id"),
    )
    op.create_index("ix_run_explains_pipeline_id", "run_explains", ["pipeline_id"])


def downgrade() -> None:
    op.drop_index("ix_run_explains_pipeline_id", table_name="run_explains")
    op.drop_table("run_explains")
