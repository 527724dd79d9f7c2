"""The throttling policy: who may call how often, counted in the shared cache.

POST /classify-image is limited per client address for anonymous callers and per user for
signed-in callers; POST /api/token/ per client address, against password guessing. Counters
live in the default cache (Redis when REDIS_URL is set), so the limits hold across workers.

Client address: DRF's ``NUM_PROXIES`` setting. With 0 (the default) X-Forwarded-For is ignored
and the connecting address counts; with N, the address the N-th trusted proxy appended counts,
so a client cannot escape its limit by sending its own X-Forwarded-For.

When the cache cannot be reached the throttles fail open: the request is served unthrottled, and
the shared cache breaker (classifier_site/cache_breaker.py) skips the cache for a few seconds,
logging the fault once per opening. Refusing every request because
the counter store is down would turn a cache outage into a full outage.
"""

import logging

from django.core.exceptions import ImproperlyConfigured
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from classifier_site.cache_breaker import cache_breaker

logger = logging.getLogger(__name__)

_CACHE_ERRORS = (RedisError, ConnectionInterrupted, OSError)


class _SharedCacheRateThrottle(SimpleRateThrottle):
    """A rate throttle that reads its rate at request time and fails open without its cache."""

    def get_rate(self) -> str | None:
        # DRF's own reads a class attribute frozen at import; this follows settings changes.
        rates = api_settings.DEFAULT_THROTTLE_RATES
        if self.scope not in rates:
            raise ImproperlyConfigured(f"No throttle rate set for scope {self.scope!r}.")
        # A rate is "<count>/<period>" or None (unthrottled); the stubs say a number.
        return rates[self.scope]  # type: ignore[return-value]

    def allow_request(self, request: Request, view: APIView) -> bool:
        if not cache_breaker.available():
            return True  # the cache is resting after a fault: serve unthrottled
        try:
            allowed = super().allow_request(request, view)
        except _CACHE_ERRORS as exc:
            cache_breaker.record_fault(exc, what="throttling")
            return True
        cache_breaker.record_success()
        if not allowed:
            logger.warning(
                "Throttled %s %s for %s (scope %s, rate %s).",
                request.method,
                request.path,
                self.key,
                self.scope,
                self.rate,
            )
        return allowed


class ClassifyAnonThrottle(_SharedCacheRateThrottle):
    """Anonymous callers of POST /classify-image, by client address."""

    scope = "classify_anon"

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        if request.user and request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class ClassifyUserThrottle(_SharedCacheRateThrottle):
    """Signed-in callers of POST /classify-image (JWT or session), by user."""

    scope = "classify_user"

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        if not (request.user and request.user.is_authenticated):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}


class TokenObtainThrottle(_SharedCacheRateThrottle):
    """POST /api/token/, by client address: slows password guessing."""

    scope = "token_obtain"

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


CLASSIFY_THROTTLES = (ClassifyAnonThrottle, ClassifyUserThrottle)
