"""Answers that tell the truth and tell nothing more: the page's security headers, one message
for every invalid token, /metrics closed by default in production, and a schema that says what
the API checks."""

import subprocess
import sys
from datetime import timedelta

import pytest
import yaml
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken
from rest_framework_simplejwt.utils import aware_utcnow

from tests.support.paths import ROOT

pytestmark = pytest.mark.django_db


def test_the_upload_page_sends_csp_referrer_and_permissions_policies(client):
    response = client.get("/")
    assert response.status_code == 200
    csp = response["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert response["Referrer-Policy"] == "same-origin"
    assert "camera=()" in response["Permissions-Policy"]


@pytest.fixture
def alice():
    return get_user_model().objects.create_user("alice", password="pw-alice-123")


def secret_message(token: str) -> tuple[int, str]:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = client.get("/secret")
    return response.status_code, response.json()["error"]["message"]


def test_every_invalid_token_gets_the_same_message(alice):
    expired = AccessToken.for_user(alice)
    expired.set_exp(from_time=aware_utcnow() - timedelta(hours=1))
    of_deleted = str(AccessToken.for_user(get_user_model().objects.create_user("bob")))
    get_user_model().objects.filter(username="bob").delete()
    inactive_user = get_user_model().objects.create_user("carol", is_active=False)
    of_inactive = str(AccessToken.for_user(inactive_user))
    answers = {
        secret_message(token) for token in ("garbage", str(expired), of_deleted, of_inactive)
    }
    assert answers == {(401, "Given token not valid for any token type")}


def test_metrics_are_token_only_by_default_in_production():
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.METRICS_ALLOWED_CIDRS)"
    )
    env = {
        "DJANGO_SETTINGS_MODULE": "classifier_site.settings",
        "PRODUCTION": "1",
        "SECRET_KEY": "k" * 50,
        "JWT_SIGNING_KEY": "j" * 50,
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("query", ["until=", "since=", "limit="])
def test_an_empty_report_parameter_is_a_400(api_client, query):
    response = api_client.get(f"/report?{query}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


def test_the_schema_says_exactly_one_image_input_and_describes_the_report_400s(api_client):
    schema = yaml.safe_load(api_client.get("/api/schema/").content)
    request = schema["components"]["schemas"]["ClassifyImageRequestRequest"]
    assert request["oneOf"] == [
        {"required": ["image_url"]},
        {"required": ["image"]},
        {"required": ["image_base64"]},
    ]
    report_400 = schema["paths"]["/report"]["get"]["responses"]["400"]["description"]
    assert "until before since" in report_400 and "empty" in report_400
    json_request = schema["components"]["schemas"]["ClassifyImageJsonRequestRequest"]
    assert json_request["properties"]["image_base64"]["minLength"] == 1
    classify_503 = schema["paths"]["/classify-image"]["post"]["responses"]["503"]["description"]
    assert "busy" in classify_503
