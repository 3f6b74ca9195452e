"""A real browser against a real server: Swagger UI and ReDoc work with no internet, the
emailed password reset link sets a new password on the API's own page, and the link
emailed at registration verifies the email there.

Headless Chrome or Chromium (BROWSER_PATH, else where GitHub's Ubuntu runners and Debian keep
one), driven by Playwright's Python package (nothing downloads a browser), opens /docs,
registers through "Try it out", authorizes with the OAuth2 password form, creates a post and
sees it listed; and runs every operation with the example Swagger UI fills in. It also
opens the link of a reset email that a server process sent to an SMTP server the test runs,
and sets a password there; and the link of a verification email, and presses its button.
Every request the page makes must go to the loopback server under test: any other host
is blocked and fails the test, and so does anything the page's Content-Security-Policy
refuses or an error in its script.
"""

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import urlopen

import pytest
from sqlalchemy import Engine

from blogapi.db import build_sync_engine
from blogapi.users import EXAMPLE_EMAIL, EXAMPLE_NEW_PASSWORD, EXAMPLE_PASSWORD
from tests.factories import empty_tables
from tests.servers import ServerProcess, free_port
from tests.test_make_admin import blogapi_command

BROWSER_CANDIDATES = (
    "/usr/bin/google-chrome",
    "/usr/bin/google-chrome-stable",
    "/opt/google/chrome/chrome",
    "/usr/bin/chromium",
)


LAUNCHER_BYTES = 64 * 1024


def starts_a_snap(path: Path) -> bool:
    """Ubuntu's `chromium` and `chromium-browser` packages install a small script that
    starts a snap, which can't run in CI."""
    return path.stat().st_size < LAUNCHER_BYTES and b"/snap/" in path.read_bytes()


def find_browser() -> Path | None:
    """BROWSER_PATH, else the first Chromium-family browser installed."""
    configured = os.environ.get("BROWSER_PATH")
    for candidate in [configured] if configured else BROWSER_CANDIDATES:
        path = Path(candidate)
        if path.is_file() and os.access(path, os.X_OK) and not starts_a_snap(path):
            return path
    return None


CHROMIUM = find_browser()
if CHROMIUM is None:
    pytest.skip(
        "no Chrome or Chromium at BROWSER_PATH or in "
        f"{', '.join(BROWSER_CANDIDATES)} (Debian: apt-get install -y chromium)",
        allow_module_level=True,
    )

from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    Request,
    Route,
    expect,
    sync_playwright,
)
from sqlmodel import Session, select

from blogapi.config import settings
from blogapi.email_links import EXAMPLE_LINK_TOKEN
from blogapi.email_verification import INVALID_LINK, EmailVerificationToken
from blogapi.model_base import utc_now
from blogapi.password_reset import INVALID_TOKEN, PasswordResetToken
from tests.factories import PASSWORD as OLD_PASSWORD
from tests.factories import create_user, engine, login
from tests.mailbox import Inbox, smtp_server

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
EMAIL = "swagger@example.com"
PASSWORD = "correct horse battery"
TITLE = "Posted from Swagger UI"
UI_TIMEOUT_MS = 60_000
"""How long a page step or an `expect` may wait: generous, a loaded machine renders slowly."""
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@dataclass
class LiveServer:
    url: str
    log: Path
    database_url: str
    database: Engine
    """The server's database, for the tests to empty it."""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text().splitlines()[-lines:])


def wait_until_up(base_url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(
                f"the server exited with {server.returncode}:\n{log.read_text()}"
            )
        try:
            with urlopen(f"{base_url}/", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"the server did not answer within 30 s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """uvicorn in a subprocess on a free loopback port, its database migrated first.

    It uses TEST_DATABASE_URL when set (the tests' own database, emptied after each test),
    else a SQLite file of its own.
    """
    scratch = tmp_path_factory.mktemp("browser")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PORT", "WEB_CONCURRENCY", "CORS_ORIGINS"}
    }
    database_url = os.environ.get(
        "TEST_DATABASE_URL", f"sqlite:///{scratch / 'browser.db'}"
    )
    env |= {
        "DATABASE_URL": database_url,
        "SECRET_KEY": "browser-test-secret-key-long-enough-for-hs256",
        "BCRYPT_ROUNDS": "4",
    }
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = scratch / "server.log"
    with log.open("w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "blogapi.main:app"]
            + ["--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    database = build_sync_engine(database_url)
    try:
        wait_until_up(url, server, log)
        yield LiveServer(url, log, database_url, database)
    finally:
        database.dispose()
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def server(live_server: LiveServer) -> LiveServer:
    """The live server on an empty database, its ids starting at 1 again."""
    empty_tables(live_server.database)
    return live_server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page whose requests may only reach loopback; the rest are blocked and fail.

    The docs pages' Content-Security-Policy stops ReDoc's "API docs by Redocly" logo before
    it is requested; any other request the policy refuses fails the test too, and so
    does an error in a page's script or one it logs to the console.
    """
    context = browser.new_context()
    context.set_default_timeout(UI_TIMEOUT_MS)
    expect.set_options(timeout=UI_TIMEOUT_MS)
    problems: list[str] = []

    def loopback_only(route: Route, request: Request) -> None:
        url = urlsplit(request.url)
        if url.scheme in {"data", "blob"} or url.hostname in LOOPBACK_HOSTS:
            route.continue_()
        else:
            problems.append(request.url)
            route.abort("blockedbyclient")

    def refused_by_csp_or_an_error(message: ConsoleMessage) -> None:
        text = message.text
        if REDOC_LOGO in text:
            return
        # Chromium logs every HTTP error status and aborted request as a failed load:
        # the tests check what the page made of those.
        logged = message.type == "error" and not text.startswith("Failed to load")
        if "Content Security Policy" in text or logged:
            problems.append(f"console {message.type}: {text}")

    context.route("**/*", loopback_only)
    page = context.new_page()
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", refused_by_csp_or_an_error)
    yield page
    context.close()
    assert problems == [], "the page tried to leave the machine or failed"


def operation(page: Page, tag: str, operation_id: str) -> Locator:
    """One endpoint's block in Swagger UI, expanded and switched to "Try it out"."""
    block = page.locator(f"#operations-{tag}-{operation_id}")
    block.locator(".opblock-summary").first.click()
    block.get_by_role("button", name="Try it out").click()
    return block


def execute(
    server: LiveServer, block: Locator, method: str, path: str, status: int
) -> str:
    """Press Execute; check the request the browser sent and the status Swagger UI shows."""

    def is_call(response) -> bool:
        return (
            response.request.method == method
            and (urlsplit(response.url).path.rstrip("/") or "/") == path
        )

    with block.page.expect_response(is_call) as sent:
        block.get_by_role("button", name="Execute").click()
    response = sent.value
    assert response.status == status, f"{response.text()}\n{server.log_tail()}"
    shown = block.locator(
        ".live-responses-table td.response-col_status:not(.col_header)"
    )
    expect(shown).to_have_text(str(status))
    return response.text()


def authorize(page: Page, server: LiveServer, email: str, password: str) -> None:
    """Sign in with Swagger UI's Authorize dialog, signing out first if signed in."""
    page.locator(".auth-wrapper button.authorize").click()
    dialog = page.locator(".dialog-ux")
    signed_in = dialog.locator("button", has_text="Logout")
    if signed_in.is_visible():
        signed_in.click()
    dialog.locator("#oauth_username").fill(email)
    dialog.locator("#oauth_password").fill(password)
    with page.expect_response(lambda r: urlsplit(r.url).path == "/login") as login:
        dialog.locator("button.modal-btn.authorize").click()
    assert login.value.status == 200, f"{login.value.text()}\n{server.log_tail()}"
    expect(dialog.locator("button", has_text="Logout")).to_be_visible()
    dialog.locator("button.btn-done").click()


def test_register_authorize_post_and_list_in_swagger_ui(
    page: Page, server: LiveServer
) -> None:
    page.goto(f"{server.url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("blogapi")

    register = operation(page, "users", "create_user")
    register.locator("textarea.body-param__text").fill(
        json.dumps({"email": EMAIL, "password": PASSWORD})
    )
    user = json.loads(execute(server, register, "POST", "/users", 201))
    assert user["email"] == EMAIL

    authorize(page, server, EMAIL, PASSWORD)

    create = operation(page, "posts", "create_post")
    create.locator("textarea.body-param__text").fill(
        json.dumps(
            {"title": TITLE, "content": "Typed into Swagger UI", "published": True}
        )
    )
    post = json.loads(execute(server, create, "POST", "/posts", 201))
    assert post["title"] == TITLE
    assert post["owner"] == {"id": user["id"], "created_at": user["created_at"]}

    listing = operation(page, "posts", "list_posts")
    posts = json.loads(execute(server, listing, "GET", "/posts", 200))
    assert [p["id"] for p in posts] == [post["id"]]
    expect(listing.locator(".live-responses-table")).to_contain_text(TITLE)

    newer = json.loads(execute(server, create, "POST", "/posts", 201))
    listing.locator('tr[data-param-name="limit"] input').fill("1")
    first = json.loads(execute(server, listing, "GET", "/posts", 200))
    assert [p["id"] for p in first] == [newer["id"]]
    shown = listing.locator(".live-responses-table")
    expect(shown).to_contain_text('rel="next"')
    cursor = re.search(r"cursor=([\w-]+)", shown.inner_text()).group(1)
    listing.locator('tr[data-param-name="cursor"] input').fill(cursor)
    second = json.loads(execute(server, listing, "GET", "/posts", 200))
    assert [p["id"] for p in second] == [post["id"]]


class ExampleRun:
    """Runs operations in Swagger UI as a newcomer would: open, "Try it out", Execute
    with what the page filled in; and notes which ran."""

    def __init__(self, page: Page, server: LiveServer) -> None:
        self.page = page
        self.server = server
        self.blocks: dict[str, Locator] = {}
        self.operations = {
            operation["operationId"]: (tags[0], method.upper(), path)
            for path, item in json.loads(urlopen(f"{server.url}/openapi.json").read())[
                "paths"
            ].items()
            for method, operation in item.items()
            for tags in [operation["tags"]]
        }
        self.ran: set[str] = set()

    def block(self, operation_id: str) -> Locator:
        """The operation's block, opened in "Try it out" once."""
        if operation_id not in self.blocks:
            tag = self.operations[operation_id][0]
            self.blocks[operation_id] = operation(self.page, tag, operation_id)
        return self.blocks[operation_id]

    def body(self, operation_id: str) -> dict:
        """The JSON body the page filled in."""
        text = self.block(operation_id).locator("textarea.body-param__text")
        return json.loads(text.input_value())

    def run(self, operation_id: str, status: int, **path_params: int) -> str:
        block = self.block(operation_id)
        _, method, path = self.operations[operation_id]
        for name, value in path_params.items():
            block.locator(f'tr[data-param-name="{name}"] input').fill(str(value))
            path = path.replace(f"{{{name}}}", str(value))
        answer = execute(self.server, block, method, path.rstrip("/") or "/", status)
        self.ran.add(operation_id)
        return answer


def test_every_operation_answers_2xx_with_its_example_in_swagger_ui(
    page: Page, server: LiveServer, tmp_path: Path
) -> None:
    """On an empty database, in the order a newcomer would go: every operation, with
    the example the page fills in (ids typed in), answers 2xx; but the reset and
    verification tokens of the examples are none the server sent (400). The account is
    deleted near the end, registered again with the same example, and its password
    changed; logout is last."""
    page.goto(f"{server.url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("blogapi")
    run = ExampleRun(page, server)

    assert json.loads(run.run("root", 200))["message"].startswith("Welcome")
    run.run("alive", 200)
    run.run("ready", 200)
    assert run.body("create_user") == {
        "email": EXAMPLE_EMAIL,
        "password": EXAMPLE_PASSWORD,
    }
    ada = json.loads(run.run("create_user", 201))
    assert ada["id"] == 1, "the examples name user 1: the database must be empty"
    assert json.loads(run.run("login", 200))["token_type"] == "bearer"
    run.run("recover_password", 202)
    run.run("reset_password", 400)
    assert "<form" in run.run("reset_password_page", 200)
    run.run("verify_email", 400)
    assert "<form" in run.run("verify_email_page", 200)

    authorize(page, server, EXAMPLE_EMAIL, EXAMPLE_PASSWORD)
    assert json.loads(run.run("read_me", 200)) == ada
    run.run("read_user", 200, user_id=ada["id"])
    run.run("resend_verification_email", 202)
    assert run.body("create_post") == {
        "title": "Hello, world",
        "content": "My first post",
        "published": True,
    }
    post = json.loads(run.run("create_post", 201))
    assert post["id"] == 1, "the vote's example names post 1"
    run.run("list_posts", 200)
    run.run("read_post", 200, post_id=post["id"])
    run.run("replace_post", 200, post_id=post["id"])
    run.run("update_post", 200, post_id=post["id"])
    run.run("vote", 201)
    voted = json.loads(run.run("read_post", 200, post_id=post["id"]))
    assert voted["votes"] == 1
    assert json.loads(run.run("export_account", 200))["posts"][0]["votes"] == 1

    made = blogapi_command(
        "make-admin",
        EXAMPLE_EMAIL,
        database_url=server.database_url,
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    run.run("list_users", 200)
    run.run("update_user", 200, user_id=ada["id"])
    run.run("delete_post", 204, post_id=post["id"])

    run.run("delete_account", 204)
    run.run("create_user", 201)
    authorize(page, server, EXAMPLE_EMAIL, EXAMPLE_PASSWORD)
    run.run("change_password", 204)
    authorize(page, server, EXAMPLE_EMAIL, EXAMPLE_NEW_PASSWORD)
    run.run("logout", 204)

    assert run.ran == set(run.operations)


def test_redoc_renders(page: Page, live_server: LiveServer) -> None:
    page.goto(f"{live_server.url}/redoc")
    expect(page.locator("h1").first).to_contain_text("blogapi")
    expect(page.locator("h2", has_text="Register a user")).to_be_visible()


# The password reset page


NEW_PASSWORD = "a brand new password"
SET = "Your password is set."
UNREACHABLE = "Could not reach the server: check your connection and try again."


@pytest.fixture(scope="module")
def mail_server() -> Iterator[Inbox]:
    with smtp_server() as inbox:
        yield inbox


@contextmanager
def serving_mail(mail_server: Inbox, **env: str) -> Iterator[ServerProcess]:
    """`python -m blogapi` on the tests' own database (emptied before each test), mailing
    through the test's SMTP server, with no front end: PUBLIC_URL is its own address, so
    the emailed links open its own pages."""
    server = ServerProcess(
        settings.database_url,
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(mail_server.port),
        SMTP_STARTTLS="false",
        EMAILS_FROM="Blog <blog@example.com>",
        **env,
    )
    server.env["PUBLIC_URL"] = server.url
    try:
        yield server.start()
    finally:
        server.close()


@pytest.fixture(scope="module")
def mailing_server(mail_server: Inbox) -> Iterator[ServerProcess]:
    with serving_mail(mail_server) as server:
        yield server


@pytest.fixture
def inbox(mail_server: Inbox) -> Inbox:
    mail_server.messages.clear()
    return mail_server


def emailed_link(server: ServerProcess, inbox: Inbox, email: str) -> str:
    with server.client() as client:
        response = client.post("/password-recovery", json={"email": email})
    assert response.status_code == 202, response.text
    inbox.wait_for_messages(1)
    (link,) = inbox.links()
    assert link.startswith(f"{server.url}/reset-password?token=")
    return link


def submit_password(page: Page, password: str) -> Locator:
    """Type a new password, press the button, and return the status area."""
    page.get_by_label("New password").fill(password)
    page.get_by_role("button", name="Set password").click()
    return page.get_by_role("status")


@contextmanager
def offline_posts(page: Page, path: str) -> Iterator[None]:
    """Inside the block, the page's POSTs to `path` fail as with no connection."""

    def cut_the_post(route: Route, request: Request) -> None:
        if request.method == "POST":
            route.abort("internetdisconnected")
        else:
            route.fallback()

    page.route(f"**{path}", cut_the_post)
    try:
        yield
    finally:
        page.unroute(f"**{path}", cut_the_post)


def login_status(server: ServerProcess, email: str, password: str) -> int:
    with server.client() as client:
        response = client.post("/login", data={"username": email, "password": password})
    return response.status_code


def test_the_emailed_link_sets_a_new_password_once(
    page: Page, mailing_server: ServerProcess, inbox: Inbox
) -> None:
    with mailing_server.client() as client:
        user = create_user(client)
    link = emailed_link(mailing_server, inbox, user["email"])

    page.goto(link)
    expect(page.get_by_role("heading", name="Set a new password")).to_be_visible()
    button = page.get_by_role("button", name="Set password")
    expect(button).to_be_enabled()  # the script runs
    expect(button).to_have_css("background-color", "rgb(29, 78, 216)")  # the style too
    status = submit_password(page, "\u00e9" * 40)  # 80 bytes in UTF-8: over 72
    expect(status).to_have_text("Password must be at most 72 bytes in UTF-8")
    expect(button).to_be_enabled()
    status = submit_password(page, NEW_PASSWORD)
    expect(status).to_contain_text(SET)
    expect(page.get_by_label("New password")).to_be_disabled()

    with mailing_server.client() as client:
        login(client, user["email"], NEW_PASSWORD)
    assert login_status(mailing_server, user["email"], OLD_PASSWORD) == 403

    page.goto(link)
    status = submit_password(page, "yet another password")
    expect(status).to_have_text(INVALID_TOKEN)
    expect(page.get_by_role("button", name="Set password")).to_be_disabled()
    assert login_status(mailing_server, user["email"], NEW_PASSWORD) == 200


def test_an_expired_link_says_to_ask_for_a_new_one(
    page: Page, mailing_server: ServerProcess, inbox: Inbox
) -> None:
    with mailing_server.client() as client:
        user = create_user(client)
    link = emailed_link(mailing_server, inbox, user["email"])
    with Session(engine) as session:
        row = session.exec(select(PasswordResetToken)).one()
        row.expires_at = utc_now() - timedelta(seconds=1)
        session.commit()

    page.goto(link)
    status = submit_password(page, NEW_PASSWORD)

    expect(status).to_have_text(INVALID_TOKEN)
    assert login_status(mailing_server, user["email"], OLD_PASSWORD) == 200


def test_a_network_failure_says_so_and_the_link_still_works(
    page: Page, mailing_server: ServerProcess, inbox: Inbox
) -> None:
    with mailing_server.client() as client:
        user = create_user(client)
    link = emailed_link(mailing_server, inbox, user["email"])
    page.goto(link)

    with offline_posts(page, "/reset-password"):
        status = submit_password(page, NEW_PASSWORD)
        expect(status).to_have_text(UNREACHABLE)
    status = submit_password(page, NEW_PASSWORD)

    expect(status).to_contain_text(SET)
    assert login_status(mailing_server, user["email"], NEW_PASSWORD) == 200


def test_the_page_without_a_token_says_what_to_do(
    page: Page, mailing_server: ServerProcess
) -> None:
    page.goto(f"{mailing_server.url}/reset-password")

    expect(page.get_by_role("status")).to_contain_text("needs the link from the email")
    expect(page.get_by_role("button", name="Set password")).to_be_disabled()


PREFIX = "/blog/api"


def behind_a_prefix(page: Page, server: ServerProcess) -> list[str]:
    """Serve the page's requests to `server` as a proxy would that serves the API under
    PREFIX, stripping it, to an app that doesn't know it. Requests outside the prefix
    are refused, and listed in what this returns."""
    outside: list[str] = []

    def proxy(route: Route, request: Request) -> None:
        url = urlsplit(request.url)
        if not url.path.startswith(f"{PREFIX}/"):
            outside.append(request.url)
            route.abort("blockedbyclient")
            return
        upstream = url._replace(path=url.path.removeprefix(PREFIX)).geturl()
        route.fulfill(response=route.fetch(url=upstream))

    page.route(f"{server.url}/**", proxy)
    return outside


def test_the_page_works_behind_a_path_prefix(
    page: Page, mailing_server: ServerProcess, inbox: Inbox
) -> None:
    """The page's script, style and POST all stay under the prefix."""
    with mailing_server.client() as client:
        user = create_user(client)
    link = emailed_link(mailing_server, inbox, user["email"])
    outside = behind_a_prefix(page, mailing_server)

    page.goto(link.replace(mailing_server.url, f"{mailing_server.url}{PREFIX}"))
    status = submit_password(page, NEW_PASSWORD)

    expect(status).to_contain_text(SET)
    assert outside == []
    assert login_status(mailing_server, user["email"], NEW_PASSWORD) == 200


# The email verification page


VERIFIED = "Your email is verified. You can close this page."


@pytest.fixture(scope="module")
def verifying_server(mail_server: Inbox) -> Iterator[ServerProcess]:
    """As `mailing_server`, with REQUIRE_EMAIL_VERIFICATION on: registering mails a
    link to the server's own verification page, and only verified users may post."""
    with serving_mail(mail_server, REQUIRE_EMAIL_VERIFICATION="true") as server:
        yield server


def register(server: ServerProcess, inbox: Inbox) -> tuple[dict, str]:
    """A new user, and the link of the email their registration sent."""
    with server.client() as client:
        user = create_user(client)
    inbox.wait_for_messages(1)
    (message,) = inbox.messages
    assert (message["To"], message["Subject"]) == (user["email"], "Verify your email")
    (link,) = inbox.links()
    assert link.startswith(f"{server.url}/verify-email?token=")
    return user, link


def account_state(server: ServerProcess, email: str) -> tuple[bool, int]:
    """What the API says of the user: `email_verified` in GET /users/me, and the status
    of a POST /posts (403 until the email is verified)."""
    with server.client() as client:
        headers = login(client, email)
        me = client.get("/users/me", headers=headers)
        assert me.status_code == 200, me.text
        post = client.post(
            "/posts/",
            json={"title": "Verified?", "content": "Posted after the page"},
            headers=headers,
        )
    return me.json()["email_verified"], post.status_code


def verify_button(page: Page) -> Locator:
    return page.get_by_role("button", name="Verify my email")


def press_verify(page: Page) -> Locator:
    """Press the button and return the status area."""
    verify_button(page).click()
    return page.get_by_role("status")


def posts_sent(page: Page) -> list[str]:
    """The URL of each POST the page sends from now on."""
    sent: list[str] = []

    def note(request: Request) -> None:
        if request.method == "POST":
            sent.append(request.url)

    page.on("request", note)
    return sent


def test_the_registration_link_verifies_once_the_button_is_pressed(
    page: Page, verifying_server: ServerProcess, inbox: Inbox
) -> None:
    user, link = register(verifying_server, inbox)
    posts = posts_sent(page)

    for _ in range(2):  # as a mail scanner, then the user, would open it
        page.goto(link)
        expect(page.get_by_role("heading", name="Verify your email")).to_be_visible()
        expect(verify_button(page)).to_be_enabled()  # the script runs
        expect(verify_button(page)).to_have_css("background-color", "rgb(29, 78, 216)")
        expect(page.locator("#status")).to_be_empty()
        page.wait_for_load_state("networkidle")
    assert posts == []
    assert account_state(verifying_server, user["email"]) == (False, 403)

    with page.expect_request(lambda r: r.method == "POST") as sent:
        status = press_verify(page)
    expect(status).to_have_text(VERIFIED)
    expect(verify_button(page)).to_be_disabled()
    assert urlsplit(sent.value.url).path == "/verify-email"
    assert sent.value.post_data_json == {"token": link.partition("token=")[2]}
    assert account_state(verifying_server, user["email"]) == (True, 201)

    page.goto(link)
    status = press_verify(page)
    expect(status).to_have_text(INVALID_LINK)
    expect(verify_button(page)).to_be_disabled()
    assert account_state(verifying_server, user["email"]) == (True, 201)


def test_an_expired_verification_link_says_to_ask_for_a_new_one(
    page: Page, verifying_server: ServerProcess, inbox: Inbox
) -> None:
    user, link = register(verifying_server, inbox)
    with Session(engine) as session:
        row = session.exec(select(EmailVerificationToken)).one()
        row.expires_at = utc_now() - timedelta(seconds=1)
        session.commit()

    page.goto(link)
    status = press_verify(page)

    expect(status).to_have_text(INVALID_LINK)
    expect(verify_button(page)).to_be_disabled()
    assert account_state(verifying_server, user["email"]) == (False, 403)


@pytest.mark.parametrize(
    "token",
    [EXAMPLE_LINK_TOKEN, "x" * 200],
    ids=["unknown-400", "too-long-422"],
)
def test_a_forged_verification_link_says_to_ask_for_a_new_one(
    page: Page, verifying_server: ServerProcess, token: str
) -> None:
    page.goto(f"{verifying_server.url}/verify-email?token={token}")
    status = press_verify(page)

    expect(status).to_have_text(INVALID_LINK)
    expect(verify_button(page)).to_be_disabled()


def test_a_resent_link_verifies_and_the_first_one_is_then_used_up(
    page: Page, verifying_server: ServerProcess, inbox: Inbox
) -> None:
    user, first = register(verifying_server, inbox)
    with verifying_server.client() as client:
        headers = login(client, user["email"])
        assert client.post("/verify-email/resend", headers=headers).status_code == 202
    inbox.wait_for_messages(2)
    resent = inbox.links()[1]
    assert resent != first

    page.goto(resent)
    expect(press_verify(page)).to_have_text(VERIFIED)
    assert account_state(verifying_server, user["email"]) == (True, 201)

    page.goto(first)
    expect(press_verify(page)).to_have_text(INVALID_LINK)


def test_a_network_failure_on_the_verification_page_lets_the_user_press_again(
    page: Page, verifying_server: ServerProcess, inbox: Inbox
) -> None:
    user, link = register(verifying_server, inbox)
    page.goto(link)

    with offline_posts(page, "/verify-email"):
        status = press_verify(page)
        expect(status).to_have_text(UNREACHABLE)
        expect(verify_button(page)).to_be_enabled()
    assert account_state(verifying_server, user["email"]) == (False, 403)
    status = press_verify(page)

    expect(status).to_have_text(VERIFIED)
    assert account_state(verifying_server, user["email"]) == (True, 201)


@pytest.mark.parametrize("query", ["", "?token="], ids=["no-token", "empty-token"])
def test_the_verification_page_without_a_token_says_what_to_do(
    page: Page, verifying_server: ServerProcess, query: str
) -> None:
    posts = posts_sent(page)
    page.goto(f"{verifying_server.url}/verify-email{query}")

    expect(page.get_by_role("status")).to_contain_text("needs the link from the email")
    expect(verify_button(page)).to_be_disabled()
    page.wait_for_load_state("networkidle")
    assert posts == []


def test_the_verification_page_works_behind_a_path_prefix(
    page: Page, verifying_server: ServerProcess, inbox: Inbox
) -> None:
    """The page's script, style and POST all stay under the prefix."""
    user, link = register(verifying_server, inbox)
    outside = behind_a_prefix(page, verifying_server)

    page.goto(link.replace(verifying_server.url, f"{verifying_server.url}{PREFIX}"))
    status = press_verify(page)

    expect(status).to_have_text(VERIFIED)
    assert outside == []
    assert account_state(verifying_server, user["email"]) == (True, 201)
