"""Slow clients against the real service as 'make run' starts it (granian, core.front): a request
arriving one byte a second costs a connection and a buffer, never a request thread.

Timing bounds are the issue's own and generous for this machine: a probe answers in a few
milliseconds here; before the front, 8 such connections made every probe time out.
"""

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from reporting.models import RequestLog
from tests.support.http_client import send, upload
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Fewer threads than the test's attackers by far: each attacker holding one would show at once.
SERVER_ENV = {"WEB_THREADS": "4"}
SLOW_HEAD = b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n"
SLOW_BODY_HEAD = (
    b"POST /classify-image HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
)


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


@contextlib.contextmanager
def dripping(url: str, *, heads: int, bodies: int) -> Iterator[list[socket.socket]]:
    """``heads`` connections sending headers and ``bodies`` sending a body, a byte a second."""
    sockets = []
    for index in range(heads + bodies):
        sock = connect(url)
        sock.sendall(SLOW_HEAD if index < heads else SLOW_BODY_HEAD)
        sockets.append(sock)
    stop = threading.Event()

    def drip() -> None:
        while not stop.wait(1.0):
            for index, sock in enumerate(sockets):
                with contextlib.suppress(OSError):
                    sock.send(b"a" if index < heads else b"\0")

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        yield sockets
    finally:
        stop.set()
        dripper.join()
        for sock in sockets:
            sock.close()


def still_open(sock: socket.socket) -> bool:
    """True if the server has neither answered nor closed ``sock``."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def test_slow_headers_and_slow_bodies_leave_probes_and_uploads_answering(web_server, tiny_model):
    # Deadlines longer than the attack: what protects the service is that no thread waits.
    server = web_server(
        workers=2,
        env={**SERVER_ENV, "REQUEST_HEADER_TIMEOUT": "30", "REQUEST_BODY_TIMEOUT": "30"},
    )
    assert upload(server.url).status == 200  # the model is loaded
    with dripping(server.url, heads=100, bodies=100) as attackers:
        time.sleep(1.5)  # every attacker has been accepted and is dripping
        probes, uploads = [], []
        until = time.monotonic() + 8
        while time.monotonic() < until:
            probes.append(send(f"{server.url}/health/live", timeout=10))
            if len(probes) % 10 == 0:
                uploads.append(upload(server.url, seed=len(uploads)))
            time.sleep(0.02)
        open_attackers = sum(still_open(sock) for sock in attackers)
    assert all(probe.status == 200 for probe in probes)
    seconds = sorted(probe.seconds for probe in probes)
    p99 = seconds[int(len(seconds) * 0.99) - 1]
    assert p99 < 0.1, f"probe p99 {p99 * 1000:.0f} ms over {len(probes)} probes"
    assert uploads and all(answer.status == 200 for answer in uploads)
    assert max(answer.seconds for answer in uploads) < 1.0, [a.seconds for a in uploads]
    # The attack was still going: nothing had been answered or cut off.
    assert open_attackers == 200


def test_a_body_slower_than_its_deadline_is_answered_408_and_logged(web_server, tiny_model):
    server = web_server(workers=1, env={**SERVER_ENV, "REQUEST_BODY_TIMEOUT": "1.5"})
    with connect(server.url) as sock:
        sock.sendall(SLOW_BODY_HEAD + b"\0" * 10)  # 10 bytes of 100,000, then nothing
        started = time.monotonic()
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        waited = time.monotonic() - started
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert b'"code":"request_timeout"' in body.replace(b" ", b"")
    assert b"connection: close" in head.lower()
    assert 1.0 < waited < 5.0
    request_id = next(
        line.split(b":", 1)[1].strip().decode()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"x-request-id:")
    )
    wait_for(lambda: RequestLog.objects.filter(request_id=request_id, status_code=408).exists())


def test_headers_slower_than_their_deadline_lose_the_connection(web_server, tiny_model):
    server = web_server(workers=1, env={**SERVER_ENV, "REQUEST_HEADER_TIMEOUT": "1"})
    with connect(server.url) as sock:
        sock.sendall(SLOW_HEAD)
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 5:
            try:
                sock.send(b"x")
            except OSError:
                closed = True
                break
            sock.settimeout(0.5)
            try:
                if sock.recv(65536) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:  # reset: closed too
                closed = True
                break
    assert closed and time.monotonic() - started < 4


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(web_server, tiny_model):
    server = web_server(workers=1, env=SERVER_ENV)
    with connect(server.url) as sock:
        sock.sendall(
            b"POST /classify-image HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 500000000\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):  # answered and closed with no byte of the body sent
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer
    assert b"payload_too_large" in body
    assert b"connection: close" in head.lower()


def raw_exchange(url: str, request: bytes) -> bytes:
    with connect(url) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(request)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    return answer


def test_what_the_server_refuses_itself_and_what_reaches_the_api(web_server, tiny_model):
    """granian answers a request it cannot parse itself: a status, no body, no log row
    (docs/reliability.md says which); everything it can parse reaches the API's JSON errors."""
    server = web_server(workers=1, env=SERVER_ENV)
    head = b"Host: 127.0.0.1\r\nConnection: close\r\n"
    too_big = raw_exchange(
        server.url,
        b"GET /health/live HTTP/1.1\r\n" + head + b"X-Big: " + b"b" * 200_000 + b"\r\n\r\n",
    )
    too_many = raw_exchange(
        server.url,
        b"GET /health/live HTTP/1.1\r\n"
        + head
        + b"".join(b"X-H%d: 1\r\n" % i for i in range(150))
        + b"\r\n",
    )
    garbage = raw_exchange(server.url, b"GARBAGE\r\n\r\n")
    for answer, status in ((too_big, b"431"), (too_many, b"431"), (garbage, b"400")):
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
        assert answer.lower().split(b"\r\n\r\n")[0].count(b"content-length: 0") == 1

    # A long URL (20,000 characters, within REQUEST_HEADERS_MAX_BYTES) and Content-Length beside
    # Transfer-Encoding are parsed: the API answers them, in JSON, with a request id.
    long_url = raw_exchange(
        server.url, b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n" + head + b"\r\n"
    )
    both = raw_exchange(
        server.url,
        b"POST /classify-image HTTP/1.1\r\n"
        + head
        + b"Content-Type: application/json\r\nContent-Length: 5\r\n"
        + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    for answer, status in ((long_url, b"404"), (both, b"400")):
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
        assert b"application/json" in answer and b"x-request-id" in answer.lower()
