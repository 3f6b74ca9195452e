"""Verified emails (REQUIRE_EMAIL_VERIFICATION): the link mailed at registration, through
a real SMTP server (aiosmtpd) the tests start; POST /verify-email and
POST /verify-email/resend; and what a user whose email is not verified may do."""

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from blogapi.auth import ACCOUNT_DISABLED
from blogapi.config import settings
from blogapi.email_verification import (
    ALREADY_VERIFIED,
    INVALID_LINK,
    LINK_SENT,
    EmailVerificationToken,
)
from blogapi.errors import EmailNotVerified
from blogapi.main import app
from blogapi.model_base import utc_now
from blogapi.password_reset import INVALID_TOKEN
from tests import test_password_reset
from tests.factories import (
    PASSWORD,
    assert_invalid,
    assert_unauthorized,
    blogapi_log,
    create_admin_and_login,
    create_post,
    create_user,
    create_user_and_login,
    engine,
    login,
    vote,
)
from tests.mailbox import Inbox
from tests.servers import free_port, serving_in_thread
from tests.test_password_reset import (
    NEW_PASSWORD,
    PUBLIC_URL,
    emails,
    recover,
    refusals,
    reset,
    sha256,
    stored_hashes,
)
from tests.test_query_counts import recorded_statements

# The fixture: a real SMTP server on localhost, and the settings that send through it.
inbox = test_password_reset.inbox

NOT_VERIFIED = EmailNotVerified.default_detail
KIND = "email-verification"
"""The `kind` of `blogapi_emails_total` for verification links."""
RACERS = 8


@pytest.fixture
def verification_required(inbox: Inbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """REQUIRE_EMAIL_VERIFICATION on, with the email it needs."""
    monkeypatch.setattr(settings, "require_email_verification", True)


def verify(client: httpx.Client, token: str) -> httpx.Response:
    return client.post("/verify-email", json={"token": token})


def resend(client: httpx.Client, headers: dict[str, str]) -> httpx.Response:
    return client.post("/verify-email/resend", headers=headers)


def assert_resent(response: httpx.Response) -> None:
    assert response.status_code == 202, response.text
    assert response.json() == {"message": LINK_SENT}


def assert_invalid_link(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json() == {"detail": INVALID_LINK}


def assert_not_verified(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.json() == {"detail": NOT_VERIFIED}


def is_verified(client: TestClient, headers: dict[str, str]) -> bool:
    me = client.get("/users/me", headers=headers)
    assert me.status_code == 200, me.text
    verified = me.json()["email_verified"]
    assert isinstance(verified, bool)
    return verified


def verified_user_and_login(
    client: TestClient, inbox: Inbox
) -> tuple[dict, dict[str, str]]:
    """A user who used the link registration mailed them (the inbox's last)."""
    user, headers = create_user_and_login(client)
    assert verify(client, inbox.tokens()[-1]).status_code == 204
    return user, headers


# The link mailed at registration


@pytest.mark.usefixtures("verification_required")
def test_registration_mails_a_link_that_verifies_the_email(
    client: TestClient, inbox: Inbox
) -> None:
    _, author = verified_user_and_login(client, inbox)
    post = create_post(client, author)

    user, headers = create_user_and_login(client)

    assert user["email_verified"] is False
    assert len(inbox.messages) == 2
    message = inbox.messages[-1]
    assert message["To"] == user["email"]
    assert message["From"] == "Blog <blog@example.com>"
    assert message["Subject"] == "Verify your email"
    token = inbox.tokens()[-1]
    assert inbox.links()[-1] == f"{PUBLIC_URL}/verify-email?token={token}"
    assert len(token) >= 43
    assert "within 48 hours" in inbox.texts()[-1]
    assert_not_verified(vote(client, headers, post["id"]))
    response = verify(client, token)
    assert response.status_code == 204
    assert response.content == b""
    assert client.get("/users/me", headers=headers).json() == {
        **user,
        "email_verified": True,
    }
    assert vote(client, headers, post["id"]).status_code == 201
    create_post(client, headers)


@pytest.mark.usefixtures("verification_required")
def test_the_link_is_built_on_frontend_url_when_it_is_set(
    client: TestClient, inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "frontend_url", "https://app.example.com/account")

    create_user(client)

    token = inbox.token()
    assert inbox.links() == [
        f"https://app.example.com/account/verify-email?token={token}"
    ]
    assert verify(client, token).status_code == 204


@pytest.mark.usefixtures("verification_required")
def test_only_a_hash_of_the_token_is_stored_with_its_expiry(
    client: TestClient, inbox: Inbox
) -> None:
    user = create_user(client)

    with Session(engine) as session:
        (row,) = session.exec(select(EmailVerificationToken)).all()
    assert row.token_hash == sha256(inbox.token())
    assert row.user_id == user["id"]
    assert timedelta(hours=47) < row.expires_at - utc_now() <= timedelta(hours=48)


@pytest.mark.usefixtures("verification_required")
def test_verify_token_hours_sets_the_lifetime(
    client: TestClient, inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "verify_token_hours", 2)

    create_user(client)

    with Session(engine) as session:
        row = session.exec(select(EmailVerificationToken)).one()
    assert timedelta(minutes=119) < row.expires_at - utc_now() <= timedelta(hours=2)
    assert "within 2 hours" in inbox.texts()[0]


@pytest.mark.usefixtures("verification_required")
def test_a_link_works_once(client: TestClient, inbox: Inbox) -> None:
    _, headers = create_user_and_login(client)
    token = inbox.token()
    assert verify(client, token).status_code == 204

    assert_invalid_link(verify(client, token))
    assert is_verified(client, headers)
    assert stored_hashes(EmailVerificationToken) == []


@pytest.mark.usefixtures("verification_required")
def test_an_expired_link_is_400_and_removed(client: TestClient, inbox: Inbox) -> None:
    _, headers = create_user_and_login(client)
    token = inbox.token()
    with Session(engine) as session:
        row = session.exec(select(EmailVerificationToken)).one()
        row.expires_at = utc_now() - timedelta(seconds=1)
        session.commit()

    assert_invalid_link(verify(client, token))

    assert stored_hashes(EmailVerificationToken) == []
    assert not is_verified(client, headers)
    assert_not_verified(
        client.post("/posts/", json={"title": "t", "content": "c"}, headers=headers)
    )


@pytest.mark.usefixtures("verification_required")
def test_an_unknown_or_forged_token_is_400(client: TestClient, inbox: Inbox) -> None:
    _, headers = create_user_and_login(client)
    token = inbox.token()

    for forged in ("x" * 43, token[:-1] + ("A" if token[-1] != "A" else "B"), ""):
        assert_invalid_link(verify(client, forged))

    assert not is_verified(client, headers)
    assert verify(client, token).status_code == 204


def test_malformed_input_is_422(client: TestClient) -> None:
    assert_invalid(verify(client, "t" * 129), ("body", "token"))
    assert_invalid(client.post("/verify-email", json={}), ("body", "token"))
    assert_invalid(client.post("/verify-email", json={"token": 5}), ("body", "token"))


@pytest.mark.usefixtures("verification_required")
def test_reset_and_verification_tokens_only_work_where_they_belong(
    client: TestClient, inbox: Inbox
) -> None:
    user, headers = create_user_and_login(client)
    recover(client, user["email"])
    verification, password_reset = inbox.tokens()
    assert [link.split("?")[0] for link in inbox.links()] == [
        f"{PUBLIC_URL}/verify-email",
        f"{PUBLIC_URL}/reset-password",
    ]

    assert_invalid_link(verify(client, password_reset))
    crossed = reset(client, verification)
    assert crossed.status_code == 400
    assert crossed.json() == {"detail": INVALID_TOKEN}

    assert not is_verified(client, headers)
    login(client, user["email"])
    assert verify(client, verification).status_code == 204
    assert reset(client, password_reset).status_code == 204


@pytest.mark.usefixtures("verification_required")
def test_verifying_forgets_the_user_s_other_links_only(
    client: TestClient, inbox: Inbox
) -> None:
    _, headers = create_user_and_login(client)
    assert_resent(resend(client, headers))
    _, others_headers = create_user_and_login(client)
    first, second, others = inbox.tokens()

    assert verify(client, second).status_code == 204

    assert stored_hashes(EmailVerificationToken) == [sha256(others)]
    assert_invalid_link(verify(client, first))
    assert verify(client, others).status_code == 204
    assert is_verified(client, others_headers)


@pytest.mark.usefixtures("verification_required")
def test_verifying_runs_three_statements(client: TestClient, inbox: Inbox) -> None:
    create_user(client)

    with recorded_statements(client) as statements:
        assert verify(client, inbox.token()).status_code == 204

    assert len(statements) == 3  # the token used, the user verified, other links gone


@pytest.mark.usefixtures("verification_required")
def test_token_rows_follow_their_user(client: TestClient, inbox: Inbox) -> None:
    user, headers = create_user_and_login(client)
    create_user(client)

    deleted = client.request(
        "DELETE", "/users/me", json={"password": PASSWORD}, headers=headers
    )

    assert deleted.status_code == 204
    with Session(engine) as session:
        owners = session.exec(select(EmailVerificationToken.user_id)).all()
    assert len(owners) == 1
    assert user["id"] not in owners


# What a user whose email is not verified may do


def test_an_unverified_user_may_read_and_delete_but_not_write_or_vote(
    client: TestClient, inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The post is made before the setting is turned on, as by an account registered
    while it was off."""
    _, headers = create_user_and_login(client)
    own = create_post(client, headers)
    kept = create_post(client, headers)
    monkeypatch.setattr(settings, "require_email_verification", True)
    _, others_headers = verified_user_and_login(client, inbox)
    others = create_post(client, others_headers)
    body = {"title": "Changed", "content": "Changed too"}

    assert_not_verified(client.post("/posts/", json=body, headers=headers))
    assert_not_verified(client.put(f"/posts/{own['id']}", json=body, headers=headers))
    assert_not_verified(
        client.patch(f"/posts/{own['id']}", json={"title": "x"}, headers=headers)
    )
    for direction in (1, 0):
        assert_not_verified(vote(client, headers, others["id"], direction))

    assert client.get(f"/posts/{own['id']}", headers=headers).json() == own
    assert client.get("/users/me", headers=headers).status_code == 200
    listed = client.get("/posts/", headers=headers)
    assert listed.status_code == 200
    assert {post["id"] for post in listed.json()} == {
        own["id"],
        kept["id"],
        others["id"],
    }
    read = client.get(f"/posts/{kept['id']}", headers=headers)
    assert read.status_code == 200
    assert read.json() == kept
    assert client.delete(f"/posts/{own['id']}", headers=headers).status_code == 204
    assert client.get(f"/posts/{own['id']}", headers=headers).status_code == 404
    assert client.get(f"/posts/{others['id']}", headers=headers).json()["votes"] == 0


@pytest.mark.usefixtures("verification_required")
def test_a_missing_or_bad_token_is_still_401(client: TestClient, inbox: Inbox) -> None:
    _, headers = verified_user_and_login(client, inbox)
    post = create_post(client, headers)
    body = {"title": "t", "content": "c"}
    bad = {"Authorization": "Bearer not-a-token"}

    for auth, detail in (
        ({}, "Not authenticated"),
        (bad, "Could not validate credentials"),
    ):
        for response in (
            client.post("/posts/", json=body, headers=auth),
            client.put(f"/posts/{post['id']}", json=body, headers=auth),
            client.patch(f"/posts/{post['id']}", json=body, headers=auth),
            vote(client, auth, post["id"]),
        ):
            assert_unauthorized(response, detail)


@pytest.mark.usefixtures("verification_required")
def test_an_unverified_user_s_bad_body_is_403_not_422(
    client: TestClient, inbox: Inbox
) -> None:
    """Whoever may not write learns that first; what they wrote is looked at after."""
    _, verified = verified_user_and_login(client, inbox)
    post = create_post(client, verified)
    _, unverified = create_user_and_login(client)
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/posts/", {"title": ""}),
        ("PUT", f"/posts/{post['id']}", {"content": 5}),
        ("PATCH", f"/posts/{post['id']}", {"published": "perhaps"}),
        ("POST", "/vote/", {"post_id": post["id"], "dir": 7}),
    ]

    for method, path, body in requests:
        assert_not_verified(client.request(method, path, json=body, headers=unverified))
        verified_answer = client.request(method, path, json=body, headers=verified)
        assert verified_answer.status_code == 422, (method, path)


def test_with_the_setting_off_nothing_is_sent_or_refused(
    client: TestClient, inbox: Inbox
) -> None:
    user, headers = create_user_and_login(client)
    _, others_headers = create_user_and_login(client)
    others = create_post(client, others_headers)

    post = create_post(client, headers)
    replaced = client.put(
        f"/posts/{post['id']}", json={"title": "t", "content": "c"}, headers=headers
    )
    patched = client.patch(f"/posts/{post['id']}", json={"title": "u"}, headers=headers)
    voted = vote(client, headers, others["id"])

    assert replaced.status_code == 200, replaced.text
    assert patched.status_code == 200, patched.text
    assert voted.status_code == 201, voted.text
    assert user["email_verified"] is False
    assert not is_verified(client, headers)
    assert inbox.messages == []
    assert stored_hashes(EmailVerificationToken) == []


# A new link


@pytest.mark.parametrize("used", ["first", "second"])
@pytest.mark.usefixtures("verification_required")
def test_resend_mails_a_new_link_and_either_works_once(
    client: TestClient, inbox: Inbox, used: str
) -> None:
    user, headers = create_user_and_login(client)
    sent = emails("sent", KIND)

    assert_resent(resend(client, headers))

    assert emails("sent", KIND) == sent + 1
    assert [message["To"] for message in inbox.messages] == [user["email"]] * 2
    assert inbox.messages[1]["Subject"] == "Verify your email"
    first, second = inbox.tokens()
    assert first != second
    assert inbox.links()[1] == f"{PUBLIC_URL}/verify-email?token={second}"
    assert sorted(stored_hashes(EmailVerificationToken)) == sorted(
        [sha256(first), sha256(second)]
    )
    token, other = (first, second) if used == "first" else (second, first)
    assert verify(client, token).status_code == 204
    assert_invalid_link(verify(client, other))
    assert is_verified(client, headers)


@pytest.mark.usefixtures("verification_required")
def test_resend_when_verified_is_409_and_sends_nothing(
    client: TestClient, inbox: Inbox
) -> None:
    _, headers = verified_user_and_login(client, inbox)

    response = resend(client, headers)

    assert response.status_code == 409
    assert response.json() == {"detail": ALREADY_VERIFIED}
    assert len(inbox.messages) == 1
    assert stored_hashes(EmailVerificationToken) == []


def test_resend_needs_a_sign_in(client: TestClient) -> None:
    assert_unauthorized(client.post("/verify-email/resend"), "Not authenticated")
    assert_unauthorized(resend(client, {"Authorization": "Bearer not-a-token"}))


@pytest.mark.usefixtures("verification_required")
def test_resend_is_throttled_per_account_apart_from_logins_and_recovery(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "login_max_failures", 2)
    refused = {
        purpose: refusals(purpose)
        for purpose in ("email-verification", "password-recovery", "login")
    }
    with TestClient(app) as client:
        user, headers = create_user_and_login(client)
        for _ in range(2):
            assert_resent(resend(client, headers))

        response = resend(client, headers)

        assert response.status_code == 429
        assert response.json() == {
            "detail": "Too many verification emails asked for; try again later"
        }
        assert 0 < int(response.headers["retry-after"]) <= settings.login_window_seconds
        assert len(inbox.messages) == 3
        assert refusals("email-verification") == refused["email-verification"] + 1
        assert refusals("password-recovery") == refused["password-recovery"]
        assert refusals("login") == refused["login"]
        login(client, user["email"])
        recover(client, user["email"])
        assert verify(client, inbox.tokens()[2]).status_code == 204


@pytest.mark.usefixtures("verification_required")
def test_resend_is_throttled_per_address(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "login_max_failures_per_address", 2)
    with TestClient(app) as client:
        for _ in range(2):
            assert_resent(resend(client, create_user_and_login(client)[1]))

        response = resend(client, create_user_and_login(client)[1])

    assert response.status_code == 429
    assert 0 < int(response.headers["retry-after"]) <= settings.login_window_seconds
    assert len(inbox.messages) == 3 + 2


def test_resend_with_the_setting_off_still_mails_a_link_that_verifies(
    client: TestClient, inbox: Inbox
) -> None:
    user, headers = create_user_and_login(client)

    assert_resent(resend(client, headers))

    (message,) = inbox.messages
    assert message["To"] == user["email"]
    assert verify(client, inbox.token()).status_code == 204
    assert is_verified(client, headers)


def test_resend_without_smtp_answers_202_logs_and_sends_nothing(
    client: TestClient,
    inbox: Inbox,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "smtp_host", "")
    _, headers = create_user_and_login(client)
    caplog.set_level(logging.INFO)

    with blogapi_log(caplog):
        assert_resent(resend(client, headers))

    assert (
        "email verification: email is not configured (SMTP_HOST): not sent"
        in caplog.text
    )
    assert inbox.messages == []
    assert stored_hashes(EmailVerificationToken) == []


# Failures and the log


@pytest.mark.parametrize("failure", ["refused", "no server"])
@pytest.mark.usefixtures("verification_required")
def test_an_email_failure_is_logged_and_registration_still_succeeds(
    client: TestClient,
    inbox: Inbox,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
) -> None:
    port = inbox.port
    if failure == "refused":
        inbox.refuse = True
    else:
        monkeypatch.setattr(settings, "smtp_port", free_port())
    caplog.set_level(logging.INFO)
    sent, failed = emails("sent", KIND), emails("failed", KIND)

    with blogapi_log(caplog):
        response = client.post(
            "/users/", json={"email": "ada@example.com", "password": PASSWORD}
        )

    assert response.status_code == 201, response.text
    user = response.json()
    assert f"email-verification: could not email user {user['id']}" in caplog.text
    assert (emails("sent", KIND), emails("failed", KIND)) == (sent, failed + 1)
    (token_hash,) = stored_hashes(EmailVerificationToken)
    assert token_hash not in caplog.text
    # Once email works again, the user asks for a new link.
    inbox.refuse = False
    monkeypatch.setattr(settings, "smtp_port", port)
    headers = login(client, user["email"])
    assert_resent(resend(client, headers))
    assert verify(client, inbox.token()).status_code == 204


@pytest.mark.usefixtures("verification_required")
def test_the_token_is_never_logged(
    client: TestClient, inbox: Inbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    with blogapi_log(caplog):
        user, headers = create_user_and_login(client)
        assert_resent(resend(client, headers))
        first, second = inbox.tokens()
        assert verify(client, first).status_code == 204
        assert_invalid_link(verify(client, second))

    assert f"email-verification: emailed a link to user {user['id']}" in caplog.text
    # mail.log is the test's SMTP sink tracing the mail it received, link included.
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name != "mail.log")
    assert first not in logged
    assert second not in logged


# Other ways an email is verified, and who sees it


@pytest.mark.usefixtures("verification_required")
def test_a_password_reset_verifies_the_email(client: TestClient, inbox: Inbox) -> None:
    user, old_headers = create_user_and_login(client)
    recover(client, user["email"])
    _, password_reset = inbox.tokens()

    assert reset(client, password_reset).status_code == 204

    assert_unauthorized(client.get("/users/me", headers=old_headers))
    headers = login(client, user["email"], NEW_PASSWORD)
    assert is_verified(client, headers)
    create_post(client, headers)


@pytest.mark.usefixtures("verification_required")
def test_email_verified_shows_to_the_user_and_admins_only(
    client: TestClient, inbox: Inbox
) -> None:
    user, headers = create_user_and_login(client)
    token = inbox.token()
    _, others_headers = create_user_and_login(client)
    _, admin = create_admin_and_login(client)

    def shown() -> dict[str, Any]:
        (listed,) = [
            account
            for account in client.get("/users/?limit=100", headers=admin).json()
            if account["id"] == user["id"]
        ]
        exported = client.get("/users/me/export", headers=headers)
        assert exported.status_code == 200, exported.text
        return {
            "me": client.get("/users/me", headers=headers).json()["email_verified"],
            "self": client.get(f"/users/{user['id']}", headers=headers).json()[
                "email_verified"
            ],
            "admin": client.get(f"/users/{user['id']}", headers=admin).json()[
                "email_verified"
            ],
            "list": listed["email_verified"],
            "export": exported.json()["user"]["email_verified"],
        }

    before = shown()
    assert verify(client, token).status_code == 204
    after = shown()
    patched = client.patch(
        f"/users/{user['id']}", json={"is_admin": False}, headers=admin
    )

    assert before == dict.fromkeys(before, False)
    assert after == dict.fromkeys(after, True)
    assert patched.status_code == 200
    assert patched.json()["email_verified"] is True
    to_others = client.get(f"/users/{user['id']}", headers=others_headers).json()
    assert set(to_others) == {"id", "created_at"}


@pytest.mark.usefixtures("verification_required")
def test_a_disabled_account_s_link_verifies_the_email_and_it_stays_disabled(
    client: TestClient, inbox: Inbox
) -> None:
    """The link proves the address whoever holds the account now; it gives no access:
    only an admin enables the account again, and the user then logs in anew."""
    user, headers = create_user_and_login(client)
    token = inbox.token()
    _, admin = create_admin_and_login(client)
    disabled = client.patch(
        f"/users/{user['id']}", json={"is_active": False}, headers=admin
    )
    assert disabled.status_code == 200

    assert verify(client, token).status_code == 204

    (listed,) = [
        account
        for account in client.get("/users/?limit=100", headers=admin).json()
        if account["id"] == user["id"]
    ]
    assert (listed["is_active"], listed["email_verified"]) == (False, True)
    assert_unauthorized(resend(client, headers))
    refused = client.post(
        "/login", data={"username": user["email"], "password": PASSWORD}
    )
    assert refused.status_code == 403
    assert refused.json() == {"detail": ACCOUNT_DISABLED}


# Two uses of one link at once, through a real server


@pytest.fixture
def live_server() -> Iterator[str]:
    """The app served by uvicorn on a free local port, in a background thread."""
    with serving_in_thread(app) as url:
        yield url


@pytest.mark.usefixtures("verification_required")
def test_simultaneous_uses_of_one_link_give_one_204(
    live_server: str, inbox: Inbox
) -> None:
    with httpx.Client(base_url=live_server) as http:
        _, headers = create_user_and_login(http)
        inbox.wait_for_messages(1)
        token = inbox.token()
        start = threading.Barrier(RACERS)
        statuses: list[int] = []

        def send() -> None:
            with httpx.Client(base_url=live_server, timeout=30) as racer:
                start.wait()
                statuses.append(verify(racer, token).status_code)

        threads = [threading.Thread(target=send) for _ in range(RACERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        me = http.get("/users/me", headers=headers).json()

    assert Counter(statuses) == {204: 1, 400: RACERS - 1}
    assert me["email_verified"] is True
    assert stored_hashes(EmailVerificationToken) == []
