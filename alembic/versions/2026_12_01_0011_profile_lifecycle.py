"""Profile delete (profiles.deleted_at), unique live names of profiles and admin accounts

Revision ID: 0011_profile_lifecycle
Revises: 0010_webhooks

An install of an earlier version may hold the same name twice (names were not unique):
the oldest row keeps it, each later one is renamed `name (2)`, `name (3)`, … — the first
suffix no other row has — so the unique indexes can be made.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_profile_lifecycle"
down_revision = "0010_webhooks"
branch_labels = None
depends_on = None

NAME_MAX = 200  # profiles.name and admin_accounts.name are String(200)


def free_name(name: str, taken: set[str]) -> str:
    """`name (n)` for the smallest n >= 2 not in `taken`, cut to fit NAME_MAX."""
    n = 2
    while True:
        suffix = f" ({n})"
        candidate = name[: NAME_MAX - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
        n += 1


def _rename_duplicates(table: str, live_column: str) -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(f"SELECT id, name FROM {table} WHERE {live_column} IS NULL ORDER BY id")
    ).all()
    taken = {name for _, name in rows}
    seen: set[str] = set()
    for row_id, name in rows:
        if name not in seen:
            seen.add(name)
            continue
        new = free_name(name, taken)
        taken.add(new)
        seen.add(new)
        bind.execute(
            sa.text(f"UPDATE {table} SET name = :name WHERE id = :id"),
            {"name": new, "id": row_id},
        )


def upgrade() -> None:
    with op.batch_alter_table("profiles") as batch:
        batch.add_column(sa.Column("deleted_at", sa.DateTime(), nullable=True))
        batch.create_index("ix_profiles_deleted_at", ["deleted_at"])
    _rename_duplicates("profiles", "deleted_at")
    _rename_duplicates("admin_accounts", "revoked_at")
    live_profile = sa.text("deleted_at IS NULL")
    op.create_index(
        "uq_profiles_live_name", "profiles", ["name"], unique=True,
        sqlite_where=live_profile, postgresql_where=live_profile,
    )
    live_account = sa.text("revoked_at IS NULL")
    op.create_index(
        "uq_admin_accounts_live_name", "admin_accounts", ["name"], unique=True,
        sqlite_where=live_account, postgresql_where=live_account,
    )


def downgrade() -> None:
    # Renamed duplicates keep their new names (which row was which is not recorded).
    op.drop_index("uq_admin_accounts_live_name", table_name="admin_accounts")
    op.drop_index("uq_profiles_live_name", table_name="profiles")
    with op.batch_alter_table("profiles") as batch:
        batch.drop_index("ix_profiles_deleted_at")
        batch.drop_column("deleted_at")
