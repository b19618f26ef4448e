"""runs: the dispatcher's heartbeat column and an index for claiming queued runs

Revision ID: 0002_runs
Revises: 79471a8a6fa7
"""
from alembic import op
import sqlalchemy as sa

revision = "0002_runs"
down_revision = "79471a8a6fa7"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pipeline_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(), nullable=True))
        batch_op.create_index("ix_pipeline_runs_state_created_at", ["state", "created_at"])


def downgrade() -> None:
    with op.batch_alter_table("pipeline_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_pipeline_runs_state_created_at")
        batch_op.drop_column("heartbeat_at")
