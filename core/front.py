"""The service's ASGI application: an asynchronous front for the synchronous Django core.

A thread spent on a request should do the request's work, not wait for its bytes. So the
server (granian, in Rust) reads the request line and headers, with its own header timeout,
and this front reads the body on the worker's event loop, with a deadline and a size cap.
Only a complete request reaches Django, which runs as the WSGI application it has always been,
in a bounded pool of threads; the answer is written back on the event loop. A client sending
one byte a second costs a coroutine and a buffer, never a thread.

What the front refuses, it still hands to Django, marked, so that the answer is the API's
JSON error with its request id, access line, metrics and request-log row:

- a body that takes longer than REQUEST_BODY_TIMEOUT seconds: 408 ``request_timeout``
  (``FrontRefusalMiddleware``);
- a body over DATA_UPLOAD_MAX_MEMORY_SIZE (the largest any endpoint accepts), declared or
  chunked: Django gets an empty body declared one byte over the limit, so that its parsers
  refuse it with 413 ``payload_too_large`` as they refuse any over-size body, and the
  connection is closed after the answer (the rest of the body is never read).

The ASGI lifespan runs the apps' worker hooks: start hooks (load and warm the model) before
the worker takes traffic, exit hooks (write out the request-log queue) after it stopped.
"""

import asyncio
import io
import logging
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# The environ key FrontRefusalMiddleware reads: why the front refused the request, if it did.
REFUSAL_KEY = "classifier.front_refusal"
BODY_TIMEOUT = "body_timeout"

# A response body is handed to the event loop in pieces of at least this much (a streaming
# response, a static file), so that a large one costs few hops between threads.
_SEND_CHUNK = 256 * 1024


class _Answer:
    """What the WSGI application answered: its status and headers, and its body (or the rest)."""

    __slots__ = ("body", "headers", "more", "status")

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.more: Iterator[bytes] | None = None  # a streaming body not read yet


class AsyncFront:
    """Serves a WSGI application over ASGI, reading each body fully before a thread runs it."""

    def __init__(
        self,
        wsgi_application: Callable,
        *,
        threads: int,
        body_timeout: float,
        max_body: int,
        on_start: Callable[[], None] = lambda: None,
        on_stop: Callable[[], None] = lambda: None,
    ) -> None:
        self.wsgi_application = wsgi_application
        self.threads = threads
        self.body_timeout = body_timeout
        self.max_body = max_body
        self.on_start = on_start
        self.on_stop = on_stop
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="request")
            return self._pool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:  # websockets: the service has none
            raise ValueError(f"Unsupported ASGI scope type {scope['type']!r}")

    # --- lifespan -----------------------------------------------------------------------
    async def _lifespan(self, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    # In a thread: the hooks load models and touch the database.
                    await loop.run_in_executor(self.pool(), self.on_start)
                except Exception as exc:
                    logger.exception("The worker could not start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await loop.run_in_executor(self.pool(), self.on_stop)
                finally:
                    self.pool().shutdown(wait=True, cancel_futures=False)
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- requests -----------------------------------------------------------------------
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        environ = _environ(scope)
        limit = self.max_body
        declared = environ.get("CONTENT_LENGTH", "")
        too_large = declared.isdigit() and int(declared) > limit
        close = False
        # Without Content-Length or Transfer-Encoding a request has no body (RFC 9112 6.3).
        bodiless = declared in ("", "0") and "HTTP_TRANSFER_ENCODING" not in environ
        read = b"" if too_large or bodiless else await self._body(receive, limit=limit)
        if read is None:  # over the limit, found while reading a chunked body
            too_large, body = True, b""
        elif isinstance(read, _TimedOut):
            environ[REFUSAL_KEY] = BODY_TIMEOUT
            body, close = b"", True
        else:
            body = read
        if too_large:
            environ["CONTENT_LENGTH"] = str(limit + 1)
            close = True
        elif "CONTENT_LENGTH" not in environ or not declared.isdigit():
            environ["CONTENT_LENGTH"] = str(len(body))
        environ["wsgi.input"] = io.BytesIO(body)

        try:
            await self._answer(environ, send, close=close)
        finally:
            # Django's request objects form reference cycles (the view and its request, the
            # messages storage and its request) that only the cyclic collector frees, so a
            # body they hold would outlive its request by as long as that takes: free it now.
            environ["wsgi.input"].close()

    async def _answer(self, environ: dict, send: Send, *, close: bool) -> None:
        loop = asyncio.get_running_loop()
        pool = self.pool()
        answer = await loop.run_in_executor(pool, self._run, environ)
        headers = answer.headers
        if close:
            headers = [(n, v) for n, v in headers if n != b"connection"]
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        more = answer.more
        if more is None:
            await send({"type": "http.response.body", "body": answer.body})
            return
        try:
            await send({"type": "http.response.body", "body": answer.body, "more_body": True})
            while chunk := await loop.run_in_executor(pool, _gather, more):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await loop.run_in_executor(pool, _close, more)

    async def _body(self, receive: Receive, *, limit: int) -> "bytes | _TimedOut | None":
        """The whole body; None once it exceeds ``limit``; _TimedOut after the deadline."""
        parts: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        break
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        return None
                    parts.append(chunk)
                    if not message.get("more_body"):
                        break
        except TimeoutError:
            return _TimedOut()
        return b"".join(parts)

    def _run(self, environ: dict) -> _Answer:
        """Run the WSGI application (in a request thread) and read what it answers."""
        answer = _Answer()

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
            answer.status = int(status.split(" ", 1)[0])
            answer.headers = [
                (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers
            ]
            return _no_write

        result: Iterable[bytes] = self.wsgi_application(environ, start_response)
        if isinstance(result, list | tuple):  # answered at once
            answer.body = b"".join(result)
            _close(result)
            return answer
        chunks = iter(result)
        streaming = getattr(result, "streaming", None)
        if streaming is False:  # Django's HttpResponse: one piece, already in memory
            answer.body = b"".join(chunks)
            _close(result)  # request_finished, in this thread: its database connections
            return answer
        answer.body = _gather(chunks)
        answer.more = _Remaining(result, chunks)
        return answer


class _TimedOut:
    """The body did not arrive within REQUEST_BODY_TIMEOUT."""


class _Remaining(Iterator[bytes]):
    """The rest of a streaming body, and the response to close once it is sent."""

    def __init__(self, result: Iterable[bytes], chunks: Iterator[bytes]) -> None:
        self.result = result
        self.chunks = chunks

    def __next__(self) -> bytes:
        return next(self.chunks)

    def close(self) -> None:
        _close(self.result)


def _gather(chunks: Iterator[bytes]) -> bytes:
    """The next ``_SEND_CHUNK`` bytes or so of a streaming body (empty at its end)."""
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size >= _SEND_CHUNK:
            break
    return b"".join(parts)


def _close(result: object) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


def _no_write(data: bytes) -> None:
    raise NotImplementedError("write() is not supported: return the body instead")


def _environ(scope: Scope) -> dict:
    """The WSGI environ of an ASGI HTTP scope (PEP 3333)."""
    root_path = scope.get("root_path", "")
    path = scope["path"]
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    server = scope.get("server") or ("localhost", 80)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": root_path.encode("utf-8").decode("latin-1"),
        "PATH_INFO": path.encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1] if server[1] is not None else 0),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"] = client[0]
        environ["REMOTE_PORT"] = str(client[1])
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        if name not in ("CONTENT_LENGTH", "CONTENT_TYPE"):
            name = f"HTTP_{name}"
        # Repeated headers are joined, as a WSGI server joins them (cookies with "; ").
        if name in environ:
            value = f"{environ[name]}{'; ' if name == 'HTTP_COOKIE' else ','}{value}"
        environ[name] = value
    return environ
