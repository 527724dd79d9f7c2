"""POST /classify-image with uploads and base64 bytes: answers and the error contract."""

import base64
import hashlib
import io

import pytest

from tests.support.images import image_bytes
from tests.support.models import TINY_LABELS

pytestmark = pytest.mark.django_db

URL = "/classify-image"


def upload(api_client, data: bytes, name: str = "photo.jpg", **fields):
    file = io.BytesIO(data)
    file.name = name
    return api_client.post(URL, {"image": file, **fields}, format="multipart")


def post_base64(api_client, data: bytes, **fields):
    body = {"image_base64": base64.b64encode(data).decode(), **fields}
    return api_client.post(URL, body, format="json")


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"].endswith(".")


def test_upload_is_classified(api_client, tiny_model):
    data = image_bytes(format="JPEG", size=(64, 48))
    response = upload(api_client, data)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "classification",
        "confidence",
        "processing_time",
        "predictions",
        "model",
        "cached",
        "image_sha256",
    }
    assert len(body["predictions"]) == 3
    confidences = [p["confidence"] for p in body["predictions"]]
    assert confidences == sorted(confidences, reverse=True)
    assert sum(confidences) == pytest.approx(1.0, abs=1e-4)  # 3 classes, top 3
    assert {p["label"] for p in body["predictions"]} == set(TINY_LABELS)
    assert body["classification"] == body["predictions"][0]["label"]
    assert body["confidence"] == body["predictions"][0]["confidence"]
    assert 0 < body["processing_time"] < 30
    assert body["model"] == {"name": "tiny", "version": tiny_model.version}
    assert body["cached"] is False
    assert body["image_sha256"] == hashlib.sha256(data).hexdigest()


def test_base64_gives_the_same_answer_as_the_upload(api_client, tiny_model):
    data = image_bytes(format="PNG", size=(40, 40), color=(10, 200, 30))
    by_upload = upload(api_client, data, name="x.png").json()
    by_base64 = post_base64(api_client, data).json()
    assert by_base64["predictions"] == by_upload["predictions"]
    assert by_base64["image_sha256"] == by_upload["image_sha256"]


def test_base64_data_url_prefix_is_accepted(api_client, tiny_model):
    data = image_bytes(format="PNG")
    body = {"image_base64": "data:image/png;base64," + base64.b64encode(data).decode()}
    assert api_client.post(URL, body, format="json").status_code == 200


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_top_k_limits_the_predictions(api_client, tiny_model, top_k):
    response = post_base64(api_client, image_bytes(), top_k=top_k)
    assert len(response.json()["predictions"]) == top_k


@pytest.mark.parametrize("top_k", [0, 11, "many", -1])
def test_top_k_out_of_range_is_refused(api_client, tiny_model, top_k):
    assert_error(post_base64(api_client, image_bytes(), top_k=top_k), 400, "invalid_request")


def test_model_can_be_named(api_client, tiny_model):
    response = post_base64(api_client, image_bytes(), model="tiny")
    assert response.json()["model"]["name"] == "tiny"


def test_unknown_model_is_refused(api_client, tiny_model):
    assert_error(post_base64(api_client, image_bytes(), model="nope"), 400, "unknown_model")


def test_no_model_in_production_answers_503(api_client):
    assert_error(post_base64(api_client, image_bytes()), 503, "model_not_ready")


def test_a_model_without_production_version_answers_503(
    api_client, register_model, tiny_keras_path
):
    register_model(tiny_keras_path, name="tiny", labels=TINY_LABELS, stage="staging")
    assert_error(post_base64(api_client, image_bytes(), model="tiny"), 503, "model_not_ready")


def test_missing_image_is_refused(api_client, tiny_model):
    assert_error(api_client.post(URL, {"top_k": 3}, format="json"), 400, "invalid_request")


def test_upload_and_base64_together_are_refused(api_client, tiny_model):
    data = image_bytes()
    file = io.BytesIO(data)
    file.name = "a.jpg"
    response = api_client.post(
        URL, {"image": file, "image_base64": base64.b64encode(data).decode()}, format="multipart"
    )
    assert_error(response, 400, "invalid_request")


def test_invalid_base64_is_refused(api_client, tiny_model):
    response = api_client.post(URL, {"image_base64": "not base64 !!"}, format="json")
    assert_error(response, 400, "invalid_request")


def test_malformed_json_is_refused(api_client, tiny_model):
    response = api_client.generic(
        "POST", URL, b'{"image_base64": ', content_type="application/json"
    )
    assert_error(response, 400, "malformed_request")


def test_not_an_image_is_415(api_client, tiny_model):
    assert_error(
        upload(api_client, b"just some text", name="notes.jpg"), 415, "unsupported_image_type"
    )
    assert_error(post_base64(api_client, b"GIF? no"), 415, "unsupported_image_type")


def test_undecodable_image_is_422(api_client, tiny_model):
    data = image_bytes(format="JPEG", size=(300, 300))
    assert_error(upload(api_client, data[:200]), 422, "undecodable_image")


def test_empty_upload_is_refused(api_client, tiny_model):
    assert_error(upload(api_client, b""), 400, "empty_image")


@pytest.mark.parametrize("blank", ["", "  \n"])
def test_blank_base64_is_an_empty_image_in_json_and_multipart(api_client, tiny_model, blank):
    as_json = api_client.post("/classify-image", {"image_base64": blank}, format="json")
    as_form = api_client.post("/classify-image", {"image_base64": blank}, format="multipart")
    assert_error(as_json, 400, "empty_image")
    assert_error(as_form, 400, "empty_image")


def test_too_many_pixels_is_413(api_client, tiny_model, settings):
    settings.IMAGE_MAX_PIXELS = 100
    assert_error(post_base64(api_client, image_bytes(size=(20, 20))), 413, "image_too_many_pixels")


def test_upload_over_the_size_limit_is_413(api_client, tiny_model, settings):
    data = image_bytes(format="PNG", size=(64, 64))
    settings.IMAGE_MAX_BYTES = len(data) - 1
    assert_error(upload(api_client, data, name="a.png"), 413, "payload_too_large")
    settings.IMAGE_MAX_BYTES = len(data)
    assert upload(api_client, data, name="a.png").status_code == 200


def test_base64_over_the_size_limit_is_413(api_client, tiny_model, settings):
    data = image_bytes(format="PNG", size=(64, 64))
    settings.IMAGE_MAX_BYTES = len(data) - 1
    assert_error(post_base64(api_client, data), 413, "image_too_large")


def test_json_body_over_the_limit_is_413_before_parsing(api_client, tiny_model, settings):
    settings.IMAGE_MAX_BYTES = 1000
    body = b'{"image_base64": "' + b"A" * 200_000 + b'"}'
    response = api_client.generic("POST", URL, body, content_type="application/json")
    assert_error(response, 413, "payload_too_large")


def test_deeply_nested_json_is_refused_not_a_crash(api_client, tiny_model):
    body = "[" * 100_000 + "]" * 100_000
    response = api_client.generic("POST", URL, body, content_type="application/json")
    assert_error(response, 400, "malformed_request")


def test_other_content_types_are_refused(api_client, tiny_model):
    response = api_client.generic("POST", URL, b"abc", content_type="text/plain")
    assert_error(response, 415, "unsupported_media_type")


def test_get_is_not_allowed(api_client):
    assert_error(api_client.get(URL), 405, "method_not_allowed")


def test_models_lists_versions_and_the_production_one(api_client, register_model, tiny_keras_path):
    register_model(tiny_keras_path, name="tiny", labels=TINY_LABELS)
    register_model(tiny_keras_path, name="tiny", labels=TINY_LABELS, stage="staging")
    response = api_client.get("/models")
    assert response.status_code == 200
    (entry,) = response.json()
    assert entry["name"] == "tiny"
    assert entry["production_version"] == 1
    assert [v["version"] for v in entry["versions"]] == [2, 1]
    assert entry["versions"][1]["labels"] == TINY_LABELS


def test_openapi_schema_and_docs_are_served_without_a_cdn(api_client):
    schema = api_client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/classify-image" in schema.content and b"image_base64" in schema.content
    docs = api_client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "swagger-ui" in html and "cdn" not in html.lower()
    assert "/static/drf_spectacular_sidecar/" in html
