"""A loopback HTTP server that answers the Elasticsearch endpoints the exporter uses.

It speaks enough of the REST API for the real ``elasticsearch`` client: the product header the
client checks, index templates, index existence and creation, ``_bulk`` and ``_count``. It keeps
what it receives so tests can assert on the documents. ``hang()`` makes it accept connections and
never answer until ``release()``, like an overloaded or stuck cluster.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


class FakeElasticsearch:
    def __init__(self) -> None:
        self.templates: dict[str, dict] = {}
        self.indices: dict[str, dict[str, dict]] = {}
        self.bulk_requests = 0
        self.received: list[tuple[str, str, dict]] = []  # every (index, id, source) sent
        self.lock = threading.Lock()
        self._answering = threading.Event()
        self._answering.set()
        self.hung_requests = 0
        # Document ids answered with a 400 mapping error, as a cluster refuses a bad document.
        self.refuse_ids: set[str] = set()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "FakeElasticsearch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._answering.set()
        self.server.shutdown()
        self.server.server_close()

    def hang(self) -> None:
        self._answering.clear()

    def release(self) -> None:
        self._answering.set()

    def documents(self, index: str) -> dict[str, dict]:
        with self.lock:
            return dict(self.indices.get(index, {}))

    # --- the API ---------------------------------------------------------------------------

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        parts = [p for p in urlsplit(path).path.split("/") if p]
        with self.lock:
            if parts[:1] == ["_index_template"] and method == "PUT":
                self.templates[parts[1]] = json.loads(body)
                return 200, {"acknowledged": True}
            if parts == ["_bulk"] and method in ("POST", "PUT"):
                return 200, self._bulk(body)
            if len(parts) == 2 and parts[1] == "_count":
                return 200, {"count": len(self.indices.get(parts[0], {}))}
            if len(parts) == 2 and parts[1] == "_refresh":
                return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
            if len(parts) == 1 and method == "HEAD":
                return (200 if parts[0] in self.indices else 404), None
            if len(parts) == 1 and method == "PUT":
                if parts[0] in self.indices:
                    error = {"type": "resource_already_exists_exception", "reason": parts[0]}
                    return 400, {"error": error, "status": 400}
                self.indices[parts[0]] = {}
                return 200, {"acknowledged": True, "index": parts[0]}
        return 404, {"error": {"type": "not_found", "reason": f"{method} {path}"}, "status": 404}

    def _bulk(self, body: bytes) -> dict:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        items = []
        self.bulk_requests += 1
        for action, source in zip(lines[::2], lines[1::2], strict=True):
            ((op, meta),) = action.items()
            index, doc_id = meta["_index"], meta["_id"]
            if doc_id in self.refuse_ids:
                error = {"type": "document_parsing_exception", "reason": "failed to parse"}
                items.append({op: {"_index": index, "_id": doc_id, "status": 400, "error": error}})
                continue
            documents = self.indices.setdefault(index, {})
            result = "updated" if doc_id in documents else "created"
            documents[doc_id] = source
            self.received.append((index, doc_id, source))
            items.append({op: {"_index": index, "_id": doc_id, "status": 201, "result": result}})
        errors = any("error" in next(iter(item.values())) for item in items)
        return {"took": 1, "errors": errors, "items": items}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if not fake._answering.is_set():
                    with fake.lock:
                        fake.hung_requests += 1
                    fake._answering.wait(60)
                    self.close_connection = True
                    return  # the client has long given up: drop the connection
                status, payload = fake.handle(self.command, self.path, body)
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("X-Elastic-Product", "Elasticsearch")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _answer

        return Handler
