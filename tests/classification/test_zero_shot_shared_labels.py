"""Zero-shot label embeddings are shared by the workers through Redis, and a cache outage only
means computing them."""

import base64
import hashlib
import logging

import numpy as np
import pytest
from django.core.cache import caches
from django_redis import get_redis_connection

from bench.loopback import free_port
from classification.registry.sources.tiny_clip import square_image
from classification.serving.engine import serving_model_load
from classification.serving.imaging import image_preprocess
from core.cache_breaker import cache_breaker
from tests.support.images import encode
from tests.support.redis import local_cache_settings, redis_cache_settings, shared_redis_url

pytestmark = pytest.mark.django_db

LABELS = ["red square", "a cat", "a bicycle on a hill"]


@pytest.fixture
def shared_redis(settings):
    """The machine's Redis as the cache, under a key prefix of this test's own."""
    settings.CACHES = redis_cache_settings(shared_redis_url())
    prefix = settings.CACHES["default"]["KEY_PREFIX"]
    yield get_redis_connection("default")
    connection = get_redis_connection("default")
    for key in connection.scan_iter(match=f"{prefix}:*"):
        connection.delete(key)


def worker(model_version):
    """A servable loaded as a new worker process loads it: nothing remembered yet."""
    return serving_model_load(model_version).servable


def red_batch(model_version) -> np.ndarray:
    return image_preprocess(
        image=square_image("red", seed=11),
        input_size=model_version.input_size,
        preprocessing=model_version.preprocessing,
    )


def label_keys(connection) -> list[bytes]:
    return sorted(connection.scan_iter(match="*zero-shot-label:*"))


def test_a_second_worker_reuses_the_label_embeddings_the_first_encoded(
    shared_redis, zero_shot_model
):
    first, second = worker(zero_shot_model), worker(zero_shot_model)
    encoded = first.label_embeddings_for(LABELS)
    assert first.text_encoder_invocations == len(LABELS)
    assert len(label_keys(shared_redis)) == len(LABELS)

    reused = second.label_embeddings_for(list(reversed(LABELS)))
    assert second.text_encoder_invocations == 0
    np.testing.assert_array_equal(reused, encoded[::-1])  # float32 bytes, exactly
    # A label new to both: the second worker encodes it once, and the first then reuses it.
    second.label_embeddings_for([*LABELS, "a dog"])
    assert second.text_encoder_invocations == 1
    first.label_embeddings_for(["a dog"])
    assert first.text_encoder_invocations == len(LABELS)


def test_shared_entries_are_json_with_the_float32_bytes_and_keyed_by_version_and_prompt(
    shared_redis, zero_shot_model
):
    embedding = worker(zero_shot_model).label_embeddings_for(["a cat"])[0]
    [key] = label_keys(shared_redis)
    assert key.decode().endswith(
        f":zero-shot-label:{zero_shot_model.pk}:{zero_shot_model.artifact_sha256}:"
        + hashlib.sha256(b"a photo of a a cat").hexdigest()
    )
    raw = shared_redis.get(key)
    assert raw.startswith(b'{"float32": "')  # django-redis' JSON serializer, not pickle
    value = caches["default"].get(key.decode().split(":", 2)[2])
    stored = np.frombuffer(base64.b64decode(value["float32"]), dtype="<f4")
    np.testing.assert_array_equal(stored, embedding)
    assert 0 < shared_redis.ttl(key) <= 86400


def test_a_malformed_shared_entry_is_computed_again_and_replaced(shared_redis, zero_shot_model):
    reference = worker(zero_shot_model).label_embeddings_for(["a cat"])[0]
    [key] = label_keys(shared_redis)
    cache_key = key.decode().split(":", 2)[2]
    for bad in [{"float32": "not base64!"}, {"float32": base64.b64encode(b"abc").decode()}, [1]]:
        caches["default"].set(cache_key, bad)
        servable = worker(zero_shot_model)
        np.testing.assert_allclose(servable.label_embeddings_for(["a cat"])[0], reference)
        assert servable.text_encoder_invocations == 1
        assert isinstance(caches["default"].get(cache_key), dict)
        assert caches["default"].get(cache_key)["float32"] != bad


def test_with_the_cache_failing_answers_still_come(settings, zero_shot_model, caplog):
    settings.CACHES = redis_cache_settings(f"redis://127.0.0.1:{free_port()}/0")  # no server
    settings.CACHE_BREAKER_SECONDS = 60
    first, second = worker(zero_shot_model), worker(zero_shot_model)
    batch = red_batch(zero_shot_model)
    with caplog.at_level(logging.WARNING, logger="core.cache_breaker"):
        scores = first.run_labels(batch, labels=LABELS)
        again = second.run_labels(batch, labels=LABELS)
    assert LABELS[int(np.argmax(scores))] == "red square"
    np.testing.assert_allclose(again, scores, atol=1e-6)
    # Each worker computed its labels itself; the outage was logged once and the breaker
    # keeps the dead cache out of the way for the next requests.
    assert first.text_encoder_invocations == second.text_encoder_invocations == len(LABELS)
    assert caplog.text.count("Cache unreachable") == 1
    assert not cache_breaker.available()


def test_with_the_cache_failing_a_request_with_labels_is_answered(
    settings, api_client, zero_shot_model
):
    settings.CACHES = redis_cache_settings(f"redis://127.0.0.1:{free_port()}/0")  # no server
    body = {
        "image_base64": base64.b64encode(encode(square_image("red", seed=12), "PNG")).decode(),
        "labels": LABELS,
    }
    response = api_client.post("/classify-image", body, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["classification"] == "red square"


def test_with_local_memory_labels_stay_in_the_workers_memory(settings, zero_shot_model):
    settings.CACHES = local_cache_settings()
    servable = worker(zero_shot_model)
    servable.label_embeddings_for(LABELS)
    servable.label_embeddings_for(LABELS)
    assert servable.text_encoder_invocations == len(LABELS)
    # The local-memory cache is the worker's own and holds the answers: no copy of labels there.
    assert not [key for key in caches["default"]._cache if "zero-shot-label" in key]
