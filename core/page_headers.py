"""Security headers of every HTML page the service serves (Django 5.2 has no CSP of its own).

One Content-Security-Policy for all of them: the upload page, the admin and the API docs
(Swagger UI). Each loads only scripts and stylesheets served by this service (no CDN, no
inline script) and talks only to this service. Exceptions, each as narrow as it can be:

- ``img-src`` allows any http(s) image and ``blob:``: the upload page previews the image a
  person chose, a local file or the address they typed (as an <img> only);
- ``style-src`` allows the one inline <style> block of drf-spectacular's Swagger UI page, by
  its hash (SWAGGER_UI_STYLE_HASH, which a test recomputes from the installed template); the
  Swagger UI's own script is served as a file (SpectacularSwaggerSplitView), not inline.

Referrer-Policy is Django's SecurityMiddleware's (SECURE_REFERRER_POLICY), on every answer.
"""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

SWAGGER_UI_STYLE_HASH = "sha256-MMpT0iDxyjALd9PdfepImGX3DBfJPXZ4IlDWdPAgtn0="

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        f"style-src 'self' '{SWAGGER_UI_STYLE_HASH}'",
        "img-src 'self' blob: data: https: http:",
        "font-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
# No page needs a device or sensor: deny those a page could ask for.
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


class PageSecurityHeadersMiddleware:
    """Adds Content-Security-Policy and Permissions-Policy to every HTML answer (a view may set
    its own first)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.headers.get("Content-Type", "").startswith("text/html"):
            response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
            response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        return response
