"""Every POST /classify-image is one log row that says what the client saw: inputs the database
would refuse are stored cleaned, Django's own refusals are JSON and logged too."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from reporting.models import RequestLog
from tests.support.images import image_bytes

pytestmark = pytest.mark.django_db


def post_json(api_client, text: str, **extra):
    return api_client.generic(
        "POST",
        "/classify-image",
        text.encode("utf-8", "surrogatepass"),
        content_type="application/json",
        **extra,
    )


@pytest.mark.parametrize(
    "url_json, stored",
    [
        ('"http://images.test/a\\u0000b.jpg"', "http://images.test/a\ufffdb.jpg"),
        ('"http://images.test/a\\ud800b.jpg"', "http://images.test/a\ufffdb.jpg"),
        ('"http://images.test/\\ud83d\\ude00.jpg"', "http://images.test/\U0001f600.jpg"),
    ],
    ids=["nul", "lone-surrogate", "surrogate-pair"],
)
def test_an_image_url_the_database_would_refuse_is_stored_cleaned(
    api_client, tiny_model, url_json, stored
):
    response = post_json(api_client, '{"image_url": ' + url_json + "}")
    assert response.status_code in (400, 422), response.content
    code = response.json()["error"]["code"]
    row = RequestLog.objects.get()
    assert (row.status_code, row.error_code, row.input_kind) == (response.status_code, code, "url")
    assert row.image_url == stored
    assert row.request_id == response["X-Request-ID"]


def test_more_than_a_thousand_form_fields_is_a_json_400_logged_as_400(api_client, tiny_model):
    fields = {f"field{index}": "x" for index in range(1001)}
    image = SimpleUploadedFile("photo.png", image_bytes(format="PNG"), content_type="image/png")
    response = api_client.post("/classify-image", {"image": image, **fields}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    row = RequestLog.objects.get()
    assert (row.status_code, row.error_code) == (400, "invalid_request")


def test_an_unknown_host_is_a_json_400_with_its_log_row(api_client, tiny_model):
    response = api_client.post(
        "/classify-image",
        {"image_url": "http://images.test/a.jpg"},
        format="json",
        HTTP_HOST="attacker.example",
    )
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "unknown_host"
    row = RequestLog.objects.get()
    assert (row.status_code, row.error_code) == (400, "unknown_host")
    assert row.request_id == response["X-Request-ID"]


def test_an_unknown_path_is_a_json_404(api_client):
    response = api_client.get("/no/such/page")
    assert response.status_code == 404
    assert json.loads(response.content)["error"]["code"] == "not_found"
    assert RequestLog.objects.count() == 0
