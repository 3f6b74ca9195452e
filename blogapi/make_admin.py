"""`python -m blogapi make-admin EMAIL [--revoke]`: make a registered user an admin, or
an ordinary user again, straight in the database. It needs only DATABASE_URL.

Exit status: 0 done, 1 no user has that email, 2 wrong arguments or a setting that can't
be used, 3 the database can't be reached or its schema is behind this code's (apply the
migrations first).
"""

import argparse
import sys
from collections.abc import Sequence

from sqlalchemy import bindparam
from sqlalchemy.exc import DBAPIError
from sqlmodel import col, update

from blogapi.config import settings
from blogapi.db import build_sync_engine
from blogapi.db_errors import is_unreachable, unreachable_message
from blogapi.migration_state import (
    MigrationState,
    database_revisions,
    revision_names,
)
from blogapi.users import User, normal_email

DONE, NO_SUCH_USER, DATABASE_NOT_READY = 0, 1, 3

_SET_ADMIN = (
    update(User)
    .where(col(User.email) == bindparam("the_email"))
    .values(is_admin=bindparam("make_admin"))
    .returning(col(User.id), col(User.is_active))
)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m blogapi make-admin",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("email", help="the email the user registered with")
    parser.add_argument(
        "--revoke", action="store_true", help="make the admin an ordinary user again"
    )
    return parser.parse_args(argv)


def make_admin(argv: Sequence[str]) -> int:
    """Run the command; its exit status."""
    args = parse_args(argv)
    email = normal_email(args.email)
    database = settings.sqlite_path
    if settings.is_sqlite and database is not None and not database.exists():
        # Connecting would create an empty file there.
        print(
            f"There is no database at {database}: set DATABASE_URL to the server's.",
            file=sys.stderr,
        )
        return DATABASE_NOT_READY
    engine = build_sync_engine(settings.database_url)
    try:
        with engine.begin() as connection:
            found, migrations = (
                database_revisions(connection),
                MigrationState.of_this_code(),
            )
            if migrations.is_behind(found):
                print(
                    f"The database schema is at {revision_names(found)}, and this code "
                    f"needs {revision_names(migrations.heads)}: apply the migrations first "
                    "(alembic upgrade head, or start the server once).",
                    file=sys.stderr,
                )
                return DATABASE_NOT_READY
            changed = connection.execute(
                _SET_ADMIN, {"the_email": email, "make_admin": not args.revoke}
            ).first()
    except DBAPIError as error:
        if not is_unreachable(error):
            raise
        print(f"{unreachable_message(error)}.", file=sys.stderr)
        return DATABASE_NOT_READY
    finally:
        engine.dispose()
    if changed is None:
        print(
            f"No user has the email {email}: register it first (POST /users/).",
            file=sys.stderr,
        )
        return NO_SUCH_USER
    print(
        f"{email} (user {changed.id}) is {'no longer' if args.revoke else 'now'} an admin."
    )
    if not changed.is_active:
        print(
            f"The account is disabled: an admin can enable it with PATCH /users/{changed.id}."
        )
    return DONE
