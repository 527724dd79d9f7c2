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


@pytest.mark.django_db(transaction=True)
def test_a_database_that_does_not_answer_leaves_the_worker_ready(tiny_model, monkeypatch):
    """The database is shared by every pod: a blip must not take them all out of the Service
    (the service answers without it; rows wait). It is reported, in the body and the metrics."""
    from django.db import connection

    from core.metrics import REGISTRY

    assert APIClient().get("/health/ready").status_code == 200  # the model is loaded
    gauge = "classifier_readiness_check_ok"
    assert REGISTRY.get_sample_value(gauge, {"check": "database"}) == 1
    connection.close()
    if connection.vendor == "postgresql":
        broken = {"HOST": "127.0.0.1", "PORT": str(_closed_port())}
    else:
        broken = {"NAME": "/nonexistent-folder/db.sqlite3"}
    for key, value in broken.items():
        monkeypatch.setitem(connection.settings_dict, key, value)
    # The registry is asked again on this probe (a refresh due): its loaded model still serves.
    from classification.serving.engine import get_runtime

    monkeypatch.setattr(get_runtime(), "refresh_seconds", 0)
    try:
        response = APIClient().get("/health/ready")
    finally:
        connection.close()
    assert response.status_code == 200, response.content
    database = response.json()["checks"]["database"]
    assert database["ok"] is False and database["required"] is False
    assert REGISTRY.get_sample_value(gauge, {"check": "database"}) == 0


def test_full_fetch_slots_are_reported_not_a_reason_to_leave_the_service(tiny_model, settings):
    from classification.intake.fetch_slots import fetch_slots

    settings.IMAGE_FETCH_CONCURRENCY = 0  # every slot taken
    response = APIClient().get("/health/ready")
    assert response.status_code == 200
    check = response.json()["checks"]["fetch_capacity"]
    assert check["ok"] is False and check["required"] is False
    assert check["detail"] == f"{fetch_slots.in_use()} of 0 fetch slots in use"
