"""The app itself: the welcome route, the docs, and the JSON error bodies."""

import pytest
from fastapi.testclient import TestClient

from blogapi.main import create_app


def test_root_names_the_docs(client: TestClient) -> None:
    response = client.get("/")

    assert response.status_code == 200
    assert response.json() == {
        "message": "Welcome to blogapi: the interactive API docs are at /docs"
    }


def test_swagger_ui_is_served(client: TestClient) -> None:
    response = client.get("/docs")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text


def test_unknown_path_is_a_json_404(client: TestClient) -> None:
    response = client.get("/no/such/thing/", follow_redirects=False)

    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_wrong_method_is_a_json_405(client: TestClient) -> None:
    response = client.delete("/")

    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}
    assert response.headers["allow"] == "GET"


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/posts/4", "GET, PUT, PATCH, DELETE"),
        ("/posts/4/", "GET, PUT, PATCH, DELETE"),
        ("/posts/", "GET, POST"),
        # /users/{user_id:int} takes only digits: `me` is no user id.
        ("/users/me", "GET, DELETE"),
        ("/users/me/password", "PUT"),
        ("/users/7", "GET, PATCH"),
        ("/users/", "GET, POST"),
        ("/vote/", "POST"),
    ],
)
@pytest.mark.parametrize("method", ["TRACE", "OPTIONS"])
def test_a_405_names_every_method_of_the_path(
    client: TestClient, path: str, allowed: str, method: str
) -> None:
    response = client.request(method, path)

    assert response.status_code == 405
    assert response.headers["allow"] == allowed


def test_unexpected_error_is_a_json_500_without_internals() -> None:
    app = create_app()

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")

    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error"}
    assert response.headers["x-request-id"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "secret internals" not in response.text


@pytest.mark.parametrize("path", ["/docs/", "/openapi.json/"])
def test_docs_answer_with_a_trailing_slash_too(client: TestClient, path: str) -> None:
    response = client.get(path, follow_redirects=False)

    assert response.status_code == 200
