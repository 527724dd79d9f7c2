import io
import os
from collections.abc import Callable, Iterable

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "classifier_site.settings")


class BoundedChunkedBody:
    """Gives Django a chunked request body, bounded.

    Django reads a body only up to CONTENT_LENGTH, so a chunked upload (no length; gunicorn
    de-chunks it and sets wsgi.input_terminated) would reach the parsers empty. This reads such
    a body up to DATA_UPLOAD_MAX_MEMORY_SIZE (the largest body any endpoint accepts) and hands
    it on with its length.

    A longer one is not answered here: that answer would miss the request id, the access line,
    the metrics and the request log. Django gets an empty body declared one byte over the
    limit instead, so the parsers refuse it (413 ``payload_too_large``) the way they refuse any
    over-size body, and the connection is closed after the answer (the rest of the body is
    never read).
    """

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("CONTENT_LENGTH") or not environ.get("wsgi.input_terminated"):
            return self.app(environ, start_response)
        from django.conf import settings

        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        stream, body = environ["wsgi.input"], bytearray()
        while len(body) <= limit and (chunk := stream.read(min(64 * 1024, limit + 1 - len(body)))):
            body += chunk
        if len(body) <= limit:
            environ["wsgi.input"] = io.BytesIO(bytes(body))
            environ["CONTENT_LENGTH"] = str(len(body))
            return self.app(environ, start_response)
        environ["wsgi.input"] = io.BytesIO(b"")
        environ["CONTENT_LENGTH"] = str(limit + 1)

        def closing_start_response(status: str, headers: list, *args: object) -> object:
            kept = [(name, value) for name, value in headers if name.lower() != "connection"]
            return start_response(status, [*kept, ("Connection", "close")], *args)

        return self.app(environ, closing_start_response)


application = BoundedChunkedBody(get_wsgi_application())
