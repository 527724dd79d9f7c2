"""GET /metrics: figures that move as requests are made, and who may read them."""

import pytest
from rest_framework.test import APIClient

from classification.models import ModelVersion
from classification.registry.services import model_version_promote
from tests.support.observability import CLASSIFY, scrape, upload, value

pytestmark = pytest.mark.django_db


def test_classify_requests_are_counted_by_route_and_status(api_client, tiny_model):
    before = scrape()
    assert upload(api_client, seed=1).status_code == 200
    assert api_client.post("/classify-image", {}, format="json").status_code == 400
    after = scrape()

    def moved(name: str, **labels: object) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("classifier_requests_total", endpoint=CLASSIFY, method="POST", status=200) == 1
    assert moved("classifier_requests_total", endpoint=CLASSIFY, method="POST", status=400) == 1
    assert moved("classifier_request_duration_seconds_count", endpoint=CLASSIFY, status=200) == 1
    assert moved("classifier_request_duration_seconds_sum", endpoint=CLASSIFY) > 0


def test_stages_cache_predictions_and_confidence_move_with_each_answer(api_client, tiny_model):
    before = scrape()
    first = upload(api_client, seed=2).json()
    assert upload(api_client, seed=2).json()["cached"] is True
    after = scrape()

    def moved(name: str, **labels: object) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    for stage in ("decode", "preprocess", "inference"):  # computed once
        assert moved("classifier_stage_duration_seconds_count", stage=stage) == 1
    assert moved("classifier_stage_duration_seconds_count", stage="cache_lookup") == 2
    assert moved("classifier_stage_duration_seconds_count", stage="log_write") == 2
    assert moved("classifier_cache_lookups_total", kind="image", result="miss") == 1
    assert moved("classifier_cache_lookups_total", kind="image", result="hit") == 1
    label = first["classification"]
    assert moved("classifier_predictions_total", model="tiny", label=label) == 2
    assert moved("classifier_prediction_confidence_count", model="tiny") == 2
    assert moved("classifier_prediction_confidence_bucket", model="tiny", le="1.0") == 2
    assert moved("classifier_inference_batch_size_bucket", model="tiny", le="1.0") == 1


def test_the_production_model_and_its_load_are_shown(api_client, register_model, tiny_keras_path):
    from tests.support.models import TINY_LABELS

    register_model(tiny_keras_path, name="tiny", labels=TINY_LABELS)
    second = register_model(tiny_keras_path, name="tiny", labels=TINY_LABELS, stage="staging")
    before = scrape()
    upload(api_client, seed=3)
    text = scrape()
    assert value(text, "classifier_production_model", model="tiny", version=1) == 1
    assert value(text, "classifier_model_served", model="tiny", version=1) == 1
    loads = "classifier_model_load_seconds_count"
    assert value(text, loads, model="tiny") - value(before, loads, model="tiny") == 1

    model_version_promote(model_version=second)
    text = scrape()
    assert value(text, "classifier_production_model", model="tiny", version=2) == 1
    assert value(text, "classifier_production_model", model="tiny", version=1) == 0
    assert ModelVersion.objects.get(pk=second.pk).stage == "production"


def test_metrics_are_refused_to_other_addresses(tiny_model):
    response = APIClient().get("/metrics", REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


def test_allowed_networks_come_from_settings(settings):
    settings.METRICS_ALLOWED_CIDRS = ["10.0.0.0/8"]
    assert APIClient().get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert APIClient().get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403


def test_a_bearer_token_opens_metrics_from_anywhere(settings):
    settings.METRICS_TOKEN = "s3cret-token"
    far = {"REMOTE_ADDR": "203.0.113.9"}
    assert (
        APIClient().get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token", **far).status_code
        == 200
    )

    missing = APIClient().get("/metrics", **far)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "not_authenticated"
    assert missing["WWW-Authenticate"].startswith("Bearer")

    wrong = APIClient().get("/metrics", HTTP_AUTHORIZATION="Bearer nope", **far)
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "authentication_failed"


def test_production_refuses_every_address_without_a_token(settings):
    settings.PRODUCTION = True
    settings.METRICS_ALLOWED_CIDRS = ["10.0.0.0/8", "127.0.0.0/8"]
    # An ingress controller's pod, and loopback (a proxy on the same host).
    for address in ("10.88.0.1", "127.0.0.1"):
        response = APIClient().get("/metrics", REMOTE_ADDR=address)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "permission_denied"


def test_production_asks_the_allowed_networks_for_the_token_too(settings):
    settings.PRODUCTION = True
    settings.METRICS_ALLOWED_CIDRS = ["10.0.0.0/8"]
    settings.METRICS_TOKEN = "s3cret-token"
    near = {"REMOTE_ADDR": "10.88.0.1"}

    missing = APIClient().get("/metrics", **near)
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"].startswith("Bearer")
    token = APIClient().get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token", **near)
    assert token.status_code == 200
    assert token.content.startswith(b"# HELP")


def test_scrapes_are_neither_counted_nor_throttled(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": dict.fromkeys(
            settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "1/minute"
        ),
    }
    texts = [scrape() for _ in range(3)]
    assert value(texts[-1], "classifier_requests_total", endpoint="metrics") == 0
    assert texts[0].startswith("# HELP")


def test_any_accept_header_gets_the_text_format():
    response = APIClient().get("/metrics", HTTP_ACCEPT="application/openmetrics-text")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
