from datetime import timedelta

import jwt
import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken
from rest_framework_simplejwt.utils import aware_utcnow

from tests.support.accounts import bearer_client, token_pair

pytestmark = pytest.mark.django_db


def assert_unauthenticated(response, code: str = "authentication_failed") -> None:
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_a_valid_access_token_gets_exactly_hi_and_the_username(alice):
    response = bearer_client(token_pair(alice)["access"]).get("/secret")

    assert response.status_code == 200
    assert response.content == b"Hi alice"
    assert response["Content-Type"] == "text/plain; charset=utf-8"


def test_the_answer_is_plain_text_whatever_the_client_accepts(alice):
    client = bearer_client(token_pair(alice)["access"])

    response = client.get("/secret", HTTP_ACCEPT="application/json")

    assert response.content == b"Hi alice"
    assert response["Content-Type"] == "text/plain; charset=utf-8"


def test_a_signed_in_browser_session_gets_the_greeting(alice):
    client = APIClient()
    client.force_login(alice)

    response = client.get("/secret")

    assert response.status_code == 200
    assert response.content == b"Hi alice"


def test_no_credentials_is_401_with_a_bearer_challenge(api_client):
    assert_unauthenticated(api_client.get("/secret"), code="not_authenticated")


def test_errors_stay_json_when_the_client_asks_for_text(api_client):
    assert_unauthenticated(
        api_client.get("/secret", HTTP_ACCEPT="text/plain"), code="not_authenticated"
    )


def test_an_expired_access_token_is_401(alice):
    token = AccessToken.for_user(alice)
    token.set_exp(from_time=aware_utcnow() - timedelta(hours=1))

    response = bearer_client(str(token)).get("/secret")

    assert_unauthenticated(response)
    assert response.json()["error"]["message"] == "Given token not valid for any token type"


def test_a_refresh_token_in_place_of_an_access_token_is_401(alice):
    assert_unauthenticated(bearer_client(token_pair(alice)["refresh"]).get("/secret"))


def test_a_token_signed_with_another_key_is_401(alice):
    claims = AccessToken.for_user(alice).payload
    forged = jwt.encode(claims, "some other key that is long enough to sign", algorithm="HS256")

    assert_unauthenticated(bearer_client(forged).get("/secret"))


def test_an_unsigned_token_is_401(alice):
    claims = AccessToken.for_user(alice).payload
    unsigned = jwt.encode(claims, None, algorithm="none")

    assert_unauthenticated(bearer_client(unsigned).get("/secret"))


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer not-a-token",
        "Bearer a.b.c",
        "Bearer eyJhbGciOiJIUzI1NiJ9.e30.",
        "Bearer",
        "Bearer two tokens",
        "Bearer \u00e9t\u00e9",
    ],
    ids=["garbage", "three-garbage-parts", "empty-signature", "no-token", "two-tokens", "latin1"],
)
def test_a_malformed_authorization_header_is_401(authorization):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=authorization)

    assert_unauthenticated(client.get("/secret"))


def test_a_token_for_a_deleted_user_is_401(alice):
    access = token_pair(alice)["access"]
    alice.delete()

    assert_unauthenticated(bearer_client(access).get("/secret"))


def test_a_token_for_a_deactivated_user_is_401(alice):
    access = token_pair(alice)["access"]
    alice.is_active = False
    alice.save()

    assert_unauthenticated(bearer_client(access).get("/secret"))


def test_another_authorization_scheme_counts_as_no_credentials(api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Basic YWxpY2U6cGFzc3dvcmQ=")

    assert_unauthenticated(api_client.get("/secret"), code="not_authenticated")


def test_a_session_must_send_the_csrf_token_on_unsafe_requests(alice, tiny_model):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)

    response = client.post("/classify-image", {"image_base64": "AAAA"}, format="json")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert "CSRF" in response.json()["error"]["message"]
