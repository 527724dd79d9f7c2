"""A process's own GET /health/live over HTTP, for processes that serve no other HTTP (the
Elasticsearch sender): a small threaded http.server answering from a callable.

The callable returns ``(alive, body)``: 200 with the JSON body when alive, 503 otherwise. Any
other path is 404. Nothing here touches Django, so a probe is answered even while the database
or Elasticsearch hangs.
"""

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger(__name__)

LIVE_PATH = "/health/live"

Liveness = Callable[[], tuple[bool, dict[str, Any]]]


class _Handler(BaseHTTPRequestHandler):
    server: "LivenessServer"

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != LIVE_PATH:
            self._answer(404, {"error": {"code": "not_found", "message": "Only /health/live."}})
            return
        try:
            alive, body = self.server.liveness()
        except Exception as exc:  # a broken check reads as not alive, never as a crash
            alive, body = False, {"error": repr(exc)}
        self._answer(200 if alive else 503, {"status": "ok" if alive else "stalled", **body})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes every few seconds: not worth a line each


class LivenessServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], liveness: Liveness) -> None:
        super().__init__(address, _Handler)
        self.liveness = liveness


def liveness_server_start(*, host: str, port: int, liveness: Liveness) -> LivenessServer:
    """Serve GET /health/live on host:port from a daemon thread; ``shutdown()`` stops it.

    Raises OSError when the port cannot be bound.
    """
    server = LivenessServer((host, port), liveness)
    thread = threading.Thread(target=server.serve_forever, name="liveness-server", daemon=True)
    thread.start()
    logger.info("Liveness at http://%s:%d%s", host, server.server_address[1], LIVE_PATH)
    return server
