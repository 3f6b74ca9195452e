"""The error vocabulary: every failure a client is told about, as an exception that
carries its status, detail and headers. Code at any level raises these; one handler
(blogapi.error_handlers) renders them, and `error_responses()` documents a route's
answers from the same classes."""

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

RETRY_AFTER_SECONDS = 5
"""What Retry-After says when the database is unavailable or not ready yet."""
JSON_MEDIA_TYPE = "application/json"


class ErrorMessage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"detail": "Post 1 not found"}]}
    )

    detail: str


VALIDATION_ERROR_EXAMPLE = {
    "detail": [
        {
            "type": "string_too_short",
            "loc": ["body", "title"],
            "msg": "String should have at least 1 character",
            "ctx": {"min_length": 1},
        }
    ]
}
"""What FastAPI's own 422 (`HTTPValidationError`) says of a post with an empty title."""


OAuthErrorCode = Literal["invalid_request", "invalid_grant", "unsupported_grant_type"]


class OAuthErrorMessage(BaseModel):
    """The token endpoint's error body (RFC 6749 section 5.2)."""

    error: OAuthErrorCode = Field(examples=["invalid_grant"])
    error_description: str = Field(
        description="What went wrong, for a person to read",
        examples=["The refresh token is invalid, expired or revoked; log in again"],
    )


class ApiError(Exception):
    """A failure answered with `status_code` and `{"detail": ...}`.

    Subclasses set the status, the detail they give unless told another, the headers
    they always send, and what the OpenAPI document says of them.
    """

    status_code: ClassVar[int]
    default_detail: ClassVar[str] = ""
    example_detail: ClassVar[str] = ""
    """What the OpenAPI document shows it saying, when it has no default detail."""
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

    @classmethod
    def example(cls) -> str:
        return cls.example_detail or cls.default_detail

    def body(self) -> dict[str, Any]:
        return self.body_saying(self.detail)

    @classmethod
    def body_saying(cls, detail: str) -> dict[str, Any]:
        return {"detail": detail}


class MalformedBody(ApiError):
    """Raised by FastAPI itself; here to be documented."""

    status_code = 400
    default_detail = "There was an error parsing the body"
    description = "The body is not JSON (or not UTF-8)"


class InvalidToken(ApiError):
    status_code = 400
    default_detail = "This reset link is invalid, used or expired; ask for a new one"
    description = "The token is unknown, used or expired"


class OAuthError(ApiError):
    """A refusal of the token endpoint (POST /login) in OAuth's shape, which OAuth
    client libraries read: `{"error": code, "error_description": text}` (RFC 6749
    section 5.2), not `{"detail": ...}`."""

    status_code = 400
    error: ClassVar[OAuthErrorCode]
    model = OAuthErrorMessage
    always_headers: ClassVar[Mapping[str, str]] = {"Cache-Control": "no-store"}

    @classmethod
    def body_saying(cls, detail: str) -> dict[str, Any]:
        return {"error": cls.error, "error_description": detail}


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
    example_detail = "Not authorized to change this post"
    description = "Not allowed to you"


class EmailNotVerified(Forbidden):
    default_detail = (
        "Verify your email first: open the link emailed to you, or ask for a new one "
        "with POST /verify-email/resend"
    )
    description = "The email is not verified yet (REQUIRE_EMAIL_VERIFICATION is on)"


class NotFound(ApiError):
    status_code = 404
    example_detail = "Post 1 not found"
    description = "No such thing, or not one you may see"


class Conflict(ApiError):
    status_code = 409
    example_detail = "Email already registered"
    description = "Conflicts with what is stored"


class ContentTooLarge(ApiError):
    status_code = 413
    example_detail = "Request body is larger than 1048576 bytes"
    description = "The body is larger than MAX_BODY_BYTES"


ACCEPT_HEADERS = {"POST": "Accept-Post", "PATCH": "Accept-Patch"}
"""The header that names the media types a method's body may have: Accept-Post (W3C
Linked Data Platform) and Accept-Patch (RFC 5789)."""


class UnsupportedMediaType(ApiError):
    """A body that isn't JSON, sent to a route that reads JSON (RFC 9110 15.5.16)."""

    status_code = 415
    default_detail = (
        f"The body must be JSON: send it with Content-Type: {JSON_MEDIA_TYPE}"
    )
    description = (
        f"The body is not sent as JSON: its Content-Type must be `{JSON_MEDIA_TYPE}`"
    )

    def __init__(self, method: str) -> None:
        header = ACCEPT_HEADERS.get(method)
        super().__init__(headers={header: JSON_MEDIA_TYPE} if header else None)

    @classmethod
    def responses(cls, methods: Iterable[str]) -> dict[int | str, dict[str, Any]]:
        """Its OpenAPI entry on a route with these methods, with their Accept header."""
        responses = error_responses(cls)
        headers = {
            ACCEPT_HEADERS[method]: f"`{JSON_MEDIA_TYPE}`: the body's media type"
            for method in sorted(methods)
            if method in ACCEPT_HEADERS
        }
        if headers:
            responses[cls.status_code]["headers"] = header_objects(headers)
        return responses


class TooManyAttempts(ApiError):
    status_code = 429
    documented_headers: ClassVar[Mapping[str, str]] = {
        "Retry-After": "Seconds to wait before trying again"
    }
    example_detail = "Too many failed logins; try again later"
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
    example_detail = "schema at 0003, code needs 0004"
    description = (
        "Not ready: the schema is behind the code's (`schema at 0003, code needs "
        "0004`, with Retry-After), or the migrations failed (no Retry-After: see the "
        "server log)"
    )

    def __init__(self, detail: str, retry: bool) -> None:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if retry else None
        super().__init__(detail, headers)


def error_responses(
    *errors: type[ApiError] | ApiError,
) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entries for the errors a route may answer, described by their classes
    (several with one status share its entry), each with an example of what it says:
    the class's, or that of the error given (`NotFound(USER_NOT_FOUND)`)."""
    responses: dict[int | str, dict[str, Any]] = {}
    for error in errors:
        kind = error if isinstance(error, type) else type(error)
        said = error.example() if isinstance(error, type) else error.detail
        entry = responses.setdefault(
            kind.status_code, {"model": kind.model, "description": ""}
        )
        if entry["model"] is not kind.model:
            raise TypeError(
                f"{kind.__name__} answers {kind.status_code} in another shape than "
                "the errors before it: one status, one body schema"
            )
        entry["description"] = "; ".join(
            filter(None, [entry["description"], kind.description])
        )
        examples = (
            entry.setdefault("content", {})
            .setdefault(JSON_MEDIA_TYPE, {})
            .setdefault("examples", {})
        )
        examples[kind.__name__] = {
            "summary": kind.description,
            "value": kind.body_saying(said),
        }
        if kind.documented_headers:
            entry.setdefault("headers", {}).update(
                header_objects(kind.documented_headers)
            )
    return responses


def header_objects(documented: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """OpenAPI header objects for {header name: what it says}."""
    return {
        name: {"description": text, "schema": {"type": "string"}}
        for name, text in documented.items()
    }
