"""Middleware around every request: arrival time, request id, and the access log line."""

import logging
import os
import re
import threading
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from core import metrics
from core.errors import RequestTimeout, service_error_response
from core.front import BODY_TIMEOUT, REFUSAL_KEY
from core.logs import request_id_bind, request_id_unbind

access_logger = logging.getLogger("core.access")


class RequestsInFlight:
    """How many requests this process is answering now. Work that must never delay an answer
    (a shadow model's evaluation) waits until there are none."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = threading.Condition()

    @property
    def count(self) -> int:
        return self._count

    def enter(self) -> None:
        with self._idle:
            self._count += 1

    def leave(self) -> None:
        with self._idle:
            self._count -= 1
            if not self._count:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for no request in flight; whether there is none."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._count, timeout)


requests_in_flight = RequestsInFlight()


class RequestTimingMiddleware:
    """Stamps each request with its arrival time, so answers can report their server wall time,
    and counts it in flight while it is answered."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.started_at = time.perf_counter()  # type: ignore[attr-defined]
        requests_in_flight.enter()
        try:
            return self.get_response(request)
        finally:
            requests_in_flight.leave()


def request_elapsed(request: HttpRequest) -> float:
    """Seconds since the request arrived (since now, for a request that was never stamped)."""
    started_at = getattr(request, "started_at", None)
    return 0.0 if started_at is None else time.perf_counter() - started_at


_REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")


# Random bytes for fresh request ids, drawn 256 ids at a time: os.urandom per request (what
# uuid4 does) is a system call that hands the GIL to another request thread and back.
_ID_BYTES = 16
_UUID4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_UUID4_SET = (0x8000 << 48) | (4 << 76)
_id_pool = threading.local()


def _random_id_bytes() -> bytes:
    pool: tuple[int, bytes, int] | None = getattr(_id_pool, "state", None)
    pid = os.getpid()  # a forked worker draws its own bytes, never its parent's
    if pool is None or pool[0] != pid or pool[2] >= len(pool[1]):
        pool = (pid, os.urandom(_ID_BYTES * 256), 0)
    _id_pool.state = (pid, pool[1], pool[2] + _ID_BYTES)
    return pool[1][pool[2] : pool[2] + _ID_BYTES]


def request_id_clean(value: str | None) -> str:
    """A client's X-Request-ID when it is short and plain, else a fresh uuid4 (hex)."""
    if value and _REQUEST_ID_PATTERN.fullmatch(value):
        return value
    number = int.from_bytes(_random_id_bytes())
    # The variant and version bits of a uuid4, set as uuid.UUID(version=4) sets them.
    number = (number & _UUID4_CLEAR) | _UUID4_SET
    return f"{number:032x}"


class RequestIdMiddleware:
    """Gives each request an id (the client's ``X-Request-ID`` if usable) and echoes it back.

    While the request is served, the id is in a context variable, so every log record carries it.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        value = request_id_clean(request.headers.get("X-Request-ID"))
        request.request_id = value  # type: ignore[attr-defined]
        token = request_id_bind(value)
        try:
            response = self.get_response(request)
        finally:
            request_id_unbind(token)
        response["X-Request-ID"] = value
        return response


def request_id(request: HttpRequest) -> str:
    """The id RequestIdMiddleware gave the request (a fresh one if it did not run)."""
    value = getattr(request, "request_id", None)
    if value is None:
        value = request_id_clean(None)
        request.request_id = value  # type: ignore[attr-defined]
    return value


# Routes that are probed or scraped every few seconds: neither logged nor counted.
UNOBSERVED_ROUTES = frozenset({"metrics", "health-live", "health-ready"})


def _route(request: HttpRequest) -> str:
    match = request.resolver_match
    if match is not None:
        return match.view_name or "unnamed"
    return "unmatched"


class AccessLogMiddleware:
    """One access log line and the request metrics for every request except probes and scrapes.

    Placed right after RequestIdMiddleware, so the id is known and the duration covers the rest
    of the stack. The endpoint is the route name (``classification:classify-image``), never the
    raw path, so that metric labels stay few.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        route = _route(request)
        if route in UNOBSERVED_ROUTES:
            return response
        duration = request_elapsed(request)
        status = response.status_code
        metrics.request_observe(
            endpoint=route, method=request.method or "", status=status, seconds=duration
        )
        facts = request.__dict__.get("log_facts", {})
        extra = {
            "request_id": request_id(request),
            "method": request.method,
            "path": request.path,
            "route": route,
            "status": status,
            "duration_ms": round(duration * 1000, 3),
            **facts,
        }
        details = "".join(f" {key}={value}" for key, value in facts.items() if value is not None)
        access_logger.info(
            "%s %s %s %.1f ms%s",
            request.method,
            request.path,
            status,
            duration * 1000,
            details,
            extra=extra,
        )
        return response


class FrontRefusalMiddleware:
    """Answers a request the asynchronous front refused (core.front): its body took too long.

    The front hands such a request on, marked and without its body, rather than answering it
    itself, so that the refusal has the API's error shape, a request id, an access line and
    (placed below ClassifyRefusalMiddleware) a request-log row like every other answer.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.META.get(REFUSAL_KEY) == BODY_TIMEOUT:
            return service_error_response(RequestTimeout())
        return self.get_response(request)
