"""feeds: columns the feed layer adds (placeholder until it needs one)

Revision ID: 0003_feeds
Revises: 0002_runs
"""
from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401

revision = "0003_feeds"
down_revision = "0002_runs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
