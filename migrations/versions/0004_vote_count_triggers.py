"""votes: posts.votes kept by triggers on the votes table

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 13:40:00

Every vote row added, removed (by the app, by a cascade from a deleted user or post, or
by hand) or moved to another post changes the count in the same statement, so no code
path can make the counts drift. The counts are recomputed from the rows on the way in.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RECOUNT = (
    "UPDATE posts SET votes = "
    "(SELECT count(*) FROM votes WHERE votes.post_id = posts.id)"
)

POSTGRESQL = [
    """
    CREATE FUNCTION posts_count_votes() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP IN ('DELETE', 'UPDATE') THEN
            UPDATE posts SET votes = votes - 1 WHERE id = OLD.post_id;
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            UPDATE posts SET votes = votes + 1 WHERE id = NEW.post_id;
        END IF;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER votes_count AFTER INSERT OR DELETE OR UPDATE OF post_id ON votes
    FOR EACH ROW EXECUTE FUNCTION posts_count_votes()
    """,
    """
    CREATE FUNCTION posts_zero_votes() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE posts SET votes = 0 WHERE votes <> 0;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER votes_truncate AFTER TRUNCATE ON votes
    FOR EACH STATEMENT EXECUTE FUNCTION posts_zero_votes()
    """,
]

SQLITE = [
    """
    CREATE TRIGGER votes_count_insert AFTER INSERT ON votes BEGIN
        UPDATE posts SET votes = votes + 1 WHERE id = NEW.post_id;
    END
    """,
    """
    CREATE TRIGGER votes_count_delete AFTER DELETE ON votes BEGIN
        UPDATE posts SET votes = votes - 1 WHERE id = OLD.post_id;
    END
    """,
    """
    CREATE TRIGGER votes_count_move AFTER UPDATE OF post_id ON votes BEGIN
        UPDATE posts SET votes = votes - 1 WHERE id = OLD.post_id;
        UPDATE posts SET votes = votes + 1 WHERE id = NEW.post_id;
    END
    """,
]


def upgrade() -> None:
    postgresql = op.get_context().dialect.name == "postgresql"
    for statement in POSTGRESQL if postgresql else SQLITE:
        op.execute(statement)
    op.execute(RECOUNT)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER votes_truncate ON votes")
        op.execute("DROP TRIGGER votes_count ON votes")
        op.execute("DROP FUNCTION posts_zero_votes()")
        op.execute("DROP FUNCTION posts_count_votes()")
    else:
        for name in ("insert", "delete", "move"):
            op.execute(f"DROP TRIGGER votes_count_{name}")
    # The code this goes back to keeps the counts itself; what the new code did while
    # the triggers were gone (a rollback's window) is counted again.
    op.execute(RECOUNT)
