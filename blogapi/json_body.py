"""The route class of every router: a route that reads a JSON body answers a body sent
as anything else (a form, text, no Content-Type) with 415 Unsupported Media Type,
naming `application/json`, instead of FastAPI's 422 "Input should be a valid
dictionary", and documents that answer.

A route reads a JSON body when a parameter of its function is a `RequestBody`; make its
router with `APIRouter(..., route_class=JsonBodyRoute)`.
"""

import email.message
import inspect
from collections.abc import Callable, Coroutine
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from fastapi import Request, Response
from fastapi.routing import APIRoute

from blogapi.errors import UnsupportedMediaType
from blogapi.model_base import RequestBody


def is_json(content_type: str | None) -> bool:
    """Whether FastAPI reads a body of this Content-Type as JSON: `application/json` or
    `application/*+json`, whatever its parameters (`; charset=utf-8`)."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def reads_json_body(endpoint: Callable[..., Any]) -> bool:
    """Whether a parameter of the route function is a request body model."""
    for parameter in inspect.signature(endpoint, eval_str=True).parameters.values():
        kind = parameter.annotation
        if get_origin(kind) is Annotated:
            kind = get_args(kind)[0]
        # An optional body (`LogoutRequest | None`) is read as JSON when it is sent.
        kinds = get_args(kind) if get_origin(kind) in (Union, UnionType) else (kind,)
        if any(isinstance(k, type) and issubclass(k, RequestBody) for k in kinds):
            return True
    return False


class JsonBodyRoute(APIRoute):
    """An APIRoute that refuses, with 415, a body its JSON-reading route can't read,
    before authentication or any other check runs, and documents the 415 (with
    Accept-Post on POST routes, Accept-Patch on PATCH ones). A missing body goes on to
    FastAPI's 422."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        self.reads_json = reads_json_body(endpoint)
        if self.reads_json:
            kwargs["responses"] = {
                **(kwargs.get("responses") or {}),
                **UnsupportedMediaType.responses(kwargs.get("methods") or ()),
            }
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not self.reads_json:
            return handler

        async def json_only(request: Request) -> Response:
            if (
                not is_json(request.headers.get("content-type"))
                and await request.body()
            ):
                raise UnsupportedMediaType(request.method)
            return await handler(request)

        return json_only
