"""Config delete (profile_configs.deleted_at): a deleted config is gone for the API, its row
kept for the runs and deleted pipelines that reference it

Revision ID: 0013_config_delete
Revises: 0012_explain
"""

import sqlalchemy as sa

from alembic import op

revision = "0013_config_delete"
down_revision = "0012_explain"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("profile_configs") as batch:
        batch.add_column(sa.Column("deleted_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("profile_configs") as batch:
        batch.drop_column("deleted_at")
