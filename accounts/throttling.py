"""The throttling policy: who may call how often, counted in the shared cache.

POST /classify-image is limited per client address for anonymous callers and per user for
signed-in callers; POST /api/token/ per client address, against password guessing. A rate
"N/period" allows a burst of N, then one request per period / N (GCRA, the generic cell rate
algorithm). Its state, one number per caller, lives in the default cache (Redis when REDIS_URL
is set), so the limits hold across workers.

Client address: DRF's ``NUM_PROXIES`` setting. With 0 (the default) X-Forwarded-For is ignored
and the connecting address counts; with N, the address the N-th trusted proxy appended counts,
so a client cannot escape its limit by sending its own X-Forwarded-For.

When the cache cannot be reached the throttles fail open: the request is served unthrottled, and
the shared cache breaker (classifier_site/cache_breaker.py) skips the cache for a few seconds,
logging the fault once per opening. Refusing every request because
the counter store is down would turn a cache outage into a full outage.
"""

import logging
import threading

from django.core.cache.backends.base import BaseCache
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle
from rest_framework.views import APIView

from classifier_site.cache_breaker import cache_breaker
from classifier_site.redis_scripts import cache_backend, is_redis, redis_script_run

logger = logging.getLogger(__name__)

_CACHE_ERRORS = (RedisError, ConnectionInterrupted, OSError)


# GCRA in one atomic Redis call: the key holds the theoretical arrival time (TAT) of the next
# request, in milliseconds; a request is allowed while it arrives no more than `duration`
# ahead of it. Returns 0 when allowed, else the milliseconds until one more would be.
_GCRA_SCRIPT = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > period then
  return new_tat - period - now
end
redis.call('SET', KEYS[1], new_tat, 'PX', period)
return 0
"""

_local_lock = threading.Lock()


def gcra_acquire(*, cache: BaseCache, key: str, limit: int, duration: int, now: float) -> float:
    """Take one request of ``limit`` per ``duration`` seconds for ``key`` (GCRA).

    Returns 0.0 when the request is allowed, else the seconds until one more would be. The
    state is one number per key, read and written in one round trip (a Lua script on Redis;
    under a lock in local memory), so a client's traffic costs the same however much it sends
    (DRF's own throttle keeps a growing list of timestamps, rewritten on every request).
    A burst of ``limit`` is allowed, then one request per ``duration / limit`` seconds.
    """
    now_ms, interval_ms, period_ms = int(now * 1000), duration * 1000 / limit, duration * 1000
    if is_redis(cache):
        wait_ms = redis_script_run(
            cache=cache, source=_GCRA_SCRIPT, keys=[key], args=[now_ms, interval_ms, period_ms]
        )
        return max(0.0, float(wait_ms) / 1000)
    with _local_lock:
        tat = max(float(cache.get(key) or now_ms), now_ms)
        new_tat = tat + interval_ms
        if new_tat - now_ms > period_ms:
            return (new_tat - period_ms - now_ms) / 1000
        cache.set(key, new_tat, timeout=duration)
        return 0.0


class _SharedCacheRateThrottle(SimpleRateThrottle):
    """A GCRA rate limit, O(1) per request, shared by every worker through the cache.

    It reads its rate at request time and fails open without its cache.
    """

    @property
    def cache(self) -> BaseCache:  # type: ignore[override]
        # The backend, not DRF's default (django.core.cache.cache, a proxy): through the proxy
        # Redis would not be recognised, and the limit would be read and written in two calls.
        return cache_backend()

    def get_rate(self) -> str | None:
        # DRF's own reads a class attribute frozen at import; this follows settings changes.
        rates = api_settings.DEFAULT_THROTTLE_RATES
        if self.scope not in rates:
            raise ImproperlyConfigured(f"No throttle rate set for scope {self.scope!r}.")
        # A rate is "<count>/<period>" or None (unthrottled); the stubs say a number.
        return rates[self.scope]  # type: ignore[return-value]

    def allow_request(self, request: Request, view: APIView) -> bool:
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        if self.num_requests is None or self.duration is None:
            return True  # unthrottled
        self.key = self.get_cache_key(request, view)
        if self.key is None or not cache_breaker.available():
            return True  # not this throttle's caller, or the cache is resting after a fault
        try:
            self._retry_after = gcra_acquire(
                cache=self.cache,
                key=self.key,
                limit=self.num_requests,
                duration=self.duration,
                now=self.timer(),
            )
        except _CACHE_ERRORS as exc:
            cache_breaker.record_fault(exc, what="throttling")
            return True
        cache_breaker.record_success()
        if self._retry_after:
            logger.warning(
                "Throttled %s %s for %s (scope %s, rate %s).",
                request.method,
                request.path,
                self.key,
                self.scope,
                self.rate,
            )
            return False
        return True

    def wait(self) -> float | None:
        return getattr(self, "_retry_after", None)


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


def client_address(request: HttpRequest) -> str:
    """The client address the limits count (NUM_PROXIES decides whether X-Forwarded-For is
    trusted); also how the admin login's lock-out names a client."""
    return BaseThrottle().get_ident(request)  # type: ignore[arg-type]
