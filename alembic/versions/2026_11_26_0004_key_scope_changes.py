"""admin_accounts.scope_changed_at: lets every process drop a revoked or re-scoped key

Revision ID: 0004_key_scope_changes
Revises: 0003_feeds
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_key_scope_changes"
down_revision = "0003_feeds"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("admin_accounts") as batch:
        batch.add_column(sa.Column("scope_changed_at", sa.DateTime(), nullable=True))
        batch.create_index("ix_admin_accounts_scope_changed_at", ["scope_changed_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("admin_accounts") as batch:
        batch.drop_index("ix_admin_accounts_scope_changed_at")
        batch.drop_column("scope_changed_at")
