import base64
import io
import logging
import time
from collections import Counter

import pytest
from django_redis import get_redis_connection
from rest_framework.test import APIClient

from bench.loopback import free_port
from tests.support.accounts import CACHE_KINDS, PASSWORD, bearer_client, token_pair
from tests.support.images import encode, image_bytes, noise_image
from tests.support.redis import redis_round_trips

pytestmark = pytest.mark.django_db

IMAGE = {"image_base64": base64.b64encode(image_bytes(format="PNG")).decode()}


def classify(client: APIClient, **extra: str):
    return client.post("/classify-image", IMAGE, format="json", **extra)


def assert_throttled(response) -> None:
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "throttled"
    # The wait left in the window, rounded up by the error handler (a minute, here).
    assert 1 <= int(response["Retry-After"]) <= 61


def test_anonymous_callers_from_one_address_share_one_limit(
    shared_cache, throttle_rates, tiny_model
):
    throttle_rates(classify_anon="2/minute")
    first, second = APIClient(), APIClient()

    assert classify(first).status_code == 200
    assert classify(second).status_code == 200
    assert_throttled(classify(first))
    assert_throttled(classify(second))


def test_another_address_has_its_own_anonymous_limit(shared_cache, throttle_rates, tiny_model):
    throttle_rates(classify_anon="1/minute")

    assert classify(APIClient()).status_code == 200
    assert_throttled(classify(APIClient()))
    assert classify(APIClient(), REMOTE_ADDR="192.0.2.7").status_code == 200


def test_a_user_is_limited_across_clients_and_apart_from_anonymous_callers(
    shared_cache, throttle_rates, tiny_model, alice, bob
):
    throttle_rates(classify_anon="1/minute", classify_user="3/minute")
    anonymous = APIClient()
    assert classify(anonymous).status_code == 200
    assert_throttled(classify(anonymous))

    alice_access = token_pair(alice)["access"]
    first, second = bearer_client(alice_access), bearer_client(alice_access)
    assert [classify(client).status_code for client in (first, second, first)] == [200] * 3
    assert_throttled(classify(second))

    assert classify(bearer_client(token_pair(bob)["access"])).status_code == 200


def test_a_signed_in_session_counts_as_its_user(shared_cache, throttle_rates, tiny_model, alice):
    throttle_rates(classify_user="1/minute")
    browser = APIClient()
    browser.force_login(alice)

    assert classify(bearer_client(token_pair(alice)["access"])).status_code == 200
    assert_throttled(classify(browser))


def test_a_forged_x_forwarded_for_does_not_escape_the_limit(
    shared_cache, throttle_rates, tiny_model
):
    throttle_rates(classify_anon="1/minute")  # NUM_PROXIES stays at its default, 0

    assert classify(APIClient(), HTTP_X_FORWARDED_FOR="198.51.100.1").status_code == 200
    assert_throttled(classify(APIClient(), HTTP_X_FORWARDED_FOR="198.51.100.2"))
    assert_throttled(classify(APIClient()))


def test_behind_one_proxy_only_the_address_it_appended_counts(
    shared_cache, throttle_rates, tiny_model
):
    throttle_rates(classify_anon="1/minute", num_proxies=1)
    proxy = {"REMOTE_ADDR": "10.0.0.2"}

    # The client forges the first entry; the proxy appends the address it saw.
    forged = "198.51.100.1, 203.0.113.9"
    assert classify(APIClient(), HTTP_X_FORWARDED_FOR=forged, **proxy).status_code == 200
    forged_again = "198.51.100.2, 203.0.113.9"
    assert_throttled(classify(APIClient(), HTTP_X_FORWARDED_FOR=forged_again, **proxy))
    other_client = "203.0.113.10"
    assert classify(APIClient(), HTTP_X_FORWARDED_FOR=other_client, **proxy).status_code == 200


def test_a_throttled_request_is_logged(shared_cache, throttle_rates, tiny_model, caplog):
    throttle_rates(classify_anon="1/minute")
    classify(APIClient())

    with caplog.at_level(logging.WARNING, logger="accounts.throttling"):
        assert_throttled(classify(APIClient()))

    [record] = [r for r in caplog.records if r.name == "accounts.throttling"]
    assert "Throttled POST /classify-image" in record.getMessage()
    assert "127.0.0.1" in record.getMessage()


@pytest.mark.parametrize(
    "bad_request",
    [
        {"image_base64": "not base64!"},  # refused by the serializer
        {**IMAGE, "model": "no-such-model"},  # refused by the service, before any lookup
        {},  # no image at all
    ],
    ids=["bad-base64", "unknown-model", "no-image"],
)
def test_bad_requests_count_and_a_throttled_caller_gets_429_whatever_it_sends(
    shared_cache, throttle_rates, tiny_model, bad_request
):
    throttle_rates(classify_anon="2/minute")
    client = APIClient()
    statuses = [client.post("/classify-image", bad_request, format="json").status_code]
    statuses.append(classify(client).status_code)  # the last one of the burst
    assert statuses == [400, 200]
    assert_throttled(client.post("/classify-image", bad_request, format="json"))
    assert_throttled(classify(client))


def test_a_throttled_cache_hit_is_refused_before_its_lookup_counts(
    shared_cache, throttle_rates, tiny_model
):
    from classification.selectors import result_cache_stats

    throttle_rates(classify_anon="2/minute")
    client = APIClient()
    assert classify(client).status_code == 200  # computed
    assert classify(client).json()["cached"] is True  # a hit
    looked_up = result_cache_stats()["by_kind"]["image"]

    assert_throttled(classify(client))

    stats = result_cache_stats()["by_kind"]["image"]
    assert (stats["hits"], stats["misses"]) == (looked_up["hits"], looked_up["misses"])


def test_a_throttled_upload_is_refused_before_its_body_is_read(
    shared_cache, throttle_rates, tiny_model, settings
):
    from reporting.models import RequestLog

    throttle_rates(classify_anon="1/minute")
    settings.DEFERRED_THROTTLING_MAX_BODY = 1024
    client = APIClient()
    photo = encode(noise_image(size=(64, 64)))
    assert len(photo) > 1024
    assert client.post("/classify-image", {"image": io.BytesIO(photo)}).status_code == 200

    upload = {"image": io.BytesIO(photo)}
    assert_throttled(client.post("/classify-image", upload, format="multipart"))
    # A URL request is parsed first (its limit rides with the cache lookup); an upload is not.
    assert_throttled(APIClient().post("/classify-image", {"image_url": "http://x.test/a.jpg"}))

    refused = RequestLog.objects.filter(status_code=429).order_by("id")
    assert [row.input_kind for row in refused] == ["", "url"]


def test_other_endpoints_are_not_throttled(shared_cache, throttle_rates, tiny_model, alice):
    throttle_rates(classify_anon="1/minute", classify_user="1/minute")
    client = bearer_client(token_pair(alice)["access"])

    assert [APIClient().get("/models").status_code for _ in range(3)] == [200] * 3
    assert [client.get("/secret").status_code for _ in range(3)] == [200] * 3


def test_password_guessing_on_the_token_endpoint_is_throttled(shared_cache, throttle_rates, alice):
    throttle_rates(token_obtain="2/minute")
    wrong = {"username": "alice", "password": "guess"}

    assert APIClient().post("/api/token/", wrong, format="json").status_code == 401
    assert APIClient().post("/api/token/", wrong, format="json").status_code == 401
    right = {"username": "alice", "password": PASSWORD}
    assert_throttled(APIClient().post("/api/token/", right, format="json"))


def test_with_redis_down_requests_are_served_unthrottled_and_it_is_logged_once(
    settings, throttle_rates, tiny_model, caplog, monkeypatch
):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
            "OPTIONS": {
                "SERIALIZER": "django_redis.serializers.json.JSONSerializer",
                "SOCKET_CONNECT_TIMEOUT": 0.25,
                "SOCKET_TIMEOUT": 0.25,
            },
        }
    }
    throttle_rates(classify_anon="1/minute")

    with caplog.at_level(logging.WARNING, logger="core.cache_breaker"):
        statuses = [classify(APIClient()).status_code for _ in range(3)]

    assert statuses == [200, 200, 200]
    warnings = [r for r in caplog.records if r.name == "core.cache_breaker"]
    assert len(warnings) == 1
    assert "Cache unreachable" in warnings[0].getMessage()


if "redis" in CACHE_KINDS:  # wherever Redis is configured, and always in CI

    @pytest.mark.parametrize("shared_cache", ["redis"], indirect=True)
    def test_counters_live_in_redis_as_json_under_the_cache_prefix(
        shared_cache, throttle_rates, tiny_model, settings
    ):
        throttle_rates(classify_anon="5/minute")
        classify(APIClient())
        classify(APIClient())

        prefix = settings.CACHES["default"]["KEY_PREFIX"]
        redis = get_redis_connection("default")
        key = f"{prefix}:1:throttle_classify_anon_127.0.0.1"
        # One number, the theoretical arrival time in ms: two requests at a 5/minute rate put
        # it two emission intervals (12 s each) past the first request, at most a minute ahead.
        arrival = float(redis.get(key))
        assert 0 < arrival / 1000 - time.time() <= 2 * 12
        assert 0 < redis.pttl(key) <= 60_000

    @pytest.mark.parametrize("shared_cache", ["redis"], indirect=True)
    def test_with_redis_a_cache_hit_takes_the_limit_and_its_answer_in_one_script_call(
        shared_cache, throttle_rates, tiny_model, settings
    ):
        # One atomic script: a read and a separate write of the limit would let two workers
        # both take the last request, and every call more is a round trip per request.
        throttle_rates(classify_anon="5/minute")
        redis = get_redis_connection("default")
        classify(APIClient())  # computes the answer and loads the scripts into Redis

        # Counted at this process's connection: Redis' commandstats would count other clients.
        with redis_round_trips() as trips:
            response = classify(APIClient())
        calls = Counter(command for trip in trips for command in trip)

        assert response.status_code == 200 and response.json()["cached"] is True
        assert len(trips) == 1 and calls["EVALSHA"] == 1
        assert calls["EVAL"] == 0  # never the script's whole text
        prefix = settings.CACHES["default"]["KEY_PREFIX"]
        # Both requests took the limit: two emission intervals (12 s each) ahead of now.
        arrival = float(redis.get(f"{prefix}:1:throttle_classify_anon_127.0.0.1"))
        assert 12 < arrival / 1000 - time.time() <= 2 * 12
