import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts.apis import INVALID_REFRESH_MESSAGE
from tests.support.accounts import PASSWORD, bearer_client

pytestmark = pytest.mark.django_db


def obtain(client: APIClient, username: str = "alice", password: str = PASSWORD):
    return client.post("/api/token/", {"username": username, "password": password}, format="json")


def test_username_and_password_give_an_access_and_a_refresh_token(api_client, alice):
    response = obtain(api_client)

    assert response.status_code == 200
    assert set(response.json()) == {"access", "refresh"}
    secret = bearer_client(response.json()["access"]).get("/secret")
    assert secret.content == b"Hi alice"


def test_a_wrong_password_is_401_in_the_error_shape(api_client, alice):
    response = obtain(api_client, password="not the password")

    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "code": "authentication_failed",
            "message": "No active account found with the given credentials",
        }
    }
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_an_inactive_user_gets_no_token(api_client, alice):
    alice.is_active = False
    alice.save()

    assert obtain(api_client).status_code == 401


def test_a_missing_password_is_400(api_client, alice):
    response = api_client.post("/api/token/", {"username": "alice"}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


def test_refresh_gives_a_new_access_token_and_a_new_refresh_token(api_client, alice):
    pair = obtain(api_client).json()

    response = api_client.post("/api/token/refresh/", {"refresh": pair["refresh"]}, format="json")

    assert response.status_code == 200
    assert response.json()["refresh"] != pair["refresh"]
    assert bearer_client(response.json()["access"]).get("/secret").content == b"Hi alice"


def test_a_rotated_refresh_token_cannot_be_used_again(api_client, alice):
    pair = obtain(api_client).json()
    first = api_client.post("/api/token/refresh/", {"refresh": pair["refresh"]}, format="json")
    assert first.status_code == 200

    again = api_client.post("/api/token/refresh/", {"refresh": pair["refresh"]}, format="json")

    assert again.status_code == 401
    assert again.json() == {
        "error": {"code": "authentication_failed", "message": INVALID_REFRESH_MESSAGE}
    }
    verify = api_client.post("/api/token/verify/", {"token": pair["refresh"]}, format="json")
    assert verify.status_code == 401
    # The refresh token handed out by the rotation still works.
    newer = api_client.post(
        "/api/token/refresh/", {"refresh": first.json()["refresh"]}, format="json"
    )
    assert newer.status_code == 200


def test_an_access_token_is_no_refresh_token(api_client, alice):
    pair = obtain(api_client).json()

    response = api_client.post("/api/token/refresh/", {"refresh": pair["access"]}, format="json")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_verify_accepts_a_valid_token_and_refuses_garbage(api_client, alice):
    pair = obtain(api_client).json()

    valid = api_client.post("/api/token/verify/", {"token": pair["access"]}, format="json")
    assert valid.status_code == 200
    garbage = api_client.post("/api/token/verify/", {"token": "not.a.token"}, format="json")
    assert garbage.status_code == 401
    assert garbage.json()["error"]["message"] == "Token is invalid"


def test_tokens_live_15_minutes_and_1_day_by_default(api_client, alice):
    pair = obtain(api_client).json()
    access, refresh = AccessToken(pair["access"]), RefreshToken(pair["refresh"])

    assert access["exp"] - access["iat"] == 15 * 60
    assert refresh["exp"] - refresh["iat"] == 24 * 60 * 60
