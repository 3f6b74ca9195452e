"""/docs and /redoc reference only assets this server serves: no CDN, no web fonts."""

import re

import pytest
from fastapi.testclient import TestClient

EXTERNAL_URL = re.compile(r"""(?:src|href|url)\s*[=:(]\s*['"]?(?:https?:)?//""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_nothing_from_elsewhere(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert not EXTERNAL_URL.search(response.text), response.text
    assets = re.findall(r"""(?:src|href)="([^"]+)\"""", response.text)
    assert assets
    for asset in assets:
        served = client.get(asset)
        assert served.status_code == 200, asset
        assert served.content


def test_swagger_ui_uses_local_oauth2_redirect_and_no_online_validator(
    client: TestClient,
) -> None:
    page = client.get("/docs").text
    assert "'/docs/oauth2-redirect'" in page
    assert '"validatorUrl": null' in page
    redirect = client.get("/docs/oauth2-redirect")
    assert redirect.status_code == 200
    assert "oauth2" in redirect.text


def test_docs_pages_stay_out_of_the_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not {"/docs", "/redoc", "/docs/oauth2-redirect"} & set(paths)
