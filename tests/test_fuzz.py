"""Property-based fuzzing of every operation in the OpenAPI schema, with every check
schemathesis has.

schemathesis generates valid and invalid requests from the schema and checks that no
answer is a server error; that each answer's status, content type, headers and body are
the ones the schema documents; that a request the schema allows is accepted and one it
forbids (`"published": 0`, an id as text) refused, bodies being strict; that a method the
path lacks is a 405 whose Allow names those it has; that no route ignores a missing or
bad token; and, over chains of calls, that what was created can be read and what was
deleted can't.

The few answers JSON Schema cannot announce are listed in schemathesis.toml with their
reasons; REASONS below checks that each such answer gives one of them.
"""

import tomllib
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, CheckContext, load_all_checks
from schemathesis.config import SchemathesisConfig

from blogapi.email_verification import INVALID_LINK
from blogapi.errors import InvalidGrant, InvalidTokenRequest
from blogapi.main import create_app
from blogapi.password_reset import INVALID_TOKEN
from blogapi.security import BCRYPT_MAX_BYTES
from tests.factories import create_admin_and_login, create_post, empty_tables, login

CONFIG = Path(__file__).resolve().parents[1] / "schemathesis.toml"
MAX_EXAMPLES = 100
"""Per operation, and scenarios of the chained calls: about a minute and a half in all."""

# An app of its own: schemathesis keeps the lifespan of the app it fuzzes running for the
# whole session, so the login throttle its failed logins fill is never another test's.
fuzzed_app = create_app()
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", fuzzed_app, config=SchemathesisConfig.from_path(CONFIG)
)

MALFORMED_CURSOR = "Malformed cursor"
CURSOR_OR_SKIP = "Pass either `cursor` or `skip`"
PASSWORD_TOO_LONG = f"at most {BCRYPT_MAX_BYTES} bytes in UTF-8"
NOT_AN_EMAIL = "value is not a valid email address"
REASONS: dict[tuple[str, int], tuple[str, ...]] = {
    ("GET /posts", 422): (MALFORMED_CURSOR, CURSOR_OR_SKIP),
    ("GET /users", 422): (MALFORMED_CURSOR, CURSOR_OR_SKIP),
    ("POST /users", 422): (PASSWORD_TOO_LONG, NOT_AN_EMAIL),
    ("PUT /users/me/password", 422): (PASSWORD_TOO_LONG,),
    ("POST /password-recovery", 422): (NOT_AN_EMAIL,),
    ("POST /reset-password", 400): (INVALID_TOKEN,),
    ("POST /verify-email", 400): (INVALID_LINK,),
    ("POST /login", 400): (
        InvalidGrant.default_detail,
        InvalidTokenRequest.default_detail,
    ),
    ("POST /login", 422): ("Field required",),
    ("POST /reset-password", 422): (PASSWORD_TOO_LONG,),
}
"""The `detail` (a part of each message) of every refusal of a request the schema
allows that schemathesis.toml expects, by operation and status: one of its reasons."""


def expected_exceptions() -> set[tuple[str, int]]:
    """The operations and statuses schemathesis.toml adds to what schemathesis expects of
    a request the schema allows."""
    defaults = SchemathesisConfig().projects.default.checks.positive_data_acceptance
    entries = tomllib.loads(CONFIG.read_text())["operations"]
    exceptions = set()
    for entry in entries:
        names = entry["include-name"]
        statuses = entry["checks"]["positive_data_acceptance"]["expected-statuses"]
        exceptions |= {
            (name, int(status))
            for name in ([names] if isinstance(names, str) else names)
            for status in statuses
            if status not in defaults.expected_statuses
        }
    return exceptions


def refused_for_a_listed_reason(
    ctx: CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    """A request the schema allows that is refused as schemathesis.toml expects gives one
    of the reasons listed for it, so the exception hides nothing else."""
    reasons = REASONS.get((case.operation.label, response.status_code))
    if reasons is None or case.meta is None or case.meta.generation.mode.is_negative:
        return
    body = response.json()
    detail = body.get("detail", body.get("error_description"))
    messages = [detail] if isinstance(detail, str) else [e["msg"] for e in detail]
    unlisted = [m for m in messages if not any(reason in m for reason in reasons)]
    assert not unlisted, (
        f"{case.operation.label} answered {response.status_code} to a request the "
        f"schema allows, for no reason schemathesis.toml gives: {unlisted}"
    )


def test_every_check_is_on() -> None:
    """The checks are those schemathesis.toml turns on: all of them, so none is silenced
    there; a check a new schemathesis version brings is on too. Response time is no
    property of the API and stays off."""
    load_all_checks()
    checks = schema.config.checks_config_for()

    assert {
        check.__name__: checks.get_by_name(name=check.__name__).enabled
        for check in CHECKS.get_all()
    } == dict.fromkeys(CHECKS.get_all_names(), True)
    assert not checks.max_response_time.enabled


def test_each_exception_in_the_configuration_has_its_reason() -> None:
    assert expected_exceptions() == set(REASONS)


def create_fuzz_admin(client: TestClient) -> dict:
    """An admin, so the admins' routes are fuzzed too, with one published post, so some
    generated ids name a real row."""
    admin, headers = create_admin_and_login(client)
    create_post(client, headers)
    return admin


@pytest.fixture
def fuzz_admin(client: TestClient) -> dict:
    return create_fuzz_admin(client)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_request_gets_an_answer_the_schema_does_not_promise(
    case: schemathesis.Case, client: TestClient, fuzz_admin: dict
) -> None:
    # A fresh token each time: a fuzzed POST /logout revokes the one it was sent with.
    headers = login(client, fuzz_admin["email"])
    case.call_and_validate(
        headers=headers, additional_checks=[refused_for_a_listed_reason]
    )


def test_chains_of_calls_keep_the_schemas_promises(client: TestClient) -> None:
    """Calls chained by the links schemathesis infers from the schema (a created post's id
    read, changed, deleted, read again), so use_after_free and
    ensure_resource_availability have a history to judge. Each scenario starts from the
    same database, or Hypothesis could not replay one."""

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            empty_tables()
            self.admin = create_fuzz_admin(client)

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"headers": login(client, self.admin["email"])}

        def validate_response(
            self, response: Any, case: schemathesis.Case, **kwargs: Any
        ) -> None:
            kwargs["additional_checks"] = [refused_for_a_listed_reason]
            super().validate_response(response, case, **kwargs)

    Workflow.run(
        settings=settings(
            max_examples=MAX_EXAMPLES,
            stateful_step_count=6,
            suppress_health_check=list(HealthCheck),
        )
    )
