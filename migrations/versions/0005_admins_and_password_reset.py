"""admins: users.is_admin and users.is_active; password_reset_tokens

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 16:50:00

Every existing user becomes an active non-admin; `python -m blogapi make-admin EMAIL`
makes the first admin.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Constant defaults, and no batch: SQLite adds such columns in place (a batch could
    # copy the table, see downgrade).
    op.add_column(
        "users",
        sa.Column("is_admin", sa.Boolean(), nullable=False, server_default="0"),
    )
    op.add_column(
        "users",
        sa.Column("is_active", sa.Boolean(), nullable=False, server_default="1"),
    )
    op.create_table(
        "password_reset_tokens",
        sa.Column("token_hash", sqlmodel.AutoString(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_password_reset_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_password_reset_tokens")),
    )
    op.create_index(
        op.f("ix_password_reset_tokens_user_id"), "password_reset_tokens", ["user_id"]
    )
    op.create_index(
        op.f("ix_password_reset_tokens_expires_at"),
        "password_reset_tokens",
        ["expires_at"],
    )


def downgrade() -> None:
    op.drop_table("password_reset_tokens")
    # Not in a batch: on SQLite that copies the users table and drops the old one, and
    # the drop's ON DELETE CASCADE would empty posts and votes. SQLite (3.35 and later)
    # drops these columns in place.
    op.drop_column("users", "is_active")
    op.drop_column("users", "is_admin")
