"""Overlong user names, passwords and tokens are a JSON 400 before anything reads the database,
with the error code on the request's access log line; the admin login refuses them as a form."""

import logging

import pytest
from django.test import Client
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

LENGTHS = [256, 10_000]


def access_line(caplog, path: str) -> logging.LogRecord:
    lines = [r for r in caplog.records if r.name == "core.access" and r.path == path]
    assert len(lines) == 1
    return lines[0]


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("field", ["username", "password"])
def test_an_overlong_credential_is_400_without_a_query(
    field, length, alice, caplog, django_assert_num_queries
):
    body = {"username": "alice", "password": "pw", field: "x" * length}
    caplog.set_level(logging.INFO, logger="core.access")

    with django_assert_num_queries(0):
        answer = APIClient().post("/api/token/", body, format="json")

    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith(f"{field}: Ensure this field has no more than")
    line = access_line(caplog, "/api/token/")
    assert (line.status, line.error_code) == (400, "invalid_request")


@pytest.mark.parametrize("length", LENGTHS)
def test_credentials_on_the_refresh_endpoint_are_400_without_a_query(
    length, caplog, django_assert_num_queries
):
    caplog.set_level(logging.INFO, logger="core.access")
    with django_assert_num_queries(0):
        names = APIClient().post(
            "/api/token/refresh/",
            {"username": "u" * length, "password": "p" * length},
            format="json",
        )
        token = APIClient().post("/api/token/refresh/", {"refresh": "t" * 10_000}, format="json")

    assert names.status_code == token.status_code == 400
    assert names.json()["error"]["message"].startswith("refresh:")
    assert token.json()["error"]["message"].startswith("refresh: Ensure this field has no more")
    assert [r.error_code for r in caplog.records if r.name == "core.access"] == [
        "invalid_request",
        "invalid_request",
    ]


@pytest.mark.parametrize("length", LENGTHS)
def test_the_admin_login_refuses_an_overlong_name_as_a_form(length, alice):
    answer = Client().post(
        "/admin/login/?next=/admin/", {"username": "x" * length, "password": "x" * length}
    )

    assert answer.status_code == 200  # the form again, with its error
    assert b"errornote" in answer.content
