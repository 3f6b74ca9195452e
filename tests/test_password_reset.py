"""Password reset by email, through a real SMTP server (aiosmtpd) the tests start, and
the page the emailed link opens on the API (GET /reset-password).

The page in a real browser is tested in tests/test_browser.py."""

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from blogapi.config import settings
from blogapi.email_links import LinkToken
from blogapi.model_base import utc_now
from blogapi.password_reset import INVALID_TOKEN, PasswordResetToken
from blogapi.users import PASSWORD_MIN_CHARS
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
    log_in,
    login,
    metric_value,
)
from tests.mailbox import Inbox, smtp_server
from tests.servers import free_port
from tests.test_query_counts import recorded_statements
from tests.test_refresh import assert_invalid_grant, refresh, refreshed, works

PUBLIC_URL = "https://blog.example.com"
NEW_PASSWORD = "a brand new password"
ACCEPTED = {
    "message": "If an active account has this email, a password reset link is on its way"
}
PAGE_HEADERS = {
    "content-type": "text/html; charset=utf-8",
    "content-security-policy": "default-src 'none'; script-src 'self'; "
    "style-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
}
ASSET_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
}


@contextmanager
def app_mailing(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    """A real SMTP server on localhost, and the settings that send through it."""
    with smtp_server() as handler:
        for name, value in {
            "smtp_host": "127.0.0.1",
            "smtp_port": handler.port,
            "smtp_starttls": False,
            "emails_from": "Blog <blog@example.com>",
            "public_url": PUBLIC_URL,
            "frontend_url": "",
        }.items():
            monkeypatch.setattr(settings, name, value)
        yield handler


@pytest.fixture
def inbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    with app_mailing(monkeypatch) as handler:
        yield handler


def recover(client: TestClient, email: str) -> None:
    response = client.post("/password-recovery", json={"email": email})
    assert response.status_code == 202, response.text
    assert response.json() == ACCEPTED


def reset(client: TestClient, token: str, password: str = NEW_PASSWORD) -> Any:
    return client.post(
        "/reset-password", json={"token": token, "new_password": password}
    )


def emails(outcome: str, kind: str = "password-reset") -> float:
    return metric_value("blogapi_emails_total", kind=kind, outcome=outcome)


def refusals(purpose: str) -> float:
    return metric_value("blogapi_throttle_refusals_total", purpose=purpose)


def sha256(token: str) -> str:
    """What the database keeps of a token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def stored_hashes(table: type[LinkToken] = PasswordResetToken) -> list[str]:
    """The token hashes stored for one kind of emailed link."""
    with Session(engine) as session:
        return list(session.exec(select(table.token_hash)).all())


def test_the_link_arrives_and_sets_the_password(
    client: TestClient, inbox: Inbox
) -> None:
    user, old_headers = create_user_and_login(client)

    recover(client, user["email"].upper())

    (message,) = inbox.messages
    assert message["To"] == user["email"]
    assert message["From"] == "Blog <blog@example.com>"
    assert message["Subject"] == "Reset your password"
    token = inbox.token()
    assert inbox.links() == [f"{PUBLIC_URL}/reset-password?token={token}"]
    assert len(token) >= 43
    response = reset(client, token)
    assert response.status_code == 204
    assert response.content == b""
    assert_unauthorized(client.get("/users/me", headers=old_headers))
    wrong = client.post(
        "/login", data={"username": user["email"], "password": PASSWORD}
    )
    assert wrong.status_code == 403
    headers = login(client, user["email"], NEW_PASSWORD)
    # The link reached the address, so the reset verified it too.
    assert client.get("/users/me", headers=headers).json() == {
        **user,
        "email_verified": True,
    }


def test_a_reset_ends_every_login_session_of_the_user(
    client: TestClient, inbox: Inbox
) -> None:
    user = create_user(client)
    first, second = log_in(client, user["email"]), log_in(client, user["email"])
    bystander = log_in(client, create_user(client)["email"])
    recover(client, user["email"])

    assert reset(client, inbox.token()).status_code == 204

    for tokens in (first, second):
        assert_invalid_grant(refresh(client, tokens["refresh_token"]))
        assert not works(client, tokens)
    assert works(client, refreshed(client, bystander))
    assert works(client, refreshed(client, log_in(client, user["email"], NEW_PASSWORD)))


def test_only_a_hash_of_the_token_is_stored(client: TestClient, inbox: Inbox) -> None:
    user = create_user(client)

    recover(client, user["email"])

    token = inbox.token()
    assert stored_hashes() == [sha256(token)]


def test_a_token_works_once(client: TestClient, inbox: Inbox) -> None:
    user = create_user(client)
    recover(client, user["email"])
    token = inbox.token()
    assert reset(client, token).status_code == 204

    again = reset(client, token, "yet another password")

    assert again.status_code == 400
    assert again.json() == {"detail": INVALID_TOKEN}
    login(client, user["email"], NEW_PASSWORD)
    assert stored_hashes() == []


def test_a_reset_kills_the_user_s_other_links(client: TestClient, inbox: Inbox) -> None:
    user = create_user(client)
    recover(client, user["email"])
    recover(client, user["email"])
    first, second = inbox.tokens()

    assert reset(client, second).status_code == 204

    assert reset(client, first).status_code == 400


def test_a_forged_token_is_400(client: TestClient, inbox: Inbox) -> None:
    user = create_user(client)
    recover(client, user["email"])
    token = inbox.token()

    for forged in ("x" * 43, token[:-1] + ("A" if token[-1] != "A" else "B"), ""):
        response = reset(client, forged)
        assert response.status_code == 400, forged
        assert response.json() == {"detail": INVALID_TOKEN}
    assert reset(client, token).status_code == 204


def test_an_expired_token_is_400(client: TestClient, inbox: Inbox) -> None:
    user = create_user(client)
    recover(client, user["email"])
    token = inbox.token()
    with Session(engine) as session:
        row = session.exec(select(PasswordResetToken)).one()
        assert (
            timedelta(minutes=14) < row.expires_at - utc_now() <= timedelta(minutes=15)
        )
        row.expires_at = utc_now() - timedelta(seconds=1)
        session.commit()

    response = reset(client, token)

    assert response.status_code == 400
    assert response.json() == {"detail": INVALID_TOKEN}
    login(client, user["email"])


def test_reset_token_minutes_sets_the_lifetime(
    client: TestClient, inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "reset_token_minutes", 120)
    user = create_user(client)

    recover(client, user["email"])

    with Session(engine) as session:
        row = session.exec(select(PasswordResetToken)).one()
    assert timedelta(minutes=119) < row.expires_at - utc_now() <= timedelta(minutes=120)
    assert "within 120 minutes" in inbox.texts()[0]


def test_an_unknown_or_disabled_account_gets_the_same_answer_and_no_email(
    client: TestClient, inbox: Inbox
) -> None:
    disabled = create_user(client)
    _, admin = create_admin_and_login(client)
    client.patch(f"/users/{disabled['id']}", json={"is_active": False}, headers=admin)

    recover(client, "nobody@example.com")
    recover(client, disabled["email"])

    assert inbox.messages == []
    assert stored_hashes() == []


def test_a_disabled_account_cannot_use_a_link_sent_before(
    client: TestClient, inbox: Inbox
) -> None:
    user = create_user(client)
    _, admin = create_admin_and_login(client)
    recover(client, user["email"])
    client.patch(f"/users/{user['id']}", json={"is_active": False}, headers=admin)

    response = reset(client, inbox.token())

    assert response.status_code == 400


def test_without_smtp_it_answers_202_and_logs_that_email_is_off(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    user = create_user(client)
    caplog.set_level(logging.INFO)

    with blogapi_log(caplog):
        recover(client, user["email"])

    assert "email is not configured (SMTP_HOST)" in caplog.text
    assert stored_hashes() == []


@pytest.mark.parametrize("failure", ["refused", "no server"])
def test_an_smtp_failure_is_logged_and_the_caller_still_gets_202(
    client: TestClient,
    inbox: Inbox,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
) -> None:
    user = create_user(client)
    if failure == "refused":
        inbox.refuse = True
    else:
        monkeypatch.setattr(settings, "smtp_port", free_port())
    caplog.set_level(logging.INFO)
    sent, failed = emails("sent"), emails("failed")

    with blogapi_log(caplog):
        recover(client, user["email"])

    assert f"could not email user {user['id']}" in caplog.text
    assert (emails("sent"), emails("failed")) == (sent, failed + 1)
    (token_hash,) = stored_hashes()
    assert token_hash not in caplog.text


def test_the_token_is_never_logged(
    client: TestClient, inbox: Inbox, caplog: pytest.LogCaptureFixture
) -> None:
    user = create_user(client)
    caplog.set_level(logging.DEBUG)

    with blogapi_log(caplog):
        recover(client, user["email"])
        token = inbox.token()
        reset(client, token)

    assert f"emailed a link to user {user['id']}" in caplog.text
    # mail.log is the test's SMTP sink tracing the mail it received, link included.
    logged = [r.getMessage() for r in caplog.records if r.name != "mail.log"]
    assert token not in "\n".join(logged)


def test_recovery_is_throttled_like_the_login(client: TestClient, inbox: Inbox) -> None:
    user = create_user(client)
    sent, failed = emails("sent"), emails("failed")
    refused = {purpose: refusals(purpose) for purpose in ("password-recovery", "login")}
    for _ in range(settings.login_max_failures):
        recover(client, user["email"])

    response = client.post("/password-recovery", json={"email": user["email"]})

    assert response.status_code == 429
    assert response.json() == {
        "detail": "Too many password recovery requests; try again later"
    }
    assert 0 < int(response.headers["retry-after"]) <= settings.login_window_seconds
    assert len(inbox.messages) == settings.login_max_failures
    assert emails("sent") == sent + settings.login_max_failures
    assert emails("failed") == failed
    assert refusals("password-recovery") == refused["password-recovery"] + 1
    assert refusals("login") == refused["login"]
    login(client, user["email"])


def test_malformed_input_is_422(client: TestClient) -> None:
    for email in ("not an email", "", "a@" + "b" * 260 + ".com"):
        assert_invalid(
            client.post("/password-recovery", json={"email": email}),
            ("body", "email"),
        )
    assert_invalid(reset(client, "t" * 200), ("body", "token"))
    assert_invalid(reset(client, "token", "short"), ("body", "new_password"))
    assert_invalid(
        client.post("/reset-password", json={"new_password": NEW_PASSWORD}),
        ("body", "token"),
    )


def test_recovery_and_reset_run_few_statements(
    client: TestClient, inbox: Inbox
) -> None:
    user = create_user(client)
    with recorded_statements(client) as recovery:
        recover(client, user["email"])
    with recorded_statements(client) as resetting:
        assert reset(client, inbox.token()).status_code == 204

    assert len(recovery) == 2  # expired tokens removed, one issued
    assert len(resetting) == 3  # the token used, the password set, other links removed


def test_stored_token_rows_follow_their_user(client: TestClient, inbox: Inbox) -> None:
    user, headers = create_user_and_login(client)
    recover(client, user["email"])

    client.request("DELETE", "/users/me", json={"password": PASSWORD}, headers=headers)

    with Session(engine) as session:
        rows = session.exec(
            select(PasswordResetToken).where(
                col(PasswordResetToken.user_id) == user["id"]
            )
        ).all()
    assert rows == []


# The page the link opens (GET /reset-password)


class PageParts(HTMLParser):
    """A page's elements with their attributes, and whatever script or style it has inline."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[str] = []
        self._inside: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        self.inline += [
            f"{tag} {name}"
            for name in attributes
            if name == "style" or name[:2] == "on"
        ]
        self._inside = tag

    def handle_endtag(self, tag: str) -> None:
        self._inside = None

    def handle_data(self, data: str) -> None:
        if self._inside in ("script", "style") and data.strip():
            self.inline.append(f"{self._inside}: {data.strip()}")

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attributes for name, attributes in self.elements if name == tag]

    def one(self, tag: str) -> dict[str, str | None]:
        (attributes,) = self.all(tag)
        return attributes

    def status(self) -> dict[str, str | None]:
        """The element whose text says how things went."""
        (status,) = [a for a in self.all("p") if a.get("id") == "status"]
        return status


def assert_served_here(client: TestClient, asset: str | None) -> None:
    """A page's script or style (a path relative to the page) is served, non-empty,
    with its content type in UTF-8, not to be sniffed as anything else."""
    assert asset is not None
    served = client.get(f"/{asset}")
    assert served.status_code == 200, asset
    assert served.content
    media_type, _, charset = served.headers["content-type"].partition("; ")
    assert media_type in ASSET_TYPES[asset[asset.rindex(".") :]], asset
    assert charset == "charset=utf-8"
    assert served.headers["x-content-type-options"] == "nosniff"


def test_the_page_is_served_with_strict_headers_and_a_labelled_form(
    client: TestClient,
) -> None:
    response = client.get("/reset-password", params={"token": "anything"})

    assert response.status_code == 200
    assert {name: response.headers.get(name) for name in PAGE_HEADERS} == PAGE_HEADERS
    page = PageParts(response.text)
    assert page.inline == []
    assert page.one("html")["lang"] == "en"
    field = page.one("input")
    assert field["type"] == "password"
    assert field["autocomplete"] == "new-password"
    assert field["minlength"] == str(PASSWORD_MIN_CHARS)
    assert "required" in field
    assert page.one("label")["for"] == field["id"]
    assert page.one("button")["type"] == "submit"
    status = page.status()
    assert (status["role"], status["aria-live"]) == ("status", "polite")


def test_the_page_s_script_and_style_are_relative_and_served_here(
    client: TestClient,
) -> None:
    page = PageParts(client.get("/reset-password").text)
    scripts = [script["src"] for script in page.all("script")]
    styles = [link["href"] for link in page.all("link") if link["rel"] == "stylesheet"]

    assert scripts == ["static/link-page.js", "static/reset-password.js"]
    assert styles == ["static/link-page.css"]
    for asset in [*scripts, *styles]:
        assert_served_here(client, asset)


def test_opening_the_page_never_uses_the_token(
    client: TestClient, inbox: Inbox
) -> None:
    user = create_user(client)
    recover(client, user["email"])
    token = inbox.token()

    with recorded_statements(client) as statements:
        for _ in range(3):
            page = client.get("/reset-password", params={"token": token})
            assert page.status_code == 200

    assert statements == []
    assert stored_hashes() == [sha256(token)]
    assert reset(client, token).status_code == 204
    login(client, user["email"], NEW_PASSWORD)


def test_links_are_emailed_on_frontend_url_and_link_headers_stay_on_public_url(
    client: TestClient, inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "frontend_url", "https://app.example.com/account")
    user, headers = create_user_and_login(client)
    for _ in range(2):
        create_post(client, headers)

    recover(client, user["email"])
    listed = client.get("/posts/?limit=1", headers=headers)

    token = inbox.token()
    assert inbox.links() == [
        f"https://app.example.com/account/reset-password?token={token}"
    ]
    assert listed.headers["link"].startswith(f"<{PUBLIC_URL}/posts/?limit=1&cursor=")
    assert reset(client, token).status_code == 204


def test_the_page_is_documented_as_html(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    page = paths["/reset-password"]["get"]

    assert list(page["responses"]) == ["200"]
    assert list(page["responses"]["200"]["content"]) == ["text/html"]
    assert "parameters" not in page
