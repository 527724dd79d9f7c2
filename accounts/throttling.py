"""The throttling policy: who may call how often, counted in the shared cache.

POST /classify-image is limited per client address for anonymous callers and per user for
signed-in callers. Against password guessing, POST /api/token/ limits failed logins per client
address and per user name (FailedLoginThrottlingMixin): each attempt takes its place before the
password is checked, so parallel guesses cannot slip in uncounted, and gives it back unless it
failed. A rate
"N/period" allows a burst of N, then one request per period / N (GCRA, the generic cell rate
algorithm). Its state, one number per caller, lives in the default cache (Redis when REDIS_URL
is set), so the limits hold across workers.

Client address: DRF's ``NUM_PROXIES`` setting. With 0 (the default) X-Forwarded-For is ignored
and the connecting address counts; with N, the address the N-th trusted proxy appended counts,
so a client cannot escape its limit by sending its own X-Forwarded-For.

POST /classify-image with a small body (an image_url) takes its limit in the same Redis call as
its result-cache lookup (DeferredThrottlingMixin, Admission), so a cache hit is one round trip;
uploads are limited before their body is read, as DRF does.

When the cache cannot be reached the throttles fail open: the request is served unthrottled, and
the shared cache breaker (core/cache_breaker.py) skips the cache for a few seconds,
logging the fault once per opening. Refusing every request because
the counter store is down would turn a cache outage into a full outage.
"""

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache.backends.base import BaseCache
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError
from rest_framework.exceptions import Throttled
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle
from rest_framework.views import APIView

from core.cache_breaker import cache_breaker
from core.redis_scripts import cache_backend, is_redis, redis_script_run

logger = logging.getLogger(__name__)

_CACHE_ERRORS = (RedisError, ConnectionInterrupted, OSError)


# GCRA as a Lua function, so that other scripts can take a limit in their own round trip (the
# result cache's lookup does). The key holds the theoretical arrival time (TAT) of the next
# request, in milliseconds; a request is allowed while it arrives no more than `period` ahead of
# it. Returns 0 when allowed, else the whole milliseconds (at least 1) until one more would be.
GCRA_LUA = """
local function gcra(key, now, interval, period)
  now, interval, period = tonumber(now), tonumber(interval), tonumber(period)
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  if new_tat - now > period then
    return math.max(1, math.ceil(new_tat - period - now))
  end
  redis.call('SET', key, new_tat, 'PX', period)
  return 0
end
"""
_GCRA_SCRIPT = GCRA_LUA + "return gcra(KEYS[1], ARGV[1], ARGV[2], ARGV[3])"

# Gives one taken request back: the TAT moves one interval earlier (the key goes once the TAT
# is in the past, as if the request had never come).
_GCRA_GIVE_BACK_SCRIPT = """
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat then return 0 end
local new_tat = tat - tonumber(ARGV[2])
if new_tat <= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], new_tat, 'PX', ARGV[3])
end
return 1
"""

_local_lock = threading.Lock()


@dataclass(frozen=True)
class RateLimit:
    """One caller's limit: ``limit`` requests per ``duration`` seconds under a cache ``key``."""

    key: str
    limit: int
    duration: int
    scope: str
    rate: str

    def gcra_args(self, now: float) -> list[float]:
        """ARGV of ``gcra()``: now, emission interval and period, in milliseconds."""
        return [int(now * 1000), self.duration * 1000 / self.limit, self.duration * 1000]


def gcra_acquire(*, cache: BaseCache, rate_limit: RateLimit, now: float) -> float:
    """Take one request of ``rate_limit`` (GCRA) at ``now`` (seconds since the epoch).

    Returns 0.0 when the request is allowed, else the seconds until one more would be. The
    state is one number per key, read and written in one round trip (a Lua script on Redis;
    under a lock in local memory), so a client's traffic costs the same however much it sends
    (DRF's own throttle keeps a growing list of timestamps, rewritten on every request).
    A burst of ``limit`` is allowed, then one request per ``duration / limit`` seconds.
    """
    key, duration = rate_limit.key, rate_limit.duration
    now_ms, interval_ms, period_ms = rate_limit.gcra_args(now)
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


def gcra_give_back(*, cache: BaseCache, rate_limit: RateLimit, now: float) -> None:
    """Undo one request that ``gcra_acquire`` allowed under ``rate_limit``."""
    key = rate_limit.key
    now_ms, interval_ms, period_ms = rate_limit.gcra_args(now)
    if is_redis(cache):
        redis_script_run(
            cache=cache,
            source=_GCRA_GIVE_BACK_SCRIPT,
            keys=[key],
            args=[now_ms, interval_ms, period_ms],
        )
        return
    with _local_lock:
        tat = cache.get(key)
        if tat is None:
            return
        new_tat = float(tat) - interval_ms
        if new_tat <= now_ms:
            cache.delete(key)
        else:
            cache.set(key, new_tat, timeout=rate_limit.duration)


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

    def rate_limit(self, request: Request, view: APIView) -> RateLimit | None:
        """This throttle's limit for the caller, or None (unthrottled, or not its caller)."""
        rate = self.get_rate()
        limit, duration = self.parse_rate(rate)
        if limit is None or duration is None or rate is None:
            return None
        key = self.get_cache_key(request, view)
        if key is None:
            return None
        scope = self.scope or type(self).__name__
        return RateLimit(key=key, limit=limit, duration=duration, scope=scope, rate=rate)

    def allow_request(self, request: Request, view: APIView) -> bool:
        rate_limit = self.rate_limit(request, view)
        if rate_limit is None:
            return True
        self._retry_after = Admission(request=request, rate_limit=rate_limit).take()
        if not self._retry_after:
            self.taken(request, rate_limit)
        return not self._retry_after

    def taken(self, request: Request, rate_limit: RateLimit) -> None:
        """Called when this request took its place under ``rate_limit``."""

    def wait(self) -> float | None:
        return getattr(self, "_retry_after", None)


class Admission:
    """A request's rate limit, taken exactly once.

    ``take`` takes it on its own; a script that also does other work (the result cache's
    lookup) takes ``pending`` with ``GCRA_LUA`` and reports with ``taken_with``, so that a cache
    hit costs one Redis round trip, not two. Either way it fails open while the cache is
    unavailable, and a refusal is logged.
    """

    def __init__(self, *, request: Request, rate_limit: RateLimit | None) -> None:
        self.request = request
        self.rate_limit = rate_limit
        self.taken = rate_limit is None

    @property
    def pending(self) -> RateLimit | None:
        """The limit while it is still to be taken, else None."""
        return None if self.taken else self.rate_limit

    def take(self) -> float:
        """Take the limit now if not taken yet: 0.0 when allowed, else the seconds to wait."""
        if self.taken:
            return 0.0
        self.taken = True
        rate_limit = self.rate_limit
        assert rate_limit is not None  # set whenever not taken
        if not cache_breaker.available():
            return 0.0  # the cache is resting after a fault: fail open
        try:
            wait = gcra_acquire(cache=cache_backend(), rate_limit=rate_limit, now=time.time())
        except _CACHE_ERRORS as exc:
            cache_breaker.record_fault(exc, what="throttling")
            return 0.0
        cache_breaker.record_success()
        return self.refused(wait) if wait else 0.0

    def taken_with(self, wait_ms: float | None) -> float:
        """Record the outcome of a script that took the limit (None: it could not run, so the
        request goes unthrottled); returns the seconds to wait, 0.0 when allowed."""
        self.taken = True
        return self.refused(float(wait_ms) / 1000) if wait_ms else 0.0

    def refused(self, wait: float) -> float:
        rate_limit = self.rate_limit
        assert rate_limit is not None
        logger.warning(
            "Throttled %s %s for %s (scope %s, rate %s).",
            self.request.method,
            self.request.path,
            rate_limit.key,
            rate_limit.scope,
            rate_limit.rate,
        )
        return wait


class DeferredThrottlingMixin:
    """Takes a small request's rate limit with its first result-cache lookup.

    A request whose body is at most DEFERRED_THROTTLING_MAX_BODY bytes (a URL request, the
    cache hits that matter) has the limit taken in the same Redis call as the lookup: the view
    passes ``self.admission`` down to the lookup, which raises Throttled when the limit is
    exceeded. An answer given before any lookup (a bad request, an unknown model) takes the
    limit on its own first, so a throttled caller gets 429 whatever it sent, as with
    throttling before the handler; so does a handler that answered without a lookup. A larger
    body (an upload), one of unknown length, and throttles other than these GCRA ones are
    checked before the handler, as DRF does, so that a throttled upload is refused unread.
    """

    admission: Admission | None = None

    def check_throttles(self, request: Request) -> None:
        length = request.META.get("CONTENT_LENGTH") or ""
        deferrable = length.isdigit() and int(length) <= settings.DEFERRED_THROTTLING_MAX_BODY
        limits = []
        for throttle in self.get_throttles():  # type: ignore[attr-defined]
            rate_limit_of = getattr(throttle, "rate_limit", None)
            if rate_limit_of is None:  # not one of ours: DRF's way
                if not throttle.allow_request(request, self):
                    raise Throttled(throttle.wait())
            elif (rate_limit := rate_limit_of(request, self)) is not None:
                limits.append(rate_limit)
        # At most one limit rides along with the lookup; any other is taken now.
        deferred = limits.pop() if limits and deferrable else None
        for rate_limit in limits:
            if wait := Admission(request=request, rate_limit=rate_limit).take():
                raise Throttled(wait)
        self.admission = Admission(request=request, rate_limit=deferred)

    def handle_exception(self, exc: Exception) -> Response:
        admission = self.admission
        if admission is not None and not isinstance(exc, Throttled) and (wait := admission.take()):
            exc = Throttled(wait)
        return super().handle_exception(exc)  # type: ignore[misc]

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        if self.admission is not None:
            self.admission.take()  # counted, though it is too late to refuse
        return super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]


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


class FeedbackAnonThrottle(ClassifyAnonThrottle):
    """Anonymous callers of POST and DELETE /feedback, by client address."""

    scope = "feedback_anon"


class FeedbackUserThrottle(ClassifyUserThrottle):
    """Signed-in callers of POST and DELETE /feedback, by user."""

    scope = "feedback_user"


# Where a request keeps the failed-login limits it took, to give them back after the answer.
_FAILED_LOGIN_LIMITS = "failed_login_limits"


class _FailedLoginThrottle(_SharedCacheRateThrottle):
    """A limit on failed logins: taken before the password is checked, given back by
    FailedLoginThrottlingMixin when the answer is not a failure (401)."""

    def taken(self, request: Request, rate_limit: RateLimit) -> None:
        request.__dict__.setdefault(_FAILED_LOGIN_LIMITS, []).append(rate_limit)


class TokenObtainThrottle(_FailedLoginThrottle):
    """Failed POST /api/token/ logins, by client address: slows guessing many names."""

    scope = "token_obtain"

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class TokenObtainUserThrottle(_FailedLoginThrottle):
    """Failed POST /api/token/ logins, by user name (from any address): slows guessing one
    account's password. A body without a usable name is left to the view's validation."""

    scope = "token_obtain_user"
    # The longest user name the token endpoint accepts (the user table's); a longer one is
    # refused (400) by the view and takes no limit.
    max_name_length = 150

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        name = request.data.get("username") if hasattr(request.data, "get") else None
        if not isinstance(name, str) or not name.strip() or len(name) > self.max_name_length:
            return None
        digest = hashlib.sha256(name.strip().encode("utf-8", "surrogatepass")).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": digest}


class FailedLoginThrottlingMixin:
    """Gives back the failed-login limits a request took when its answer is not a failure
    (401): only wrong credentials count, and a throttled request (429) costs nothing."""

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        taken = request.__dict__.pop(_FAILED_LOGIN_LIMITS, [])
        if taken and response.status_code != 401:
            for rate_limit in taken:
                try:
                    gcra_give_back(cache=cache_backend(), rate_limit=rate_limit, now=time.time())
                except _CACHE_ERRORS as exc:
                    cache_breaker.record_fault(exc, what="throttling")
        return super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]


CLASSIFY_THROTTLES = (ClassifyAnonThrottle, ClassifyUserThrottle)
FEEDBACK_THROTTLES = (FeedbackAnonThrottle, FeedbackUserThrottle)


def client_address(request: HttpRequest) -> str:
    """The client address the limits count (NUM_PROXIES decides whether X-Forwarded-For is
    trusted); also how the admin login's lock-out names a client."""
    return BaseThrottle().get_ident(request)  # type: ignore[arg-type]
