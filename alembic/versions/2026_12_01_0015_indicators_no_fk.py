"""indicators: no foreign key to pipelines (a first publish of 1M rows on PostgreSQL spent
~6 s of server CPU in its per-row check, which also locks the pipeline row once per row).
The one hard delete of pipelines, purging a deleted profile, deletes their indicator
rows itself (`profiles.lifecycle.purge_deleted`). The downgrade drops any orphaned rows
before it brings the key back.

Revision ID: 0015_indicators_no_fk
Revises: 0014_source_states
"""

import sqlalchemy as sa

from alembic import op

revision = "0015_indicators_no_fk"
down_revision = "0014_source_states"
branch_labels = None
depends_on = None

FK = "fk_indicators_pipeline_id_pipelines"


def upgrade() -> None:
    with op.batch_alter_table("indicators") as batch:
        batch.drop_constraint(FK, type_="foreignkey")


def downgrade() -> None:
    op.execute(sa.text(
        "DELETE FROM indicators WHERE pipeline_id NOT IN (SELECT id FROM pipelines)"
    ))
    with op.batch_alter_table("indicators") as batch:
        batch.create_foreign_key(FK, "pipelines", ["pipeline_id"], ["id"], ondelete="CASCADE")
