"""Swagger UI at /docs and ReDoc at /redoc, with their assets served by this server.

FastAPI's own pages load JavaScript and CSS from a CDN, so they are blank offline or behind a
strict firewall. The fastapi-offline package ships those files; this module serves them and
builds the two pages with FastAPI's own HTML helpers, so a browser fetches nothing elsewhere.
"""

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
ASSETS_DIR = files("fastapi_offline") / "static"
DOCS_URL = "/docs"
REDOC_URL = "/redoc"
NO_ONLINE_VALIDATOR = {"validatorUrl": None}
SAME_ORIGIN_ONLY = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "worker-src 'self' blob:; frame-ancestors 'none'"
    )
}
"""Docs pages load nothing from elsewhere, not even ReDoc's "API docs by Redocly" logo."""


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI, its OAuth2 redirect page and ReDoc, with local assets only.

    Create the app with `docs_url=None, redoc_url=None` so FastAPI's CDN pages stay off.
    """
    redirect_url = app.swagger_ui_oauth2_redirect_url or f"{DOCS_URL}/oauth2-redirect"
    openapi_url = app.openapi_url or "/openapi.json"
    app.mount(ASSETS_URL, StaticFiles(directory=str(ASSETS_DIR)), name="docs-assets")

    def prefixed(request: Request, url: str) -> str:
        """The URL as the browser sees it, behind a proxy that serves the app under a prefix."""
        return str(request.scope.get("root_path", "")).rstrip("/") + url

    @app.get(DOCS_URL, include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=prefixed(request, openapi_url),
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=prefixed(request, redirect_url),
            swagger_js_url=prefixed(request, f"{ASSETS_URL}/swagger-ui-bundle.js"),
            swagger_css_url=prefixed(request, f"{ASSETS_URL}/swagger-ui.css"),
            swagger_favicon_url=prefixed(request, f"{ASSETS_URL}/favicon.png"),
            swagger_ui_parameters={
                **NO_ONLINE_VALIDATOR,
                **(app.swagger_ui_parameters or {}),
            },
        )
        page.headers.update(SAME_ORIGIN_ONLY)
        return page

    @app.get(redirect_url, include_in_schema=False)
    def swagger_ui_oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=prefixed(request, openapi_url),
            title=f"{app.title} - ReDoc",
            redoc_js_url=prefixed(request, f"{ASSETS_URL}/redoc.standalone.js"),
            redoc_favicon_url=prefixed(request, f"{ASSETS_URL}/favicon.png"),
            with_google_fonts=False,
        )
        page.headers.update(SAME_ORIGIN_ONLY)
        return page
