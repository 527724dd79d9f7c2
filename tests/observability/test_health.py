"""GET /health/live and /health/ready: JSON, open to all, never throttled."""

import pytest
from rest_framework.test import APIClient

from tests.support.fake_elasticsearch import FakeElasticsearch

pytestmark = pytest.mark.django_db


@pytest.fixture
def tightly_throttled(settings) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": dict.fromkeys(
            settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "1/minute"
        ),
    }


def test_liveness_answers_without_a_model():
    response = APIClient().get("/health/live", REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def test_not_ready_before_a_model_is_in_production():
    response = APIClient().get("/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["model"]["ok"] is False and body["checks"]["model"]["required"]
    assert body["checks"]["database"]["ok"] is True


def test_ready_once_the_model_answers_a_warm_up_inference(tiny_model):
    response = APIClient().get("/health/ready", REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["model"]["ok"] is True
    assert "tiny v1 answered a warm-up inference" in body["checks"]["model"]["detail"]


def test_elasticsearch_is_reported_but_not_required(tiny_model, settings):
    fake = FakeElasticsearch().start()
    settings.ELASTICSEARCH_URL = fake.url
    try:
        up = APIClient().get("/health/ready").json()
        assert up["checks"]["elasticsearch"] == {"ok": True, "required": False, "detail": "answers"}
    finally:
        fake.stop()
    settings.ELASTICSEARCH_URL = f"http://127.0.0.1:{_closed_port()}"
    down = APIClient().get("/health/ready")
    assert down.status_code == 200
    assert down.json()["checks"]["elasticsearch"]["ok"] is False


def test_the_cache_is_reported_but_not_required(tiny_model, settings):
    body = APIClient().get("/health/ready").json()
    redis = body["checks"]["redis"]
    assert redis["required"] is False
    shared = "django_redis" in settings.CACHES["default"]["BACKEND"]
    assert redis["ok"] is (True if shared else None)


def test_health_is_never_throttled(tightly_throttled, tiny_model):
    client = APIClient()
    assert [client.get("/health/ready").status_code for _ in range(4)] == [200] * 4
    assert [client.get("/health/live").status_code for _ in range(4)] == [200] * 4


def test_a_bad_token_does_not_matter_to_health(tiny_model):
    response = APIClient().get("/health/ready", HTTP_AUTHORIZATION="Bearer not-a-jwt")
    assert response.status_code == 200


def _closed_port() -> int:
    from bench.loopback import free_port

    return free_port()
