"""Factories for users, tokens and posts, made through the API itself."""

from itertools import count
from typing import Any

from fastapi.testclient import TestClient

PASSWORD = "correct horse battery"
_serial = count(1)


def create_user(client: TestClient, email: str | None = None, password: str = PASSWORD) -> dict:
    email = email or f"user{next(_serial)}@example.com"
    response = client.post("/users/", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    return response.json()


def login(client: TestClient, email: str, password: str = PASSWORD) -> dict[str, str]:
    response = client.post("/login", data={"username": email, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def create_user_and_login(client: TestClient) -> tuple[dict, dict[str, str]]:
    user = create_user(client)
    return user, login(client, user["email"])


def create_post(client: TestClient, headers: dict[str, str], **fields: Any) -> dict:
    body = {"title": f"Post {next(_serial)}", "content": "Some content", **fields}
    response = client.post("/posts/", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()
