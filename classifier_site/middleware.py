import re
import time
import uuid
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


_REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id_clean(value: str | None) -> str:
    """A client's X-Request-ID when it is short and plain, else a fresh uuid4 (hex)."""
    if value and _REQUEST_ID_PATTERN.fullmatch(value):
        return value
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Gives each request an id (the client's ``X-Request-ID`` if usable) and echoes it back."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.request_id = request_id_clean(request.headers.get("X-Request-ID"))  # type: ignore[attr-defined]
        response = self.get_response(request)
        response["X-Request-ID"] = request.request_id  # type: ignore[attr-defined]
        return response


def request_id(request: HttpRequest) -> str:
    """The id RequestIdMiddleware gave the request (a fresh one if it did not run)."""
    value = getattr(request, "request_id", None)
    if value is None:
        value = request_id_clean(None)
        request.request_id = value  # type: ignore[attr-defined]
    return value
