"""Keyset paging: a list's order by a unique key, opaque cursors naming a position in
it, and the RFC 8288 `Link` header that leads from a page to the next one.

A cursor is the base64url text of the last row's key as JSON: the next page starts
after that row however many rows were added or deleted meanwhile, and the database finds
it through the key's index instead of walking every row before it, as an offset does.
"""

import base64
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar, cast
from urllib.parse import urlencode

from fastapi import Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, AwareDatetime, Field, TypeAdapter
from sqlalchemy import ColumnElement, bindparam, tuple_
from sqlalchemy.orm import Mapped

from blogapi.config import settings
from blogapi.model_base import MAX_ID, attribute

CURSOR_MAX_CHARS = 200
PAGE_MAX = 100

Limit = Annotated[int, Query(ge=1, le=PAGE_MAX)]
Skip = Annotated[
    int,
    Query(ge=0, le=MAX_ID, description="Rows to leave out; above 0 not with `cursor`"),
]


def cursor_query(example: str) -> Any:
    """The `cursor` query parameter of a list, with an example of its cursors."""
    return Query(
        max_length=CURSOR_MAX_CHARS,
        description="Where the page starts: the one in the previous page's `Link` "
        "header (opaque; a malformed one is a 422)",
        examples=[example],
    )


def link_header(path: str, example_cursor: str) -> dict[str, Any]:
    """The OpenAPI description of a list's `Link` header, with an example."""
    url = f"{path}?{urlencode({'limit': 10, 'cursor': example_cursor})}"
    return {
        "description": 'When more follow: `<URL>; rel="next"`, the URL of the next '
        "page (relative, or on PUBLIC_URL), with the same `limit` (and `search`) and "
        "a `cursor`",
        "schema": {"type": "string"},
        "example": f'<{url}>; rel="next"',
    }


def _in_utc(moment: datetime) -> datetime:
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("Timestamp out of range") from None


RowId = Annotated[int, Field(ge=1, le=MAX_ID)]
Moment = Annotated[AwareDatetime, AfterValidator(_in_utc)]

Key = TypeVar("Key", bound=tuple[Any, ...])
Row = TypeVar("Row")


class Keyset(Generic[Key]):
    """A list ordered by `columns`, which together are unique, and its cursors.

    `Key` is the tuple type of the columns' values, with the bounds a cursor's values must
    keep (a forged one gets a 422, never a database error).
    """

    def __init__(
        self,
        key: Any,
        *columns: Mapped[Any],
        descending: bool = False,
    ) -> None:
        self._key: TypeAdapter[Key] = TypeAdapter(key)
        self._columns = [attribute(column) for column in columns]
        self._names = [f"after_{column.key}" for column in self._columns]
        self.order = [column.desc() if descending else column for column in columns]
        """The ORDER BY clauses."""
        bound = [
            bindparam(name, type_=column.type)
            for name, column in zip(self._names, self._columns, strict=True)
        ]
        left, right = (
            (columns[0], bound[0])
            if len(columns) == 1
            else (tuple_(*columns), tuple_(*bound))
        )
        self.after: ColumnElement[bool] = left < right if descending else left > right
        """The rows after the position that `params` binds."""

    def cursor(self, row: object) -> str:
        """The cursor naming `row`'s position: the next page starts after it."""
        key = cast(Key, tuple(getattr(row, column.key) for column in self._columns))
        return self._encode(key)

    def cursor_of(self, *values: Any) -> str:
        """The cursor naming the position of a row whose columns hold `values`, given
        as JSON would (`"2026-12-04T09:30:00Z"`): for the OpenAPI document's examples."""
        return self._encode(self._key.validate_python(values))

    def _encode(self, key: Key) -> str:
        return base64.urlsafe_b64encode(self._key.dump_json(key)).decode().rstrip("=")

    def params(self, cursor: str) -> dict[str, Any]:
        """The values `after` binds for `cursor`; a malformed cursor is a 422."""
        try:
            text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            key = self._key.validate_json(text)
        except ValueError:  # bad base64 or JSON, or values out of bounds
            raise invalid_query(
                "cursor", "Malformed cursor: pass one from a Link header"
            ) from None
        return dict(zip(self._names, key, strict=True))

    def start(self, cursor: str, skip: int) -> dict[str, Any]:
        """What a page's statement binds to start after `cursor` (with `after`), or
        `skip` rows in (with an OFFSET); both at once is a 422."""
        if not cursor:
            return {"skip": skip}
        if skip:
            raise invalid_query("skip", "Pass either `cursor` or `skip`, not both")
        return self.params(cursor)

    def page(
        self,
        rows: Sequence[Row],
        limit: int,
        response: Response,
        path: str,
        query: Mapping[str, str | int],
    ) -> Sequence[Row]:
        """The first `limit` of `rows` (fetch one more to tell whether more follow);
        when more do, a `Link` header to the page after them: `path` with `query` and
        the cursor."""
        if len(rows) <= limit:
            return rows
        page = rows[:limit]
        url = next_page_url(path, {**query, "cursor": self.cursor(page[-1])})
        response.headers["Link"] = f'<{url}>; rel="next"'
        return page


def newest_first(
    created_at: Mapped[datetime], row_id: Mapped[int | None]
) -> Keyset[tuple[datetime, int]]:
    """Newest first, the highest id first among rows created at the same moment."""
    return Keyset(tuple[Moment, RowId], created_at, row_id, descending=True)


def id_ascending(row_id: Mapped[int | None]) -> Keyset[tuple[int]]:
    """Oldest id first."""
    return Keyset(tuple[RowId], row_id)


def invalid_query(parameter: str, message: str) -> RequestValidationError:
    """A 422 about a query parameter, in the shape of FastAPI's own."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", parameter), "msg": message}]
    )


def next_page_url(path: str, query: Mapping[str, str | int]) -> str:
    """Relative, or on PUBLIC_URL when it is set: never on the request's Host or
    forwarded headers, which a client or a proxy may have rewritten."""
    return f"{settings.public_url}{path}?{urlencode(query)}"
