"""The page an emailed verification link opens on the API (GET /verify-email), as
tests/test_password_reset.py tests the reset page: its headers, its markup, its assets,
and that opening it never uses the link.

The page in a real browser is tested in tests/test_browser.py."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from blogapi.config import settings
from blogapi.email_links import EXAMPLE_LINK_TOKEN
from blogapi.email_verification import EmailVerificationToken
from tests.factories import create_user, login
from tests.mailbox import Inbox
from tests.test_email_verification import is_verified
from tests.test_password_reset import (
    PAGE_HEADERS,
    PUBLIC_URL,
    PageParts,
    app_mailing,
    assert_served_here,
    sha256,
    stored_hashes,
)
from tests.test_query_counts import recorded_statements


@pytest.fixture
def inbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    """Email through a real SMTP server, with REQUIRE_EMAIL_VERIFICATION on: registering
    mails a link to the verification page."""
    with app_mailing(monkeypatch) as handler:
        monkeypatch.setattr(settings, "require_email_verification", True)
        yield handler


def test_the_page_is_served_with_strict_headers_and_a_disabled_button(
    client: TestClient,
) -> None:
    response = client.get("/verify-email", params={"token": "anything"})

    assert response.status_code == 200
    assert {name: response.headers.get(name) for name in PAGE_HEADERS} == PAGE_HEADERS
    page = PageParts(response.text)
    assert page.inline == []
    assert page.one("html")["lang"] == "en"
    assert page.one("form")["method"] == "post"
    assert page.all("input") == []
    button = page.one("button")
    assert button["type"] == "submit"
    assert "disabled" in button  # until the script has found a token in the URL
    status = page.status()
    assert (status["role"], status["aria-live"]) == ("status", "polite")


def test_the_page_s_script_and_style_are_relative_and_served_here(
    client: TestClient,
) -> None:
    page = PageParts(client.get("/verify-email").text)
    scripts = [script["src"] for script in page.all("script")]
    styles = [link["href"] for link in page.all("link") if link["rel"] == "stylesheet"]

    assert scripts == ["static/link-page.js", "static/verify-email.js"]
    assert styles == ["static/link-page.css"]
    for asset in [*scripts, *styles]:
        assert_served_here(client, asset)


def test_opening_the_emailed_link_never_uses_it(
    client: TestClient, inbox: Inbox
) -> None:
    user = create_user(client)
    token = inbox.token()
    assert inbox.links() == [f"{PUBLIC_URL}/verify-email?token={token}"]

    with recorded_statements(client) as statements:
        for _ in range(3):
            page = client.get("/verify-email", params={"token": token})
            assert page.status_code == 200

    assert statements == []
    assert stored_hashes(EmailVerificationToken) == [sha256(token)]
    headers = login(client, user["email"])
    assert not is_verified(client, headers)
    assert client.post("/verify-email", json={"token": token}).status_code == 204
    assert is_verified(client, headers)


@pytest.mark.parametrize("path", ["/verify-email", "/reset-password"])
def test_a_link_page_is_the_same_whatever_its_token(
    client: TestClient, path: str
) -> None:
    tokens = ["", EXAMPLE_LINK_TOKEN, "<script>x</script>"]

    pages = {client.get(path, params={"token": token}).text for token in tokens}

    assert pages == {client.get(path).text}
    assert "<script>x" not in pages.pop()


def test_the_page_is_documented_as_html(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    page = paths["/verify-email"]["get"]

    assert list(page["responses"]) == ["200"]
    assert list(page["responses"]["200"]["content"]) == ["text/html"]
    assert "parameters" not in page
