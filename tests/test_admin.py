"""Admins: the user list, disabling and enabling accounts, making admins, and what admins
see and delete; what a disabled account can no longer do."""

import logging

import pytest
from fastapi.testclient import TestClient

from blogapi.auth import ACCOUNT_DISABLED
from tests.factories import (
    PASSWORD,
    assert_invalid,
    assert_unauthorized,
    blogapi_log,
    create_admin_and_login,
    create_post,
    create_user,
    create_user_and_login,
    log_in,
    login,
    vote,
)
from tests.test_paging import walk
from tests.test_query_counts import USER_LOOKUP, recorded_statements
from tests.test_refresh import assert_invalid_grant, refresh, refreshed, works


def disable(
    client: TestClient, admin: dict[str, str], user_id: int, active: bool = False
) -> dict:
    response = client.patch(
        f"/users/{user_id}", json={"is_active": active}, headers=admin
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_registration_makes_an_active_non_admin(client: TestClient) -> None:
    user = create_user(client)
    _, admin = create_admin_and_login(client)

    (listed,) = [
        account
        for account in client.get("/users/", headers=admin).json()
        if account["id"] == user["id"]
    ]

    assert listed == {**user, "is_admin": False, "is_active": True}


def test_admins_list_every_user_with_emails_by_id_and_paged(
    client: TestClient,
) -> None:
    admin_user, admin = create_admin_and_login(client)
    others = [create_user(client) for _ in range(4)]
    disable(client, admin, others[1]["id"])

    everyone = client.get("/users/?limit=100", headers=admin)
    page = client.get("/users/?limit=2&skip=1", headers=admin)

    assert everyone.status_code == 200
    assert [u["id"] for u in everyone.json()] == [admin_user["id"]] + [
        u["id"] for u in others
    ]
    assert [u["email"] for u in everyone.json()][1:] == [u["email"] for u in others]
    assert [u["is_active"] for u in everyone.json()] == [True, True, False, True, True]
    assert [u["is_admin"] for u in everyone.json()] == [
        True,
        False,
        False,
        False,
        False,
    ]
    assert [u["id"] for u in page.json()] == [others[0]["id"], others[1]["id"]]
    assert all("password_hash" not in u for u in everyone.json())


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("get", "/users/", None), ("patch", "/users/1", {"is_active": False})],
)
def test_non_admins_get_403(
    client: TestClient, method: str, path: str, body: dict | None
) -> None:
    _, headers = create_user_and_login(client)

    response = client.request(method, path, json=body, headers=headers)

    assert response.status_code == 403
    assert response.json() == {"detail": "Only admins may do this"}


def test_the_admin_routes_need_a_token(client: TestClient) -> None:
    for response in (
        client.get("/users/"),
        client.patch("/users/1", json={"is_active": False}),
    ):
        assert_unauthorized(response, "Not authenticated")


def test_user_list_bounds(client: TestClient) -> None:
    _, admin = create_admin_and_login(client)

    assert_invalid(client.get("/users/?limit=0", headers=admin), ("query", "limit"))
    assert_invalid(client.get("/users/?limit=101", headers=admin), ("query", "limit"))
    assert_invalid(client.get("/users/?skip=-1", headers=admin), ("query", "skip"))


def test_a_disabled_user_s_tokens_stop_at_once_and_login_says_disabled(
    client: TestClient,
) -> None:
    user, headers = create_user_and_login(client)
    _, admin = create_admin_and_login(client)
    assert client.get("/users/me", headers=headers).status_code == 200

    changed = disable(client, admin, user["id"])

    assert changed == {**user, "is_admin": False, "is_active": False}
    assert_unauthorized(client.get("/users/me", headers=headers))
    assert_unauthorized(
        client.post("/posts/", json={"title": "t", "content": "c"}, headers=headers)
    )
    right = client.post(
        "/login", data={"username": user["email"], "password": PASSWORD}
    )
    assert right.status_code == 403
    assert right.json() == {"detail": ACCOUNT_DISABLED}
    wrong = client.post(
        "/login", data={"username": user["email"], "password": "not it!!"}
    )
    assert wrong.status_code == 403
    assert wrong.json() == {"detail": "Invalid Credentials"}


def test_enabling_again_lets_the_user_log_in_but_old_tokens_stay_dead(
    client: TestClient,
) -> None:
    user, headers = create_user_and_login(client)
    _, admin = create_admin_and_login(client)
    disable(client, admin, user["id"])

    enabled = disable(client, admin, user["id"], active=True)

    assert enabled["is_active"] is True
    assert_unauthorized(client.get("/users/me", headers=headers))
    fresh = login(client, user["email"])
    assert client.get("/users/me", headers=fresh).json()["id"] == user["id"]


def test_disabling_a_user_ends_every_login_session_for_good(
    client: TestClient,
) -> None:
    """Their refresh tokens stop with their access tokens, and enabling the account
    again brings none of them back."""
    user = create_user(client)
    first, second = log_in(client, user["email"]), log_in(client, user["email"])
    bystander = log_in(client, create_user(client)["email"])
    _, admin = create_admin_and_login(client)

    disable(client, admin, user["id"])

    for tokens in (first, second):
        assert_invalid_grant(refresh(client, tokens["refresh_token"]))
    disable(client, admin, user["id"], active=True)
    for tokens in (first, second):
        assert_invalid_grant(refresh(client, tokens["refresh_token"]))
        assert not works(client, tokens)
    assert works(client, refreshed(client, bystander))
    assert works(client, refreshed(client, log_in(client, user["email"])))


def test_a_disabled_user_s_posts_are_hidden_from_all_but_admins_until_enabled(
    client: TestClient,
) -> None:
    author, author_headers = create_user_and_login(client)
    _, reader = create_user_and_login(client)
    _, admin = create_admin_and_login(client)
    post = create_post(client, author_headers, title="Spam spam")
    kept = create_post(client, reader, title="Spam-free")

    disable(client, admin, author["id"])

    for headers, sees in ((reader, False), (admin, True)):
        listed = [p["id"] for p in client.get("/posts/", headers=headers).json()]
        found = [
            p["id"] for p in client.get("/posts/?search=spam", headers=headers).json()
        ]
        one = client.get(f"/posts/{post['id']}", headers=headers)
        assert (post["id"] in listed, post["id"] in found) == (sees, sees)
        assert kept["id"] in listed and kept["id"] in found
        assert one.status_code == (200 if sees else 404)
    assert vote(client, reader, post["id"]).status_code == 404

    disable(client, admin, author["id"], active=True)

    assert client.get(f"/posts/{post['id']}", headers=reader).status_code == 200
    assert vote(client, reader, post["id"]).status_code == 201


def test_admins_see_and_vote_on_drafts(client: TestClient) -> None:
    _, author = create_user_and_login(client)
    _, reader = create_user_and_login(client)
    _, admin = create_admin_and_login(client)
    draft = create_post(client, author, published=False)

    assert client.get(f"/posts/{draft['id']}", headers=reader).status_code == 404
    assert client.get(f"/posts/{draft['id']}", headers=admin).json() == draft
    listed = client.get("/posts/", headers=admin).json()
    assert [p["id"] for p in listed] == [draft["id"]]
    assert vote(client, admin, draft["id"]).status_code == 201


@pytest.mark.parametrize("published", [True, False])
def test_an_admin_deletes_anyone_s_post_and_it_is_logged(
    client: TestClient, caplog: pytest.LogCaptureFixture, published: bool
) -> None:
    author, author_headers = create_user_and_login(client)
    admin_user, admin = create_admin_and_login(client)
    post = create_post(client, author_headers, published=published)
    caplog.set_level(logging.INFO)

    with blogapi_log(caplog):
        response = client.delete(f"/posts/{post['id']}", headers=admin)

    assert response.status_code == 204
    assert response.content == b""
    assert client.get(f"/posts/{post['id']}", headers=author_headers).status_code == 404
    assert (
        f"admin {admin_user['id']} ({admin_user['email']}) deleted post {post['id']} "
        f"of user {author['id']}"
    ) in caplog.text


def test_an_admin_still_may_not_edit_others_posts(client: TestClient) -> None:
    _, author = create_user_and_login(client)
    _, admin = create_admin_and_login(client)
    post = create_post(client, author)

    response = client.patch(f"/posts/{post['id']}", json={"title": "x"}, headers=admin)

    assert response.status_code == 403


def test_others_still_may_not_delete_a_post(client: TestClient) -> None:
    _, author = create_user_and_login(client)
    _, other = create_user_and_login(client)
    post = create_post(client, author)

    response = client.delete(f"/posts/{post['id']}", headers=other)

    assert response.status_code == 403
    assert response.json() == {"detail": "Not authorized to change this post"}


@pytest.mark.parametrize("change", [{"is_active": False}, {"is_admin": False}])
def test_an_admin_cannot_disable_or_demote_themselves(
    client: TestClient, change: dict
) -> None:
    admin_user, admin = create_admin_and_login(client)

    response = client.patch(f"/users/{admin_user['id']}", json=change, headers=admin)

    assert response.status_code == 409
    assert response.json() == {"detail": "Admins cannot disable or demote themselves"}
    assert client.get("/users/me", headers=admin).status_code == 200
    (me,) = client.get("/users/", headers=admin).json()
    assert me["is_admin"] and me["is_active"]


def test_admins_make_and_unmake_admins(client: TestClient) -> None:
    _, admin = create_admin_and_login(client)
    user, headers = create_user_and_login(client)

    promoted = client.patch(
        f"/users/{user['id']}", json={"is_admin": True}, headers=admin
    )
    assert promoted.json()["is_admin"] is True
    assert client.get("/users/", headers=headers).status_code == 200

    demoted = client.patch(
        f"/users/{user['id']}", json={"is_admin": False}, headers=admin
    )
    assert demoted.json()["is_admin"] is False
    assert client.get("/users/", headers=headers).status_code == 403
    assert client.get("/users/me", headers=headers).status_code == 200


def test_patch_user_errors(client: TestClient) -> None:
    _, admin = create_admin_and_login(client)
    user = create_user(client)

    missing = client.patch("/users/999999", json={"is_active": False}, headers=admin)
    assert missing.status_code == 404
    assert missing.json() == {"detail": "User not found"}
    assert_invalid(
        client.patch(f"/users/{user['id']}", json={}, headers=admin),
        ("body",),
        "Send is_active, is_admin or both",
    )
    assert_invalid(
        client.patch(f"/users/{user['id']}", json={"is_active": None}, headers=admin),
        ("body", "is_active"),
    )
    assert_invalid(
        client.patch(
            f"/users/{user['id']}", json={"is_active": "maybe"}, headers=admin
        ),
        ("body", "is_active"),
    )


def test_the_schema_says_a_change_needs_a_field(client: TestClient) -> None:
    """`{}` is a 422, so the schema asks for is_active or is_admin (an unknown field is
    ignored, so no `minProperties`)."""
    schemas = client.get("/openapi.json").json()["components"]["schemas"]

    assert schemas["UserAccountUpdate"]["anyOf"] == [
        {"required": ["is_active"]},
        {"required": ["is_admin"]},
    ]


def test_admin_requests_run_a_fixed_number_of_statements(client: TestClient) -> None:
    _, admin = create_admin_and_login(client)
    users = [create_user(client) for _ in range(30)]
    _, author = create_user_and_login(client)
    post = create_post(client, author, published=False)

    requests = {
        "list": ("get", "/users/?limit=100", None),
        "patch": ("patch", f"/users/{users[3]['id']}", {"is_active": False}),
        "read draft": ("get", f"/posts/{post['id']}", None),
        "delete": ("delete", f"/posts/{post['id']}", None),
    }
    counts = {}
    for name, (method, url, body) in requests.items():
        with recorded_statements(client) as statements:
            response = client.request(method, url, json=body, headers=admin)
        assert response.status_code < 300, (name, response.text)
        counts[name] = len(statements)

    expected = USER_LOOKUP + 1
    assert counts == {
        "list": expected,
        "patch": expected,
        "read draft": expected,
        "delete": expected + 1,
    }


def test_the_user_list_pages_by_cursor_in_id_order_while_users_come_and_go(
    client: TestClient,
) -> None:
    admin_user, admin = create_admin_and_login(client)
    users = [create_user(client) for _ in range(6)]
    first = client.get("/users/?limit=2", headers=admin)
    assert first.status_code == 200
    assert "cursor=" in first.links["next"]["url"]

    seen = [user["id"] for user in walk(client, admin, "/users/?limit=2")]
    newcomer = create_user(client)
    after_first_page = walk(client, admin, first.links["next"]["url"])

    assert seen == [admin_user["id"]] + [user["id"] for user in users]
    assert [user["id"] for user in after_first_page] == [
        user["id"] for user in users[1:]
    ] + [newcomer["id"]]
    assert_invalid(
        client.get("/users/?cursor=nonsense", headers=admin), ("query", "cursor")
    )
    assert_invalid(
        client.get(
            f"/users/?skip=1&{first.links['next']['url'].split('?')[1]}", headers=admin
        ),
        ("query", "skip"),
    )
