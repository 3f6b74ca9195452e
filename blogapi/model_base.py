"""What every model family is built from: the request body base and its integer type,
id bounds, the UTC timestamp column type. Imports nothing of the app."""

from datetime import UTC, datetime
from typing import Annotated, Any, cast

from pydantic import BeforeValidator
from sqlalchemy import DateTime
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.types import TypeDecorator
from sqlmodel import SQLModel

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MAX_ID = 2**31 - 1
"""Ids are INTEGER columns: anything above this cannot name a row."""
NO_NUL = r"^[^\x00]*$"
"""The pattern of text the database can't store with a NUL in it (PostgreSQL refuses one)
or that bcrypt would cut short at one."""


def example(value: Any) -> dict[str, Any]:
    """A field's example in the OpenAPI document, as SQLModel's `Field(schema_extra=)`
    takes it. Swagger UI fills "Try it out" and its example answers with them, field by
    field (a whole example on the model would show its keys sorted). Together they tell
    one story, on an empty database: Ada registers (user 1), writes post 1, votes on it."""
    return {"examples": [value]}


EXAMPLE_ID = 1
EXAMPLE_TIME = "2026-12-04T09:30:00Z"


class RequestBody(SQLModel):
    """The base of every request body: strict, so a value must have the JSON type the
    schema gives (`0` is no boolean, `"5"` no integer) and the OpenAPI document is the
    contract. Query and path parameters, which are text, stay lax."""

    model_config = {"strict": True}


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


IntegralInt = Annotated[int, BeforeValidator(_integral)]
"""The `int` of a request body's fields. JSON Schema's integer is any number without a
fractional part, so `5.0` and `1e0` are integers as much as `5` and `1` are; strict
pydantic refuses them. This takes them, and still refuses `0.5`, `"1"`, `true` and `1e400`
(infinity); the field's bounds then apply as usual. The schema stays `"type": "integer"`."""


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp; SQLite hands back naive values, which are UTC here."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(
        self, value: datetime | None, dialect: Any
    ) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utc_now() -> datetime:
    return datetime.now(UTC)


def attribute(field: Any) -> QueryableAttribute[Any]:
    """A model's field as SQLAlchemy's loader options take it: SQLModel types a class
    attribute as its value (`User.email: str`), though it is the mapped attribute."""
    return cast(QueryableAttribute[Any], field)
