"""users.email_verified, and email_verification_tokens

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 14:00:00

Accounts that exist when it runs count as verified: they were made before anyone was
asked to verify. Accounts registered from then on start unverified (the column's default,
for an older release serving beside this one too) until their owner uses an emailed link.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A constant default, and no batch: SQLite adds the column in place (a batch copies
    # the users table, and dropping the old one would cascade to every post and vote).
    op.add_column(
        "users",
        sa.Column("email_verified", sa.Boolean(), nullable=False, server_default="0"),
    )
    op.execute(sa.text("UPDATE users SET email_verified = true"))
    op.create_table(
        "email_verification_tokens",
        sa.Column("token_hash", sqlmodel.AutoString(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_email_verification_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "token_hash", name=op.f("pk_email_verification_tokens")
        ),
    )
    op.create_index(
        op.f("ix_email_verification_tokens_user_id"),
        "email_verification_tokens",
        ["user_id"],
    )
    op.create_index(
        op.f("ix_email_verification_tokens_expires_at"),
        "email_verification_tokens",
        ["expires_at"],
    )


def downgrade() -> None:
    op.drop_table("email_verification_tokens")
    # In place, not in a batch (see upgrade); SQLite 3.35 and later drops a column so.
    op.drop_column("users", "email_verified")
