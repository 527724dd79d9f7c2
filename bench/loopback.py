"""A real HTTP server on loopback that serves fixed files, counting the requests it gets.

``make bench`` serves its image URLs with it, and the tests their
model downloads and images, so both exercise the same server.
"""

import contextlib
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class StaticServer:
    files: dict[str, bytes]
    url: str = ""
    hits: Counter = field(default_factory=Counter)


@contextmanager
def serve_files(
    files: dict[str, bytes],
    *,
    content_type: str | None = None,
    fallback: Callable[[str], bytes | None] | None = None,
) -> Iterator[StaticServer]:
    """Serve ``files`` (path -> body) on 127.0.0.1 at a free port until the block ends.

    A path not in ``files`` is answered by ``fallback(path)`` when given (None: 404).
    """
    served = StaticServer(files=files)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.hits[self.path] += 1
            body = served.files.get(self.path)
            if body is None and fallback is not None:
                body = fallback(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            if content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for servers we start)."""
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def database_url(settings_dict: dict) -> str:
    """A DATABASE_URL for Django's connection settings, for the servers we start beside it."""
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or ""
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    credentials = f"{user}{password}@" if user else ""
    host, port = settings_dict["HOST"], settings_dict["PORT"] or 5432
    return f"postgres://{credentials}{host}:{port}/{settings_dict['NAME']}"
