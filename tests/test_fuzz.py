"""Property-based fuzzing of every operation in the OpenAPI schema, as a signed-in user.

schemathesis generates valid and invalid requests from the schema and checks that no
answer is a server error and that each answer's status code, content type and body are
the ones the schema documents; that a request the schema forbids (`"published": 0`, an id
as text) is refused, bodies being strict; and that no route ignores a bad token.

Not checked: that every request the schema allows is accepted. JSON Schema can't say all
that the API checks (a password's 72-byte limit in UTF-8, what email-validator takes for
an email, `5.0` for an integer id), so those answer 422 with a detail instead.
"""

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from blogapi.main import create_app
from tests.factories import create_post, create_user_and_login, login

# An app of its own: schemathesis keeps the lifespan of the app it fuzzes running for the
# whole session, so the login throttle its failed logins fill is never another test's.
fuzzed_app = create_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]


@pytest.fixture
def fuzz_user(client: TestClient) -> dict:
    """A user with one published post, so some generated ids name a real row."""
    user, headers = create_user_and_login(client)
    create_post(client, headers)
    return user


@schema.parametrize()
@settings(
    max_examples=25,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_request_gets_a_server_error_or_an_undocumented_answer(
    case: schemathesis.Case, client: TestClient, fuzz_user: dict
) -> None:
    # A fresh token each time: a fuzzed POST /logout revokes the one it was sent with.
    headers = login(client, fuzz_user["email"])
    case.call_and_validate(headers=headers, checks=CHECKS)
