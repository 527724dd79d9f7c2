import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


class RequestTimingMiddleware:
    """Stamps each request with its arrival time, so answers can report their server wall time."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.started_at = time.perf_counter()  # type: ignore[attr-defined]
        return self.get_response(request)


def request_elapsed(request: HttpRequest) -> float:
    """Seconds since the request arrived (since now, for a request that was never stamped)."""
    started_at = getattr(request, "started_at", None)
    return 0.0 if started_at is None else time.perf_counter() - started_at
