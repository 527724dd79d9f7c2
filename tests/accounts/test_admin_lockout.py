"""The admin login is locked out after a few wrong passwords, per address and per user name."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    return get_user_model().objects.create_superuser("root", "root@example.com", "right-pw-123")


def login(client: Client, username: str, password: str, address: str = "198.51.100.7"):
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": password},
        REMOTE_ADDR=address,
    )


def test_wrong_passwords_lock_the_address_out_even_for_the_right_one(staff, settings):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login(client, "root", "wrong").status_code == 200  # the form again
    assert login(client, "root", "wrong").status_code == 429
    assert login(client, "root", "right-pw-123").status_code == 429
    # Another address is locked out too, for this user name.
    assert login(Client(), "root", "right-pw-123", address="203.0.113.20").status_code == 429


def test_guessing_many_user_names_from_one_address_locks_that_address(staff, settings):
    client = Client()
    for index in range(settings.AXES_FAILURE_LIMIT):
        login(client, f"user{index}", "wrong")
    assert login(client, "root", "right-pw-123").status_code == 429
    # The user itself, from elsewhere, still gets in.
    assert login(Client(), "root", "right-pw-123", address="203.0.113.20").status_code == 302


def test_the_api_token_endpoint_is_not_locked_out_by_the_admin_rule(staff, settings, api_client):
    for _ in range(settings.AXES_FAILURE_LIMIT + 1):
        api_client.post("/api/token/", {"username": "root", "password": "wrong"}, format="json")
    answer = api_client.post(
        "/api/token/", {"username": "root", "password": "right-pw-123"}, format="json"
    )
    assert answer.status_code == 200
