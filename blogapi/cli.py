"""The command line, `python -m blogapi` (and a `blogapi` console script, the same
`main`): with no command it serves the API (blogapi.server); `make-admin` makes a user
an admin (blogapi.make_admin)."""

import sys
from collections.abc import Sequence

MAKE_ADMIN = "make-admin"


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == [MAKE_ADMIN]:
        # Imported here, so that serving never loads the command's code, nor it the server's.
        from blogapi.make_admin import make_admin

        sys.exit(make_admin(args[1:]))
    from blogapi.server import serve

    serve(args)
