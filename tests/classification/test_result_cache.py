"""The result cache: URL and content hits, TTLs, promotions, statistics and single flight.

Every test runs against local memory and against the real Redis (each with its own key prefix).
"""

import json
import threading
import time

import pytest
from django_redis import get_redis_connection
from rest_framework.test import APIClient

from bench.loopback import serve_files
from classification.cache_statistics import get_cache_statistics
from classification.caching import ResultCache
from classification.registry.services import model_version_promote
from classification.serving import engine
from tests.support.images import encode, noise_image
from tests.support.models import TINY_LABELS
from tests.support.redis import (
    cache_clock_advance,
    local_cache_settings,
    redis_cache_settings,
    shared_redis_url,
)


@pytest.fixture(params=["local-memory", "redis"])
def cache_backend(request, settings) -> str:
    if request.param == "redis":
        settings.CACHES = redis_cache_settings(shared_redis_url())
    else:
        settings.CACHES = local_cache_settings()
    settings.IMAGE_FETCH_PRIVATE_ALLOWLIST = ["127.0.0.0/8"]
    yield request.param
    if request.param == "redis":
        prefix = settings.CACHES["default"]["KEY_PREFIX"]
        connection = get_redis_connection("default")
        for key in connection.scan_iter(match=f"{prefix}:*"):
            connection.delete(key)


def unique_png(seed: int) -> bytes:
    return encode(noise_image(size=(32, 32), seed=seed), "PNG")


def classify_url(url: str, **fields) -> dict:
    response = APIClient().post("/classify-image", {"image_url": url, **fields}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def classify_upload(data: bytes, **fields) -> dict:
    import io

    file = io.BytesIO(data)
    file.name = "photo.png"
    response = APIClient().post("/classify-image", {"image": file, **fields}, format="multipart")
    assert response.status_code == 200, response.content
    return response.json()


pytestmark = pytest.mark.django_db


def test_a_url_hit_skips_the_download(cache_backend, tiny_model):
    with serve_files({"/a.png": unique_png(1)}) as server:
        first = classify_url(f"{server.url}/a.png")
        second = classify_url(f"{server.url}/a.png")
        assert server.hits["/a.png"] == 1
    assert first["cached"] is False and second["cached"] is True
    assert second["predictions"] == first["predictions"]
    assert second["processing_time"] < first["processing_time"]


def test_identical_bytes_hit_under_another_url_and_as_an_upload(cache_backend, tiny_model):
    data = unique_png(2)
    with serve_files({"/a.png": data, "/copy.png": data}) as server:
        assert classify_url(f"{server.url}/a.png")["cached"] is False
        again = classify_url(f"{server.url}/copy.png")
        assert server.hits["/copy.png"] == 1  # a new URL is downloaded, then found by content
    assert again["cached"] is True
    assert classify_upload(data)["cached"] is True


def test_the_same_upload_twice_is_answered_from_the_cache(cache_backend, tiny_model):
    data = unique_png(3)
    first, second = classify_upload(data), classify_upload(data)
    assert (first["cached"], second["cached"]) == (False, True)
    assert second["image_sha256"] == first["image_sha256"]


def test_any_top_k_is_answered_from_one_entry(cache_backend, tiny_model):
    data = unique_png(4)
    one = classify_upload(data, top_k=1)
    three = classify_upload(data, top_k=3)
    assert three["cached"] is True
    assert len(three["predictions"]) == 3
    assert three["predictions"][0] == one["predictions"][0]
    assert {p["label"] for p in three["predictions"]} == set(TINY_LABELS)


def test_entries_expire_after_their_ttl(cache_backend, tiny_model, settings):
    settings.CACHE_IMAGE_TTL = 60
    data = unique_png(5)
    assert classify_upload(data)["cached"] is False
    assert classify_upload(data)["cached"] is True
    cache_clock_advance(seconds=50)
    assert classify_upload(data)["cached"] is True  # ten seconds left
    cache_clock_advance(seconds=11)
    assert classify_upload(data)["cached"] is False


def test_a_promotion_changes_the_version_and_so_misses(
    cache_backend, tiny_model, register_model, tiny_keras_path
):
    data = unique_png(6)
    assert classify_upload(data)["model"]["version"] == 1
    second = register_model(tiny_keras_path, name="tiny", labels=TINY_LABELS, stage="staging")
    model_version_promote(model_version=second)
    engine.get_runtime().refresh_seconds = 0
    answer = classify_upload(data)
    assert (answer["cached"], answer["model"]["version"]) == (False, 2)
    assert classify_upload(data)["cached"] is True


def test_cache_stats_match_the_requests_made(cache_backend, tiny_model):
    get_cache_statistics().reset()
    data, other = unique_png(7), unique_png(8)
    with serve_files({"/a.png": data}) as server:
        classify_url(f"{server.url}/a.png")  # url miss, image miss
        classify_url(f"{server.url}/a.png")  # url hit
    classify_upload(data)  # image hit
    classify_upload(other)  # image miss

    stats = APIClient().get("/cache-stats").json()
    assert stats["backend"] == cache_backend
    assert stats["status"] == "up"
    assert stats["by_kind"]["url"] | {"ttl_seconds": 0} == {
        "hits": 1,
        "misses": 1,
        "hit_rate": 0.5,
        "entries": 1,
        "ttl_seconds": 0,
    }
    assert stats["by_kind"]["image"] == {
        "hits": 1,
        "misses": 2,
        "hit_rate": pytest.approx(1 / 3),
        "entries": 2,
        "ttl_seconds": 3600,
    }
    assert (stats["hits"], stats["misses"], stats["hit_rate"]) == (2, 3, 0.4)
    assert stats["counters_started_at"]
    expected_scope = "all workers" if cache_backend == "redis" else "this worker process only"
    assert stats["counters_scope"] == expected_scope


def test_redis_holds_json_not_pickle(settings, tiny_model):
    settings.CACHES = redis_cache_settings(shared_redis_url())
    data = unique_png(9)
    answer = classify_upload(data)
    prefix = settings.CACHES["default"]["KEY_PREFIX"]
    connection = get_redis_connection("default")
    (key,) = connection.scan_iter(match=f"{prefix}:*:result:image:tiny:1:{answer['image_sha256']}")
    entry = json.loads(connection.get(key))
    assert entry["predictions"][0] == [answer["classification"], answer["confidence"]]
    connection.delete(key)


class CountingInvoke:
    """Counts LiteRT invocations, slowed so that concurrent requests overlap."""

    def __init__(self, monkeypatch) -> None:
        self.calls = 0
        self._lock = threading.Lock()
        real = engine.LiteRTClassifier.invoke

        def invoke(classifier, batch):
            with self._lock:
                self.calls += 1
            time.sleep(0.3)
            return real(classifier, batch)

        monkeypatch.setattr(engine.LiteRTClassifier, "invoke", invoke)


@pytest.mark.django_db(transaction=True)
def test_eight_concurrent_identical_requests_cause_one_inference(
    cache_backend, tiny_model, monkeypatch
):
    engine.get_runtime().serving_model("tiny")  # loaded (and warmed up) before counting
    counter = CountingInvoke(monkeypatch)
    data = unique_png(10)
    start = threading.Barrier(8)
    answers: list[dict] = []

    def request() -> None:
        start.wait()
        answers.append(classify_upload(data))

    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.calls == 1
    assert len(answers) == 8
    assert sum(not answer["cached"] for answer in answers) == 1
    assert len({json.dumps(answer["predictions"]) for answer in answers}) == 1


def test_single_flight_holds_across_workers_through_a_redis_lock(settings):
    """Two ResultCache objects stand for two worker processes sharing one Redis."""
    settings.CACHES = redis_cache_settings(shared_redis_url())
    workers = [ResultCache(), ResultCache()]
    key = ResultCache.key(kind="image", model_name="m", model_version=1, identity="ab" * 32)
    computed = []
    start = threading.Barrier(8)

    def compute() -> dict:
        computed.append(1)
        time.sleep(0.3)
        return {"predictions": [["x", 1.0]]}

    results = []

    def request(index: int) -> None:
        cache = workers[index % 2]
        start.wait()
        results.append(cache.single_flight(key, compute, kind="image"))

    threads = [threading.Thread(target=request, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(computed) == 1
    assert [entry for entry, _ in results] == [{"predictions": [["x", 1.0]]}] * 8
    # The computing worker stored the entry with its TTL and released its lock in one call.
    cache = workers[0].cache
    assert cache.get(key) == {"predictions": [["x", 1.0]]}
    assert 0 < cache.ttl(key) <= settings.CACHE_IMAGE_TTL
    assert cache.get(f"{key}:lock") is None
    cache.delete(key)


def test_a_lock_taken_over_by_another_worker_is_not_released_by_the_first(settings):
    """A worker whose lock expired while it computed must not delete the next worker's lock."""
    settings.CACHES = redis_cache_settings(shared_redis_url())
    cache = ResultCache()
    key = ResultCache.key(kind="image", model_name="m", model_version=1, identity="cd" * 32)

    def compute_while_the_lock_changes_hands() -> dict:
        cache.cache.set(f"{key}:lock", "another worker's token", timeout=30)
        return {"predictions": [["y", 1.0]]}

    entry, computed = cache.single_flight(key, compute_while_the_lock_changes_hands, kind="image")

    assert computed and entry == {"predictions": [["y", 1.0]]}
    assert cache.cache.get(key) == entry
    assert cache.cache.get(f"{key}:lock") == "another worker's token"
    cache.cache.delete_many([key, f"{key}:lock"])
