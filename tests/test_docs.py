"""The docs: /docs and /redoc reference only assets this server serves (no CDN, no web
fonts), and the written docs keep to the code and to each other."""

import os
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo

from blogapi.config import Settings

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


# The written docs: README.md stays a first hour; every relative link leads somewhere;
# docs/settings.md lists exactly the settings blogapi.config.Settings has.

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 300
LINKED_DOCS = [
    ROOT / "README.md",
    ROOT / "CONTRIBUTING.md",
    *(ROOT / "docs").glob("*.md"),
]
FENCED_BLOCK = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.DOTALL)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
SETTINGS_HEADER = "| Variable | Default | Meaning |"
COMPUTED_DEFAULTS = {"WEB_CONCURRENCY": ("the CPU count", os.cpu_count() or 1)}
"""Settings whose default depends on the machine: the words the table shows instead of
a value, and the value they stand for."""


def prose(markdown: str) -> str:
    """The text outside code blocks and code spans, where links and headings live."""
    return CODE_SPAN.sub("", FENCED_BLOCK.sub("", markdown))


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a markdown file, with GitHub's -1, -2 for repeats."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCED_BLOCK.sub("", path.read_text())):
        slug = github_slug(heading)
        found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return found


def test_readme_is_a_first_hour_not_a_manual() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines, over {README_MAX_LINES}: move the detail to "
        "docs/ or CONTRIBUTING.md and link to it"
    )


def test_the_docs_exist_where_the_readme_sends_readers() -> None:
    for name in ["docs/deploying.md", "docs/settings.md", "docs/operations.md"]:
        assert (ROOT / name).is_file(), name
    assert len(LINKED_DOCS) >= 5


@pytest.mark.parametrize("doc", LINKED_DOCS, ids=lambda path: path.name)
def test_every_relative_link_leads_to_a_file_and_heading(doc: Path) -> None:
    broken = []
    for target in LINK.findall(prose(doc.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        linked = (doc.parent / path).resolve() if path else doc
        if not linked.is_file():
            broken.append(f"{target}: no file {linked.relative_to(ROOT)}")
        elif anchor and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    assert not broken, f"broken links in {doc.relative_to(ROOT)}: {broken}"


def test_github_slugs() -> None:
    assert (
        github_slug("Ubuntu server (systemd + nginx)") == "ubuntu-server-systemd--nginx"
    )
    assert github_slug("Heroku, or any platform") == "heroku-or-any-platform"
    assert github_slug("The `Link` header") == "the-link-header"


def env_names(name: str, field: FieldInfo) -> set[str]:
    """The environment variables that set a field: its name in upper case, or its aliases."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return {str(choice).upper() for choice in alias.choices}
    if isinstance(alias, str):
        return {alias.upper()}
    return {name.upper()}


def default_of(field: FieldInfo) -> object:
    return field.get_default(call_default_factory=True, validated_data={})


def shown_default(value: object) -> str:
    """A default as the settings table writes it: the value an environment variable
    would hold, in backticks; `""` for an empty one."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, float):
        value = f"{value:g}"
    elif isinstance(value, list):
        value = ",".join(map(str, value))
    return f"`{value}`" if value != "" else '`""`'


def settings_table() -> dict[frozenset[str], str]:
    """docs/settings.md's table: {the variables of a row: the Default cell}."""
    text = (ROOT / "docs" / "settings.md").read_text()
    lines = text.splitlines()
    assert lines.count(SETTINGS_HEADER) == 1, (
        f"docs/settings.md needs one table headed {SETTINGS_HEADER!r}"
    )
    start = lines.index(SETTINGS_HEADER) + 2
    rows = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        variable, default, _meaning = (
            cell.strip() for cell in line.strip("|").split("|", 2)
        )
        names = frozenset(re.findall(r"`([^`]+)`", variable))
        assert names, f"a row of docs/settings.md names no `VARIABLE`: {line}"
        rows[names] = default
    return rows


def test_the_settings_table_lists_every_setting_with_its_default() -> None:
    """Adding a field to Settings? Give it a row in docs/settings.md:
    | `NAME` | `default` | what it does |."""
    fields = Settings.model_fields
    rows = settings_table()
    problems = []
    for field_name, field in fields.items():
        names = env_names(field_name, field)
        row = next((row for row in rows if row & names), None)
        if row is None:
            problems.append(
                f"no row for {' or '.join(sorted(names))} (Settings.{field_name}): "
                f"add | `{min(names)}` | {shown_default(default_of(field))} | meaning |"
            )
            continue
        if words := next(
            (COMPUTED_DEFAULTS[name] for name in row if name in COMPUTED_DEFAULTS), None
        ):
            expected, value = words
            assert default_of(field) == value, f"{field_name}: {default_of(field)!r}"
        else:
            expected = shown_default(default_of(field))
        if rows[row] != expected:
            problems.append(
                f"{', '.join(sorted(row))}: shows {rows[row]}, not {expected}"
            )
    known = set().union(*(env_names(name, field) for name, field in fields.items()))
    for row in rows:
        for name in sorted(row - known):
            problems.append(f"lists {name}, which Settings does not have")
    assert not problems, "docs/settings.md: " + "; ".join(problems)
