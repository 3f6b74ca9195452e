"""The OpenAPI schema: summaries, tags, every error status documented with `detail`, and
examples that fit their schemas wherever Swagger UI needs one."""

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator, FormatChecker
from pydantic.networks import validate_email
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from tests.factories import create_admin_and_login

ERROR_CODES = {"401", "403", "404", "409", "422"}

# The statuses issue 2 promises for each route, as clients of the course API rely on them,
# and those of issue 14's routes.
EXPECTED = {
    ("get", "/"): {"200"},
    ("post", "/users"): {"201", "409", "422", "429"},
    ("get", "/users/me/export"): {"200", "401", "429"},
    ("get", "/users/me"): {"200", "401"},
    ("get", "/users/{user_id}"): {"200", "401", "404", "422"},
    ("post", "/login"): {"200", "400", "403", "422", "429"},
    ("post", "/logout"): {"204", "401", "422"},
    ("get", "/posts"): {"200", "401", "422"},
    ("post", "/posts"): {"201", "401", "403", "422"},
    ("get", "/posts/{post_id}"): {"200", "401", "404", "422"},
    ("put", "/posts/{post_id}"): {"200", "401", "403", "404", "422"},
    ("patch", "/posts/{post_id}"): {"200", "401", "403", "404", "422"},
    ("delete", "/posts/{post_id}"): {"204", "401", "403", "404", "422"},
    ("post", "/vote"): {"201", "401", "403", "404", "409", "422"},
    ("get", "/users"): {"200", "401", "403", "422"},
    ("patch", "/users/{user_id}"): {"200", "401", "403", "404", "409", "422"},
    ("post", "/password-recovery"): {"202", "422", "429"},
    ("post", "/reset-password"): {"204", "400", "422"},
    ("get", "/reset-password"): {"200"},
    ("post", "/verify-email"): {"204", "400", "422"},
    ("get", "/verify-email"): {"200"},
    ("post", "/verify-email/resend"): {"202", "401", "409", "429"},
}


@pytest.fixture
def openapi(client: TestClient) -> dict:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(openapi: dict) -> dict[tuple[str, str], dict]:
    return {
        (method, path.rstrip("/") or "/"): operation
        for path, item in openapi["paths"].items()
        for method, operation in item.items()
    }


def resolved(openapi: dict, node: dict) -> dict:
    while "$ref" in node:
        target = openapi
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def error_schema(openapi: dict, response: dict) -> dict:
    return resolved(openapi, response["content"]["application/json"]["schema"])


def test_every_route_has_a_summary_and_a_tag(openapi: dict) -> None:
    for (method, path), operation in operations(openapi).items():
        assert operation.get("summary", "").strip(), (method, path)
        assert operation.get("tags"), (method, path)


def test_the_core_routes_are_all_there(openapi: dict) -> None:
    assert set(EXPECTED) <= set(operations(openapi))


@pytest.mark.parametrize(("method", "path"), sorted(EXPECTED))
def test_each_core_route_documents_its_statuses(
    openapi: dict, method: str, path: str
) -> None:
    documented = set(operations(openapi)[(method, path)]["responses"])

    assert EXPECTED[(method, path)] <= documented


def test_every_documented_error_has_a_schema_with_detail(openapi: dict) -> None:
    checked = 0
    for (method, path), operation in operations(openapi).items():
        for code, response in operation["responses"].items():
            if code not in ERROR_CODES:
                continue
            body = error_schema(openapi, response)
            assert "detail" in body.get("properties", {}), (method, path, code)
            checked += 1
    assert checked >= sum(len(codes & ERROR_CODES) for codes in EXPECTED.values())


def test_every_route_behind_a_token_documents_401(openapi: dict) -> None:
    for (method, path), operation in operations(openapi).items():
        if operation.get("security"):
            assert "401" in operation["responses"], (method, path)


def test_bounds_are_documented(openapi: dict) -> None:
    parts = openapi["components"]["schemas"]
    post = parts["PostCreate"]["properties"]
    limit = next(
        parameter
        for parameter in operations(openapi)[("get", "/posts")]["parameters"]
        if parameter["name"] == "limit"
    )

    assert (post["title"]["minLength"], post["title"]["maxLength"]) == (1, 300)
    assert (post["content"]["minLength"], post["content"]["maxLength"]) == (1, 10_000)
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 100)
    assert limit["schema"]["default"] == 10


def test_operation_ids_are_the_route_function_names(openapi: dict) -> None:
    """Clients generated from the document (openapi-ts, openapi-python-client) name
    their methods after the operation ids: `list_posts`, not `list_posts_posts_get`."""
    ids = {
        key: operation["operationId"] for key, operation in operations(openapi).items()
    }

    assert len(set(ids.values())) == len(ids), ids
    assert ids[("get", "/posts")] == "list_posts"
    assert ids[("get", "/posts/{post_id}")] == "read_post"
    assert ids[("post", "/users")] == "create_user"
    assert ids[("post", "/login")] == "login"
    assert ids[("patch", "/users/{user_id}")] == "update_user"
    for operation_id in ids.values():
        assert operation_id.isidentifier(), operation_id


# Examples


def is_timestamp(value: object) -> bool:
    """RFC 3339's date-time, which needs an offset; jsonschema checks it only with a
    package this project doesn't install."""
    return (
        not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None
    )


FORMATS = FormatChecker()
FORMATS.checks("date-time", raises=ValueError)(is_timestamp)
# What the API takes for an email (email-validator), not jsonschema's "has an @".
FORMATS.checks("email", raises=ValueError)(
    lambda value: not isinstance(value, str) or bool(validate_email(value))
)
DOCUMENT_URI = "urn:blogapi:openapi"
SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
SUBSCHEMAS = ("items", "additionalProperties", "not", "contains")


def pointer(*parts: str | int) -> str:
    return "".join(
        "/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts
    )


def schema_examples(schema: Any, at: str) -> Iterator[tuple[str, Any, str]]:
    """(where, value, pointer to the schema it must fit) for the `examples` and
    `example` of a schema and of every schema within it."""
    if not isinstance(schema, dict):
        return
    for index, value in enumerate(schema.get("examples", [])):
        yield f"{at}/examples/{index}", value, at
    if "example" in schema:
        yield f"{at}/example", schema["example"], at
    for name, part in schema.get("properties", {}).items():
        yield from schema_examples(part, at + pointer("properties", name))
    for name, part in schema.get("$defs", {}).items():
        yield from schema_examples(part, at + pointer("$defs", name))
    for key in SUBSCHEMA_LISTS:
        for index, part in enumerate(schema.get(key, [])):
            yield from schema_examples(part, at + pointer(key, index))
    for key in SUBSCHEMAS:
        yield from schema_examples(schema.get(key), at + pointer(key))


def object_examples(holder: dict, at: str) -> Iterator[tuple[str, Any, str]]:
    """Those of a parameter, header or media type: its schema's, its `example`, and
    the `value` of each of its `examples` (a map of Example Objects)."""
    schema = at + pointer("schema")
    yield from schema_examples(holder.get("schema"), schema)
    if "example" in holder:
        yield f"{at}/example", holder["example"], schema
    for name, example in holder.get("examples", {}).items():
        yield at + pointer("examples", name, "value"), example["value"], schema


def document_examples(document: dict) -> Iterator[tuple[str, Any, str]]:
    for name, schema in document["components"]["schemas"].items():
        yield from schema_examples(schema, pointer("components", "schemas", name))
    for path, item in document["paths"].items():
        for method, operation in item.items():
            at = pointer("paths", path, method)
            for index, parameter in enumerate(operation.get("parameters", [])):
                yield from object_examples(parameter, at + pointer("parameters", index))
            body = operation.get("requestBody", {})
            for media, content in body.get("content", {}).items():
                yield from object_examples(
                    content, at + pointer("requestBody", "content", media)
                )
            for code, response in operation["responses"].items():
                for media, content in response.get("content", {}).items():
                    yield from object_examples(
                        content, at + pointer("responses", code, "content", media)
                    )
                for name, header in response.get("headers", {}).items():
                    yield from object_examples(
                        header, at + pointer("responses", code, "headers", name)
                    )


def misfits(document: dict) -> dict[str, list[str]]:
    """{where: what is wrong} for every example that doesn't fit its schema."""
    registry = Registry().with_resource(
        DOCUMENT_URI, DRAFT202012.create_resource(document)
    )
    found = {}
    for where, value, schema in document_examples(document):
        validator = Draft202012Validator(
            {"$ref": f"{DOCUMENT_URI}#{schema}"},
            registry=registry,
            format_checker=FORMATS,
        )
        errors = [error.message for error in validator.iter_errors(value)]
        if errors:
            found[where] = errors
    return found


def test_every_example_fits_its_schema(openapi: dict) -> None:
    assert misfits(openapi) == {}
    assert len(list(document_examples(openapi))) > 100


def test_the_example_check_finds_misfits(openapi: dict) -> None:
    """The check above can fail: a title too long, no email, a time without an offset,
    a parameter out of bounds, a body example that is not a post."""
    schemas = openapi["components"]["schemas"]
    schemas["PostCreate"]["properties"]["title"]["examples"] = ["x" * 301]
    schemas["UserCreate"]["properties"]["email"]["examples"] = ["ada@"]
    schemas["UserPublic"]["properties"]["created_at"]["examples"] = [
        "2026-12-04T09:30:00"
    ]
    read_post = operations(openapi)[("get", "/posts/{post_id}")]
    read_post["parameters"][0]["schema"]["examples"] = [0]
    create_post = operations(openapi)[("post", "/posts")]
    create_post["requestBody"]["content"]["application/json"]["example"] = {"a": 1}

    assert set(misfits(openapi)) == {
        "/components/schemas/PostCreate/properties/title/examples/0",
        "/components/schemas/UserCreate/properties/email/examples/0",
        "/components/schemas/UserPublic/properties/created_at/examples/0",
        "/paths/~1posts~1{post_id}/get/parameters/0/schema/examples/0",
        "/paths/~1posts/post/requestBody/content/application~1json/example",
    }


def has_example(openapi: dict, schema: dict) -> bool:
    """Whether Swagger UI can fill in the whole value from examples: the schema's own,
    or those of every alternative, item or property."""
    schema = resolved(openapi, schema)
    if "examples" in schema or "example" in schema or schema.get("type") == "null":
        return True
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return all(has_example(openapi, part) for part in schema[key])
    if schema.get("type") == "array":
        return has_example(openapi, schema["items"])
    if schema.get("type") == "object" and schema.get("properties"):
        return all(has_example(openapi, part) for part in schema["properties"].values())
    return False


def media_has_example(openapi: dict, media: dict) -> bool:
    return (
        "example" in media
        or bool(media.get("examples"))
        or has_example(openapi, media["schema"])
    )


def test_every_body_and_success_answer_has_an_example(openapi: dict) -> None:
    lacking = []
    checked = 0
    for (method, path), operation in operations(openapi).items():
        bodies = operation.get("requestBody", {}).get("content", {})
        answers = [
            response["content"]["application/json"]
            for code, response in operation["responses"].items()
            if code.startswith("2")
            and "application/json" in response.get("content", {})
        ]
        for media in [*bodies.values(), *answers]:
            checked += 1
            if not media_has_example(openapi, media):
                lacking.append((method, path, media))

    assert lacking == []
    assert checked >= 25


def test_the_documented_cursors_start_a_page(client: TestClient, openapi: dict) -> None:
    _, headers = create_admin_and_login(client)
    for path in ("/posts", "/users"):
        (cursor,) = [
            parameter["schema"]["examples"][0]
            for parameter in operations(openapi)[("get", path)]["parameters"]
            if parameter["name"] == "cursor"
        ]

        response = client.get(path, params={"cursor": cursor}, headers=headers)

        assert response.status_code == 200, (path, response.text)


# 415 for a body that is not JSON


def test_every_json_body_route_documents_415_with_its_accept_header(
    openapi: dict,
) -> None:
    documented = {}
    for (method, path), operation in operations(openapi).items():
        body = operation.get("requestBody", {}).get("content", {})
        answer = operation["responses"].get("415")
        assert ("application/json" in body) == (answer is not None), (method, path)
        if answer is None:
            continue
        assert "application/json" in answer["description"]
        assert "detail" in error_schema(openapi, answer)["properties"]
        documented[(method, path)] = set(answer.get("headers", {}))

    assert documented == {
        ("post", "/users"): {"Accept-Post"},
        ("put", "/users/me/password"): set(),
        ("delete", "/users/me"): set(),
        ("patch", "/users/{user_id}"): {"Accept-Patch"},
        ("post", "/password-recovery"): {"Accept-Post"},
        ("post", "/reset-password"): {"Accept-Post"},
        ("post", "/verify-email"): {"Accept-Post"},
        ("post", "/posts"): {"Accept-Post"},
        ("put", "/posts/{post_id}"): set(),
        ("patch", "/posts/{post_id}"): {"Accept-Patch"},
        ("post", "/vote"): {"Accept-Post"},
        ("post", "/logout"): {"Accept-Post"},
    }
