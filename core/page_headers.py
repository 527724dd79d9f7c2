"""Security headers of the service's own HTML pages (Django 5.2 has no CSP of its own).

The upload page loads only its own stylesheet and script (served by the app, no CDN, no inline
code), talks only to this service, and previews an image the person chose: a local file (a
``blob:`` URL) or the image address they typed (any http(s) host, as an <img> only).
Referrer-Policy is Django's SecurityMiddleware's (SECURE_REFERRER_POLICY), on every answer.
"""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data: https: http:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
# The page needs no device or sensor: deny those a page could ask for.
PERMISSIONS_POLICY = ", ".join(
    f"{feature}=()"
    for feature in (
        "camera",
        "microphone",
        "geolocation",
        "payment",
        "usb",
        "serial",
        "bluetooth",
    )
)


def page_security_headers(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Add Content-Security-Policy and Permissions-Policy to an HTML view's answers."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        return response

    return wrapped
