"""The OpenAPI schema: summaries, tags, and every error status documented with `detail`."""

import pytest
from fastapi.testclient import TestClient

ERROR_CODES = {"401", "403", "404", "409", "422"}

# The statuses issue 2 promises for each route, as clients of the course API rely on them,
# and those of issue 14's routes.
EXPECTED = {
    ("get", "/"): {"200"},
    ("post", "/users"): {"201", "409", "422", "429"},
    ("get", "/users/me/export"): {"200", "401", "429"},
    ("get", "/users/me"): {"200", "401"},
    ("get", "/users/{user_id}"): {"200", "401", "404", "422"},
    ("post", "/login"): {"200", "403", "422"},
    ("get", "/posts"): {"200", "401", "422"},
    ("post", "/posts"): {"201", "401", "422"},
    ("get", "/posts/{post_id}"): {"200", "401", "404", "422"},
    ("put", "/posts/{post_id}"): {"200", "401", "403", "404", "422"},
    ("patch", "/posts/{post_id}"): {"200", "401", "403", "404", "422"},
    ("delete", "/posts/{post_id}"): {"204", "401", "403", "404", "422"},
    ("post", "/vote"): {"201", "401", "404", "409", "422"},
    ("get", "/users"): {"200", "401", "403", "422"},
    ("patch", "/users/{user_id}"): {"200", "401", "403", "404", "409", "422"},
    ("post", "/password-recovery"): {"202", "422", "429"},
    ("post", "/reset-password"): {"204", "400", "422"},
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


def error_schema(openapi: dict, response: dict) -> dict:
    node = response["content"]["application/json"]["schema"]
    while "$ref" in node:
        target = openapi
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


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
