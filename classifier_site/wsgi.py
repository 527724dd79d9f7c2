import io
import json
import os
from collections.abc import Callable, Iterable

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "classifier_site.settings")


class BoundedChunkedBody:
    """Gives Django a chunked request body, bounded.

    Django reads a body only up to CONTENT_LENGTH, so a chunked upload (no length; gunicorn
    de-chunks it and sets wsgi.input_terminated) would reach the parsers empty. This reads such
    a body up to DATA_UPLOAD_MAX_MEMORY_SIZE (the largest body any endpoint accepts) and hands
    it on with its length; a longer one is answered 413 in the JSON error shape at once.
    """

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("CONTENT_LENGTH") or not environ.get("wsgi.input_terminated"):
            return self.app(environ, start_response)
        from django.conf import settings

        from classifier_site.errors import PayloadTooLarge, error_body

        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        stream, body = environ["wsgi.input"], bytearray()
        while len(body) <= limit and (chunk := stream.read(min(64 * 1024, limit + 1 - len(body)))):
            body += chunk
        if len(body) > limit:
            error = PayloadTooLarge(f"The request body is larger than {limit:,} bytes.")
            payload = json.dumps(error_body(error.code, error.message)).encode()
            start_response(
                "413 Content Too Large",
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(payload))),
                    ("Connection", "close"),
                ],
            )
            return [payload]
        environ["wsgi.input"] = io.BytesIO(bytes(body))
        environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)


application = BoundedChunkedBody(get_wsgi_application())
