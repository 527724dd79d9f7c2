"""Counting failures of work that must never fail a request, and logging them sparingly."""

import logging
import threading
import time
from typing import Any

logger = logging.getLogger(__name__)


class FailureCounter:
    """Counts failures of something that must not fail the request, logging them sparingly.

    The first failure is logged with its traceback; while the fault lasts, at most one line per
    ``interval`` seconds says how many more happened.
    """

    def __init__(self, what: str, *, interval: float = 60.0, counter: Any = None) -> None:
        self.what = what
        self.interval = interval
        self.counter = counter  # a Prometheus counter to count failures in too, if given
        self.count = 0
        self._lock = threading.Lock()
        self._last_logged: float | None = None
        self._since_logged = 0

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self.counter is not None:
            self.counter.inc()
        with self._lock:
            self.count += 1
            self._since_logged += 1
            due = self._last_logged is None or now - self._last_logged >= self.interval
            if not due:
                return
            first, self._last_logged = self._last_logged is None, now
            missed, self._since_logged = self._since_logged, 0
        if first:
            logger.error("%s failed (it will be retried or skipped)", self.what, exc_info=exc)
        else:
            logger.error(
                "%s failed %d time(s) in the last %.0f s; last error: %r",
                self.what,
                missed,
                self.interval,
                exc,
            )

    def recovered(self) -> None:
        with self._lock:
            if self._last_logged is not None:
                logger.warning("%s works again after %d failure(s)", self.what, self.count)
            self._last_logged = None
            self._since_logged = 0
