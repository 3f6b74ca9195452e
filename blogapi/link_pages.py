"""The pages emailed links open when the API is the site: GET /reset-password and
GET /verify-email.

A team with no front end points FRONTEND_URL (or PUBLIC_URL) at the API; a link then
opens one of these pages, whose script (`static/reset-password.js`,
`static/verify-email.js`, with `static/link-page.js`) reads the token from the page's URL and sends it to the POST
route of the same path. A page is the same for every token and never touches the
database: mail scanners open links, and opening one must not use it up. So the
verification page waits for a press of its button.

Asset URLs are relative, so the pages work behind a proxy that serves the API under a
prefix (`https://example.com/api/reset-password`), whether or not the app knows the prefix.
"""

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from blogapi.http_metrics import MeteredRoute
from blogapi.users import PASSWORD_MIN_CHARS

STATIC_URL = "/static"
"""Where the package's `static/` folder is served (blogapi.main)."""

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
"""Only this origin's script and style, sent nowhere else; the URL holds a token, so
no Referer carries it away and no cache keeps the page."""


def page(title: str, script: str, form: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="static/link-page.css">
<script src="static/link-page.js" defer></script>
<script src="static/{script}" defer></script>
</head>
<body>
<main>
<h1>{title}</h1>
{form}
<p id="status" role="status" aria-live="polite"></p>
<noscript><p>This page needs JavaScript.</p></noscript>
</main>
</body>
</html>
"""


RESET_PAGE = page(
    "Set a new password",
    "reset-password.js",
    f"""<form id="reset-form" method="post">
<label for="new-password">New password</label>
<p id="password-hint" class="hint">At least {PASSWORD_MIN_CHARS} characters.</p>
<input id="new-password" name="new_password" type="password" required
 minlength="{PASSWORD_MIN_CHARS}" autocomplete="new-password"
 aria-describedby="password-hint">
<button type="submit" disabled>Set password</button>
</form>""",
)
VERIFY_PAGE = page(
    "Verify your email",
    "verify-email.js",
    """<form id="verify-form" method="post">
<p>Press the button to confirm that this email address is yours.</p>
<button type="submit" disabled>Verify my email</button>
</form>""",
)

router = APIRouter(route_class=MeteredRoute)


@router.get(
    "/reset-password",
    tags=["authentication"],
    response_class=HTMLResponse,
    summary="The page an emailed reset link opens: a form that sets a new password",
    description="An HTML page, the same for every link, for sites with no front end "
    "of their own: its script reads the `token` of the page's URL "
    "(`/reset-password?token=...`) and sends it with the new password to "
    "`POST /reset-password`. Opening it never uses the token up.",
    responses={200: {"description": "The page, with its script and style served here"}},
)
async def reset_password_page() -> HTMLResponse:
    return HTMLResponse(RESET_PAGE, headers=PAGE_HEADERS)


@router.get(
    "/verify-email",
    tags=["users"],
    response_class=HTMLResponse,
    summary="The page an emailed verification link opens: a button that verifies",
    description="An HTML page, the same for every link, for sites with no front end "
    "of their own: on a press of its button, its script sends the `token` of the "
    "page's URL (`/verify-email?token=...`) to `POST /verify-email`. Opening it never "
    "uses the token up.",
    responses={200: {"description": "The page, with its script and style served here"}},
)
async def verify_email_page() -> HTMLResponse:
    return HTMLResponse(VERIFY_PAGE, headers=PAGE_HEADERS)
