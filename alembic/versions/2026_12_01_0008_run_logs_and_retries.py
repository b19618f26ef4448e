"""Run logs in the database (gzip chunks) and retries of interrupted runs

Revision ID: 0008_run_logs_and_retries
Revises: 0007_tenant_isolation
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_run_logs_and_retries"
down_revision = "0007_tenant_isolation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pipeline_runs") as batch:
        batch.add_column(sa.Column("retry_of_run_id", sa.Integer(), nullable=True))
    # Run detail looks up the run that retries this one.
    op.create_index("ix_pipeline_runs_retry_of_run_id", "pipeline_runs", ["retry_of_run_id"])
    op.create_table(
        "run_log_chunks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("content_gzip", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["pipeline_runs.id"],
            name="fk_run_log_chunks_run_id_pipeline_runs", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_run_log_chunks"),
        sa.UniqueConstraint("run_id", "seq", name="uq_run_log_chunks_run_id_seq"),
    )


def downgrade() -> None:
    op.drop_table("run_log_chunks")
    op.drop_index("ix_pipeline_runs_retry_of_run_id", table_name="pipeline_runs")
    with op.batch_alter_table("pipeline_runs") as batch:
        batch.drop_column("retry_of_run_id")
