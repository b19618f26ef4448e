"""runs: columns the run layer adds (placeholder until it needs one)

Revision ID: 0002_runs
Revises: 79471a8a6fa7
"""
from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401

revision = "0002_runs"
down_revision = "79471a8a6fa7"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
