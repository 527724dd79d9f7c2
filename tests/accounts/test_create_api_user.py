from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from accounts.services import api_user_create

pytestmark = pytest.mark.django_db


def create_api_user(username: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("create_api_user", username, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_prints_only_the_generated_password_which_signs_in():
    out, err = create_api_user("camera-app")

    password = out.strip()
    assert out == password + "\n"
    assert len(password) >= 40
    assert "will not be shown again" in err
    tokens = APIClient().post(
        "/api/token/", {"username": "camera-app", "password": password}, format="json"
    )
    assert tokens.status_code == 200


def test_the_user_is_active_but_not_staff_and_the_password_is_stored_hashed():
    out, _ = create_api_user("camera-app")

    user = get_user_model().objects.get(username="camera-app")
    assert user.is_active and not user.is_staff and not user.is_superuser
    assert out.strip() not in user.password
    assert user.check_password(out.strip())


def test_each_user_gets_a_different_password():
    _, first = api_user_create(username="one")
    _, second = api_user_create(username="two")

    assert first != second


def test_a_taken_username_is_a_command_error_and_changes_nothing():
    out, _ = create_api_user("camera-app")

    with pytest.raises(CommandError, match="already exists"):
        create_api_user("camera-app")
    assert get_user_model().objects.get(username="camera-app").check_password(out.strip())


def test_an_invalid_username_is_a_command_error():
    with pytest.raises(CommandError, match="username"):
        create_api_user("not a valid name!")
    assert not get_user_model().objects.exists()
