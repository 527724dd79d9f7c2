"""POST /api/token/ limits failed logins per client address and per user name, apart from the
admin login's lock-out: neither locks the other out, and only failures count."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

from tests.support.accounts import PASSWORD

pytestmark = pytest.mark.django_db

HOME, ELSEWHERE = "198.51.100.7", "203.0.113.20"
RELAXED = "100000/minute"


def obtain(username: str, password: str, *, address: str = HOME):
    return APIClient().post(
        "/api/token/",
        {"username": username, "password": password},
        format="json",
        REMOTE_ADDR=address,
    )


def admin_login(username: str, password: str, *, address: str = HOME):
    return Client().post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": password},
        REMOTE_ADDR=address,
    )


@pytest.fixture
def staff():
    return get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)


def assert_throttled(answer) -> None:
    assert answer.status_code == 429
    assert answer.json()["error"]["code"] == "throttled"
    assert int(answer["Retry-After"]) >= 1


def test_the_admin_login_works_after_20_failed_api_logins_for_that_user(
    staff, shared_cache, throttle_rates
):
    throttle_rates(token_obtain=RELAXED, token_obtain_user=RELAXED)
    for _ in range(20):
        assert obtain("root", "wrong").status_code == 401

    assert admin_login("root", PASSWORD).status_code == 302
    # From another address too, and the API itself still lets the right password in.
    assert admin_login("root", PASSWORD, address=ELSEWHERE).status_code == 302
    assert obtain("root", PASSWORD).status_code == 200


def test_the_admin_login_works_while_the_api_throttles_that_user(
    staff, shared_cache, throttle_rates
):
    throttle_rates(token_obtain=RELAXED, token_obtain_user="3/hour")
    for _ in range(20):
        obtain("root", "wrong")
    assert_throttled(obtain("root", PASSWORD))

    assert admin_login("root", PASSWORD).status_code == 302


def test_admin_lockout_does_not_refuse_the_api(staff, shared_cache, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT + 1):
        admin_login("root", "wrong")
    assert admin_login("root", PASSWORD).status_code == 429

    assert obtain("root", PASSWORD).status_code == 200


def test_failed_logins_for_one_name_throttle_that_name_from_anywhere_and_no_other(
    alice, bob, shared_cache, throttle_rates
):
    throttle_rates(token_obtain=RELAXED, token_obtain_user="3/hour")
    for _ in range(3):
        assert obtain("alice", "wrong").status_code == 401

    assert_throttled(obtain("alice", PASSWORD))  # the right password too: no oracle
    assert_throttled(obtain("alice", PASSWORD, address=ELSEWHERE))
    assert obtain("bob", PASSWORD).status_code == 200  # the same address, another name


def test_failed_logins_from_one_address_throttle_that_address_for_every_name(
    alice, bob, shared_cache, throttle_rates
):
    throttle_rates(token_obtain="3/hour", token_obtain_user=RELAXED)
    for name in ("carol", "dave", "erin"):
        assert obtain(name, "wrong").status_code == 401

    assert_throttled(obtain("bob", PASSWORD))
    assert obtain("bob", PASSWORD, address=ELSEWHERE).status_code == 200
    assert obtain("alice", PASSWORD, address=ELSEWHERE).status_code == 200


def test_only_failures_count_and_a_throttled_attempt_costs_nothing(
    alice, shared_cache, throttle_rates
):
    throttle_rates(token_obtain="3/hour", token_obtain_user="3/hour")
    for _ in range(10):
        assert obtain("alice", PASSWORD).status_code == 200
    # Bad requests are not failed logins either.
    for _ in range(10):
        answer = APIClient().post("/api/token/", {"username": "alice"}, REMOTE_ADDR=HOME)
        assert answer.status_code == 400

    for _ in range(3):
        assert obtain("alice", "wrong").status_code == 401
    assert_throttled(obtain("alice", "wrong"))
    # The name stays throttled from anywhere; the refused attempts cost the address nothing.
    assert obtain("alice", PASSWORD, address=ELSEWHERE).status_code == 429
    assert obtain("bob-does-not-exist", "x", address=ELSEWHERE).status_code == 401
