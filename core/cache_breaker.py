"""A circuit breaker for the shared cache (Redis): one fault, then a rest from it.

A Redis that is down or hung would otherwise cost every request a socket timeout. After a fault
the breaker opens for CACHE_BREAKER_SECONDS: the result cache and the throttles skip Redis, and
the outage is logged once when it starts and once when the cache answers again, never once per
request or per re-opening.
"""

import logging
import threading
import time

from django.conf import settings

logger = logging.getLogger(__name__)


class CacheBreaker:
    def __init__(self) -> None:
        self._open_until = 0.0
        self._lock = threading.Lock()
        # An outage lasts from its first fault until a cache call succeeds again; it is logged
        # when it starts and when it ends, not at each re-opening in between.
        self._faults = 0

    def available(self) -> bool:
        return time.monotonic() >= self._open_until

    def record_fault(self, exc: BaseException, *, what: str) -> None:
        with self._lock:
            self._open_until = time.monotonic() + settings.CACHE_BREAKER_SECONDS
            self._faults += 1
            first = self._faults == 1
        if first:
            logger.warning(
                "Cache unreachable during %s (%s: %s); skipping it for %s s at a time until "
                "it answers again",
                what,
                type(exc).__name__,
                exc,
                settings.CACHE_BREAKER_SECONDS,
                extra={"fault": "cache"},
            )

    def record_success(self) -> None:
        """A cache call worked: ends an outage (and says so) if one was going on."""
        if not self._faults:  # the common case costs one attribute read
            return
        with self._lock:
            faults, self._faults = self._faults, 0
        if faults:
            logger.warning(
                "Cache reachable again after %d fault(s)", faults, extra={"fault": "cache"}
            )

    def reset(self) -> None:
        with self._lock:
            self._open_until = 0.0
            self._faults = 0


cache_breaker = CacheBreaker()
