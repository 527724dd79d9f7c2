"""A circuit breaker for the shared cache (Redis): one fault, then a rest from it.

A Redis that is down or hung would otherwise cost every request a socket timeout. After a fault
the breaker opens for CACHE_BREAKER_SECONDS: the result cache and the throttles skip Redis, and
the fault is logged once per opening, never once per request.
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

    def available(self) -> bool:
        return time.monotonic() >= self._open_until

    def record_fault(self, exc: BaseException, *, what: str) -> None:
        with self._lock:
            was_closed = self.available()
            self._open_until = time.monotonic() + settings.CACHE_BREAKER_SECONDS
        if was_closed:
            logger.warning(
                "Cache unreachable during %s (%s: %s); skipping it for %s s",
                what,
                type(exc).__name__,
                exc,
                settings.CACHE_BREAKER_SECONDS,
            )

    def reset(self) -> None:
        with self._lock:
            self._open_until = 0.0


cache_breaker = CacheBreaker()
