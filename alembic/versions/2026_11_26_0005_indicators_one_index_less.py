"""indicators: drop ix_indicators_pipeline_id (the unique (pipeline_id, type, value) index
already leads with pipeline_id; one index less to maintain on every million-row write)

Revision ID: 0005_indicators_one_index_less
Revises: 0004_key_scope_changes
"""

from alembic import op

revision = "0005_indicators_one_index_less"
down_revision = "0004_key_scope_changes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("indicators") as batch:
        batch.drop_index("ix_indicators_pipeline_id")


def downgrade() -> None:
    with op.batch_alter_table("indicators") as batch:
        batch.create_index("ix_indicators_pipeline_id", ["pipeline_id"], unique=False)
