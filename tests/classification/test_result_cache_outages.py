"""Redis stopped or hung: every request still answers, quickly, and the cache comes back."""

import io
import time

import pytest
from rest_framework.test import APIClient

from tests.support.images import encode, noise_image
from tests.support.redis import OwnRedis, redis_cache_settings

pytestmark = pytest.mark.django_db

# The socket timeout (0.25 s) is the most one request can lose to a broken Redis; this bound only
# tells "answered" from "hung", it is not a speed measurement.
ANSWERED_WITHIN = 5.0


@pytest.fixture
def own_redis(tmp_path, settings):
    server = OwnRedis(tmp_path)
    server.start()
    settings.CACHES = redis_cache_settings(server.url)
    settings.CACHE_BREAKER_SECONDS = 0.5
    yield server
    server.stop()


def classify(seed: int) -> tuple[dict, float]:
    file = io.BytesIO(encode(noise_image(size=(32, 32), seed=seed), "PNG"))
    file.name = "photo.png"
    started = time.monotonic()
    response = APIClient().post("/classify-image", {"image": file}, format="multipart")
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.content
    return response.json(), elapsed


def cache_status() -> str:
    return APIClient().get("/cache-stats").json()["status"]


def test_a_stopped_redis_costs_nothing_but_the_cache_and_comes_back(own_redis, tiny_model, caplog):
    assert classify(1)[0]["cached"] is False
    assert classify(1)[0]["cached"] is True

    own_redis.stop()
    for _ in range(5):
        answer, elapsed = classify(1)
        assert answer["cached"] is False and elapsed < ANSWERED_WITHIN
    assert cache_status() == "down"
    assert caplog.text.count("Cache unreachable") == 1  # once per outage, not per request

    own_redis.start()  # an empty Redis on the same port
    time.sleep(0.6)  # the breaker rests, then tries again by itself
    assert classify(2)[0]["cached"] is False
    assert classify(2)[0]["cached"] is True
    assert cache_status() == "up"


def test_a_paused_redis_does_not_hang_requests(own_redis, tiny_model):
    assert classify(3)[0]["cached"] is False
    own_redis.pause(seconds=4)
    for seed in (3, 4, 5):
        _, elapsed = classify(seed)
        assert elapsed < ANSWERED_WITHIN
    assert cache_status() == "down"
