import copy
import uuid
from collections.abc import Callable, Iterator

import pytest
from django.core.cache import cache

from tests.support.accounts import CACHE_KINDS, PASSWORD, REDIS_URL


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user(username="alice", password=PASSWORD)


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user(username="bob", password=PASSWORD)


@pytest.fixture
def throttle_rates(settings) -> Callable[..., None]:
    """Set throttle rates (by scope) and other DRF settings for one test."""

    def set_rates(*, num_proxies: int | None = None, **rates: str) -> None:
        current = settings.REST_FRAMEWORK
        rest_framework = {
            **current,
            "DEFAULT_THROTTLE_RATES": {**current["DEFAULT_THROTTLE_RATES"], **rates},
        }
        if num_proxies is not None:
            rest_framework["NUM_PROXIES"] = num_proxies
        settings.REST_FRAMEWORK = rest_framework

    return set_rates


@pytest.fixture(params=CACHE_KINDS)
def shared_cache(request, settings) -> Iterator[str]:
    """The default cache for one test: local memory, or the real Redis under a fresh prefix."""
    prefix = f"test-accounts-{uuid.uuid4().hex}"
    if request.param == "redis":
        if not REDIS_URL:
            pytest.fail("CI is set but REDIS_URL is not: the Redis variant must run in CI.")
        redis_cache = copy.deepcopy(settings.CACHES["default"])
        assert redis_cache["BACKEND"] == "django_redis.cache.RedisCache"
        redis_cache["KEY_PREFIX"] = prefix
        settings.CACHES = {"default": redis_cache}
    else:
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "LOCATION": prefix,
            }
        }
    yield request.param
    if request.param == "redis":
        cache.delete_pattern("*")  # this test's prefix only
    else:
        cache.clear()
