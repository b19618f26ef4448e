"""artifacts.pruned_at: old runs' artifact bytes are dropped, their metadata kept

Revision ID: 0006_artifact_pruned_at
Revises: 0005_indicators_one_index_less
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_artifact_pruned_at"
down_revision = "0005_indicators_one_index_less"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("artifacts") as batch:
        batch.add_column(sa.Column("pruned_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_column("pruned_at")
