"""Admit, then read: Redis round trips per request, counted at the connection of this process.

A cache hit takes its rate limit, reads its entry and counts the hit in one script: one round
trip. An uncached upload adds the single-flight lock and the entry stored with the lock released.
"""

import base64
import io

import pytest
from rest_framework.test import APIClient

from bench.loopback import serve_files
from tests.support.images import encode, noise_image
from tests.support.redis import redis_cache_settings, redis_round_trips, shared_redis_url

pytestmark = pytest.mark.django_db

# Bodies up to this size (URL and base64 requests here) take their rate limit with the lookup.
DEFERRED_MAX_BODY = 16 * 1024


@pytest.fixture
def redis(settings, tiny_model):
    settings.CACHES = redis_cache_settings(shared_redis_url())
    settings.IMAGE_FETCH_PRIVATE_ALLOWLIST = ["127.0.0.0/8"]
    settings.DEFERRED_THROTTLING_MAX_BODY = DEFERRED_MAX_BODY
    # Every request is rate limited (conftest's high rate), so each takes its limit too.
    assert settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["classify_anon"]


def small_png(seed: int) -> bytes:
    data = encode(noise_image(size=(32, 32), seed=seed), "PNG")
    assert len(data) * 4 // 3 < DEFERRED_MAX_BODY
    return data


def large_png(seed: int) -> bytes:
    data = encode(noise_image(size=(96, 96), seed=seed), "PNG")
    assert len(data) > DEFERRED_MAX_BODY
    return data


def post_url(url: str) -> dict:
    response = APIClient().post("/classify-image", {"image_url": url}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def post_base64(data: bytes) -> dict:
    body = {"image_base64": base64.b64encode(data).decode()}
    response = APIClient().post("/classify-image", body, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def post_upload(data: bytes) -> dict:
    file = io.BytesIO(data)
    file.name = "photo.png"
    response = APIClient().post("/classify-image", {"image": file}, format="multipart")
    assert response.status_code == 200, response.content
    return response.json()


def test_a_url_hit_is_one_round_trip(redis):
    with serve_files({"/a.png": small_png(1)}) as server:
        assert post_url(f"{server.url}/a.png")["cached"] is False  # and the scripts are loaded
        with redis_round_trips() as trips:
            answer = post_url(f"{server.url}/a.png")
    assert answer["cached"] is True
    assert trips == [["EVALSHA"]]  # the rate limit, the GET and the hit counter: one script


def test_a_content_hit_sent_as_base64_is_one_round_trip(redis):
    data = small_png(2)
    assert post_base64(data)["cached"] is False
    with redis_round_trips() as trips:
        answer = post_base64(data)
    assert answer["cached"] is True
    assert trips == [["EVALSHA"]]


def test_an_uncached_upload_is_four_round_trips(redis):
    post_upload(large_png(3))  # the scripts are loaded
    with redis_round_trips() as trips:
        answer = post_upload(large_png(4))
    assert answer["cached"] is False
    # Its rate limit before its body is read; the lookup and its miss counted; the
    # single-flight lock; the entry stored and the lock released.
    assert trips == [["EVALSHA"], ["EVALSHA"], ["SET"], ["EVALSHA"]]


def test_an_uncached_small_body_takes_its_rate_limit_with_the_lookup(redis):
    post_base64(small_png(5))
    with redis_round_trips() as trips:
        answer = post_base64(small_png(6))
    assert answer["cached"] is False
    assert trips == [["EVALSHA"], ["SET"], ["EVALSHA"]]
