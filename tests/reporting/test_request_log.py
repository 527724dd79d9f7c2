import base64

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.throttling import BaseThrottle

from classification.apis import ClassifyImageApi
from reporting.models import RequestLog
from reporting.services import request_log_failures
from tests.support.images import image_bytes

pytestmark = pytest.mark.django_db


def png() -> bytes:
    return image_bytes(format="PNG", size=(32, 32))


def upload(api_client, **extra):
    from django.core.files.uploadedfile import SimpleUploadedFile

    image = SimpleUploadedFile("photo.png", png(), content_type="image/png")
    return api_client.post("/classify-image", {"image": image}, format="multipart", **extra)


def test_an_answered_upload_is_one_row_with_its_result(api_client, tiny_model):
    response = upload(api_client)
    assert response.status_code == 200
    row = RequestLog.objects.get()
    body = response.json()
    assert row.request_id == response["X-Request-ID"]
    assert row.input_kind == "upload"
    assert row.status_code == 200 and row.error_code == ""
    assert row.model_name == "tiny" and row.model_version == tiny_model.version
    assert row.top_label == body["classification"]
    assert row.confidence == pytest.approx(body["confidence"])
    assert row.image_sha256 == body["image_sha256"]
    assert row.processing_time == body["processing_time"]
    assert row.cached is False and row.cache_kind is None
    assert row.image_url == "" and row.image_url_sha256 is None
    assert row.user is None
    assert row.exported_at is None


def test_base64_input_is_logged_as_base64(api_client, tiny_model):
    response = api_client.post(
        "/classify-image", {"image_base64": base64.b64encode(png()).decode()}, format="json"
    )
    assert response.status_code == 200
    assert RequestLog.objects.get().input_kind == "base64"


def test_client_request_id_is_kept_and_echoed(api_client, tiny_model):
    response = upload(api_client, HTTP_X_REQUEST_ID="trace-42")
    assert response["X-Request-ID"] == "trace-42"
    assert RequestLog.objects.get().request_id == "trace-42"


def test_unusable_request_id_is_replaced(api_client, tiny_model):
    response = upload(api_client, HTTP_X_REQUEST_ID="no spaces <allowed>" + "x" * 100)
    assert len(response["X-Request-ID"]) == 32
    assert RequestLog.objects.get().request_id == response["X-Request-ID"]


def test_a_reused_request_id_still_gives_a_row_per_request(api_client, tiny_model):
    for _ in range(2):
        assert upload(api_client, HTTP_X_REQUEST_ID="same").status_code == 200
    ids = sorted(RequestLog.objects.values_list("request_id", flat=True))
    assert len(ids) == 2 and ids[0] == "same" and ids[1].startswith("same-")


@pytest.mark.parametrize(
    "payload, status, code, kind",
    [
        ({}, 400, "invalid_request", ""),
        ({"image_base64": "not base64!"}, 400, "invalid_request", "base64"),
        (
            {"image_base64": base64.b64encode(image_bytes(format="BMP")).decode()},
            415,
            "unsupported_image_type",
            "base64",
        ),
        (
            {"image_base64": base64.b64encode(png()[:60]).decode()},
            422,
            "undecodable_image",
            "base64",
        ),
    ],
)
def test_errors_are_logged_with_status_and_code(
    api_client, tiny_model, payload, status, code, kind
):
    response = api_client.post("/classify-image", payload, format="json")
    assert response.status_code == status
    row = RequestLog.objects.get()
    assert (row.status_code, row.error_code, row.input_kind) == (status, code, kind)
    assert row.top_label == "" and row.confidence is None and row.model_name == ""
    assert row.processing_time >= 0


def test_an_image_url_is_logged_even_when_refused(api_client, tiny_model):
    url = "https://images.example/" + "long/" * 500 + "dog.jpg"
    response = api_client.post(
        "/classify-image", {"image_url": url, "image_base64": "x"}, format="json"
    )
    assert response.status_code == 400
    row = RequestLog.objects.get()
    assert row.input_kind == "url" and row.image_url == url
    assert len(row.image_url_sha256) == 64


def test_a_malformed_body_is_logged_without_input(api_client, tiny_model):
    response = api_client.generic(
        "POST", "/classify-image", b'{"image_base64": ', content_type="application/json"
    )
    assert response.status_code == 400
    row = RequestLog.objects.get()
    assert (row.status_code, row.error_code, row.input_kind) == (400, "malformed_request", "")


def test_no_model_ready_is_logged_as_503(api_client):
    response = upload(api_client)
    assert response.status_code == 503
    assert RequestLog.objects.get().error_code == "model_not_ready"


class RefuseEveryone(BaseThrottle):
    def allow_request(self, request, view) -> bool:
        return False

    def wait(self) -> float:
        return 30.0


def test_a_throttled_request_is_logged(api_client, tiny_model, monkeypatch):
    monkeypatch.setattr(ClassifyImageApi, "throttle_classes", [RefuseEveryone])
    response = upload(api_client)
    assert response.status_code == 429
    row = RequestLog.objects.get()
    assert (row.status_code, row.error_code) == (429, "throttled")
    assert row.input_kind == ""  # a throttled body is not even parsed


def test_an_unexpected_failure_is_logged_as_500(tiny_model, monkeypatch):
    from rest_framework.test import APIClient

    from classification.serving import services

    def broken(**kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(services, "image_source_classify", broken)
    client = APIClient(raise_request_exception=False)
    response = upload(client)
    assert response.status_code == 500
    row = RequestLog.objects.get()
    assert (row.status_code, row.error_code, row.input_kind) == (500, "http_500", "upload")


def test_the_authenticated_user_is_recorded(api_client, tiny_model):
    user = get_user_model().objects.create_user("alice", password="pw-alice-123")
    api_client.force_authenticate(user)
    upload(api_client)
    assert RequestLog.objects.get().user == user


def test_client_address_is_kept_only_as_a_salted_hash(api_client, tiny_model, settings):
    upload(api_client, REMOTE_ADDR="203.0.113.9")
    row = RequestLog.objects.get()
    assert len(row.client_hash) == 64
    values = [str(value) for value in RequestLog.objects.values().get().values()]
    assert not any("203.0.113.9" in value for value in values)
    settings.REQUEST_LOG_CLIENT_HASH = False
    upload(api_client, REMOTE_ADDR="203.0.113.9")
    assert RequestLog.objects.latest("id").client_hash == ""


def test_a_failing_log_write_does_not_fail_the_request(api_client, tiny_model):
    failures_before = request_log_failures.count
    with connection.cursor() as cursor:  # a real database error: the table is gone
        cursor.execute("ALTER TABLE reporting_requestlog RENAME TO reporting_requestlog_away")
    try:
        response = upload(api_client)
        assert response.status_code == 200
        assert response.json()["classification"]
        assert request_log_failures.count == failures_before + 1
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE reporting_requestlog_away RENAME TO reporting_requestlog")
    upload(api_client)
    assert RequestLog.objects.count() == 1


def test_other_endpoints_are_not_logged(api_client, tiny_model):
    api_client.get("/models")
    api_client.get("/classify-image")
    assert RequestLog.objects.count() == 0
