"""GET /reset-password: the page an emailed reset link opens when the API is the site.

A team with no front end points FRONTEND_URL (or PUBLIC_URL) at the API; the link then
opens this page, whose script (`static/reset-password.js`) reads the token from the page's
URL and sends it with the new password to POST /reset-password. The page is the same for
every token and never touches the database: mail scanners open links, and opening one must
not use it up.

Its asset URLs are relative, so the page works behind a proxy that serves the API under a
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

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Set a new password</title>
<link rel="stylesheet" href="static/reset-password.css">
<script src="static/reset-password.js" defer></script>
</head>
<body>
<main>
<h1>Set a new password</h1>
<form id="reset-form" method="post">
<label for="new-password">New password</label>
<p id="password-hint" class="hint">At least {PASSWORD_MIN_CHARS} characters.</p>
<input id="new-password" name="new_password" type="password" required
 minlength="{PASSWORD_MIN_CHARS}" autocomplete="new-password"
 aria-describedby="password-hint">
<button type="submit" disabled>Set password</button>
</form>
<p id="status" role="status" aria-live="polite"></p>
<noscript><p>This page needs JavaScript to set your password.</p></noscript>
</main>
</body>
</html>
"""

router = APIRouter(tags=["authentication"], route_class=MeteredRoute)


@router.get(
    "/reset-password",
    response_class=HTMLResponse,
    summary="The page an emailed reset link opens: a form that sets a new password",
    description="An HTML page, the same for every link, for sites with no front end "
    "of their own: its script reads the `token` of the page's URL "
    "(`/reset-password?token=...`) and sends it with the new password to "
    "`POST /reset-password`. Opening it never uses the token up.",
    responses={200: {"description": "The page, with its script and style served here"}},
)
async def reset_password_page() -> HTMLResponse:
    return HTMLResponse(PAGE, headers=PAGE_HEADERS)
