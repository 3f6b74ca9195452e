"""The error vocabulary: every failure a client is told about, as an exception that
carries its status, detail and headers. Code at any level raises these; one handler
(blogapi.error_handlers) renders them, and `error_responses()` documents a route's
answers from the same classes."""

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

RETRY_AFTER_SECONDS = 5
"""What Retry-After says when the database is unavailable or not ready yet."""


class ErrorMessage(BaseModel):
    detail: str


OAuthErrorCode = Literal["invalid_request", "invalid_grant", "unsupported_grant_type"]


class OAuthErrorMessage(BaseModel):
    """The token endpoint's error body (RFC 6749 section 5.2)."""

    error: OAuthErrorCode
    error_description: str = Field(description="What went wrong, for a person to read")


class ApiError(Exception):
    """A failure answered with `status_code` and `{"detail": ...}`.

    Subclasses set the status, the detail they give unless told another, the headers
    they always send, and what the OpenAPI document says of them.
    """

    status_code: ClassVar[int]
    default_detail: ClassVar[str] = ""
    always_headers: ClassVar[Mapping[str, str]] = {}
    documented_headers: ClassVar[Mapping[str, str]] = {}
    """Header name: what it says, for the OpenAPI document."""
    description: ClassVar[str]
    model: ClassVar[type[BaseModel]] = ErrorMessage
    """The body's schema, for the OpenAPI document: `body()` answers in it."""

    def __init__(
        self, detail: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        self.detail = detail or self.default_detail
        self.headers = {**self.always_headers, **(headers or {})}
        super().__init__(self.detail)

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail}


class MalformedBody(ApiError):
    """Raised by FastAPI itself; here to be documented."""

    status_code = 400
    default_detail = "There was an error parsing the body"
    description = "The body is not JSON (or not UTF-8)"


class InvalidToken(ApiError):
    status_code = 400
    description = "The token is unknown, used or expired"


class OAuthError(ApiError):
    """A refusal of the token endpoint (POST /login) in OAuth's shape, which OAuth
    client libraries read: `{"error": code, "error_description": text}` (RFC 6749
    section 5.2), not `{"detail": ...}`."""

    status_code = 400
    error: ClassVar[OAuthErrorCode]
    model = OAuthErrorMessage
    always_headers: ClassVar[Mapping[str, str]] = {"Cache-Control": "no-store"}

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "error_description": self.detail}


class InvalidGrant(OAuthError):
    error = "invalid_grant"
    default_detail = "The refresh token is invalid, expired or revoked; log in again"
    description = (
        "`invalid_grant`: the refresh token is unknown, expired, already used or "
        "revoked (a used one ends its login session)"
    )


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"
    default_detail = "grant_type must be password or refresh_token"
    description = (
        "`unsupported_grant_type`: a grant_type other than password and refresh_token"
    )


class InvalidTokenRequest(OAuthError):
    error = "invalid_request"
    default_detail = "grant_type=refresh_token needs a refresh_token"
    description = "`invalid_request`: the refresh_token grant without a refresh_token"


class InvalidCredentials(ApiError):
    status_code = 401
    default_detail = "Could not validate credentials"
    always_headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": "Bearer"}
    documented_headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": "`Bearer`"}
    description = "The bearer token is missing, invalid, expired or revoked"


class WrongLogin(ApiError):
    """The one answer to a wrong email or password, so neither can be told apart."""

    status_code = 403
    default_detail = "Invalid Credentials"
    description = "Wrong email or password"


class Forbidden(ApiError):
    status_code = 403
    description = "Not allowed to you"


class NotFound(ApiError):
    status_code = 404
    description = "No such thing, or not one you may see"


class Conflict(ApiError):
    status_code = 409
    description = "Conflicts with what is stored"


class ContentTooLarge(ApiError):
    status_code = 413
    description = "The body is larger than MAX_BODY_BYTES"


class TooManyAttempts(ApiError):
    status_code = 429
    documented_headers: ClassVar[Mapping[str, str]] = {
        "Retry-After": "Seconds to wait before trying again"
    }
    description = "Too many attempts: wait for Retry-After seconds"

    def __init__(self, what: str, retry_after: int) -> None:
        super().__init__(
            f"{what}; try again later", headers={"Retry-After": str(retry_after)}
        )


class DatabaseUnavailable(ApiError):
    status_code = 503
    default_detail = "The database is unavailable; try again shortly"
    always_headers: ClassVar[Mapping[str, str]] = {
        "Retry-After": str(RETRY_AFTER_SECONDS)
    }
    documented_headers: ClassVar[Mapping[str, str]] = {
        "Retry-After": "Seconds to wait before trying again"
    }
    description = (
        "The database is unreachable or busy, or the migrations are not applied yet: "
        "try again after Retry-After seconds"
    )


class NotReady(ApiError):
    """The database answers, but this process can't serve from it: its schema is
    behind the code's (Retry-After: a deploy is under way), or the migrations failed
    (no Retry-After: see the server log)."""

    status_code = 503
    description = (
        "Not ready: the schema is behind the code's (`schema at 0003, code needs "
        "0004`, with Retry-After), or the migrations failed (no Retry-After: see the "
        "server log)"
    )

    def __init__(self, detail: str, retry: bool) -> None:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if retry else None
        super().__init__(detail, headers)


def error_responses(*errors: type[ApiError]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entries for the errors a route may answer, described by their classes
    (several with one status share its entry)."""
    responses: dict[int | str, dict[str, Any]] = {}
    for error in errors:
        entry = responses.setdefault(
            error.status_code, {"model": error.model, "description": ""}
        )
        if entry["model"] is not error.model:
            raise TypeError(
                f"{error.__name__} answers {error.status_code} in another shape than "
                "the errors before it: one status, one body schema"
            )
        entry["description"] = "; ".join(
            filter(None, [entry["description"], error.description])
        )
        if error.documented_headers:
            entry.setdefault("headers", {}).update(
                {
                    name: {"description": text, "schema": {"type": "string"}}
                    for name, text in error.documented_headers.items()
                }
            )
    return responses
