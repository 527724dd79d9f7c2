"""Redis for the tests: the machine's own server, or one a test starts and stops itself."""

import contextlib
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.cache import caches
from redis.connection import AbstractConnection

from classifier_site.env import cache_settings
from core.redis_scripts import is_redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def redis_cache_settings(url: str, *, timeout: float = 0.25) -> dict:
    """CACHES for django-redis at ``url`` with a key prefix of the test's own."""
    return cache_settings(
        redis_url=url, key_prefix=f"test-{uuid.uuid4().hex[:12]}", socket_timeout=timeout
    )


def local_cache_settings() -> dict:
    return cache_settings(
        redis_url="",
        key_prefix="classifier",
        socket_timeout=0.25,
        location=f"test-{uuid.uuid4().hex[:12]}",
    )


def shared_redis_url() -> str:
    """The machine's Redis (REDIS_URL, else 127.0.0.1:6379). In CI it must answer."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return url
    except OSError:
        if os.environ.get("CI"):
            raise
        pytest.skip("no Redis on this laptop (CI always runs these tests against Redis)")


class OwnRedis:
    """A redis-server on a spare loopback port that a test can stop, restart and pause."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        with contextlib.closing(socket.socket()) as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def pause(self, seconds: float) -> None:
        """Make the server hold every client command for ``seconds`` (CLIENT PAUSE)."""
        with socket.create_connection(("127.0.0.1", self.port), 1) as sock:
            sock.sendall(f"CLIENT PAUSE {int(seconds * 1000)} ALL\r\n".encode())
            assert sock.recv(16).startswith(b"+OK")


_COMMAND_NAME = re.compile(rb"\*\d+\r\n\$\d+\r\n([A-Za-z]+)\r\n")


@contextlib.contextmanager
def redis_round_trips() -> Iterator[list[list[str]]]:
    """Records each round trip this thread makes to Redis: every message redis-py sends (one
    command, or a pipeline's batch) as the list of its command names.

    It counts at the connection, so it sees this process's calls only, however many other
    clients share the server (Redis' own commandstats would count theirs too).
    """
    trips: list[list[str]] = []
    thread = threading.get_ident()
    send = AbstractConnection.send_packed_command

    def counted(connection, command, check_health=True):
        if threading.get_ident() == thread:
            packed = command.encode() if isinstance(command, str) else command
            chunks = [packed] if isinstance(packed, bytes | memoryview) else packed
            message = b"".join(bytes(chunk) for chunk in chunks)
            trips.append([name.decode().upper() for name in _COMMAND_NAME.findall(message)])
        return send(connection, command, check_health)

    AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
    try:
        yield trips
    finally:
        AbstractConnection.send_packed_command = send  # type: ignore[method-assign]


def cache_clock_advance(*, seconds: float) -> None:
    """Move the default cache's clock ``seconds`` forward, as far as expiry goes: entries that
    would have expired by then are gone, the others have that much less to live, and entries
    stored without a timeout stay. The backend still decides what has expired.

    Redis: every key of this test's prefix is given its time to live less ``seconds``
    (PTTL, then PEXPIRE, or DEL when nothing is left). Local memory: Django's LocMemCache keeps
    each key's expiry time in ``_expire_info``, which is moved back by ``seconds``.
    """
    backend = caches["default"]
    if is_redis(backend):
        client = backend.client.get_client(write=True)  # type: ignore[attr-defined]
        for key in client.scan_iter(match=backend.make_key("*")):
            left_ms = client.pttl(key)
            if left_ms < 0:  # no timeout (-1), or gone meanwhile (-2)
                continue
            if (left_ms := left_ms - round(seconds * 1000)) > 0:
                client.pexpire(key, left_ms)
            else:
                client.delete(key)
        return
    with backend._lock:  # type: ignore[attr-defined]
        expiry = backend._expire_info  # type: ignore[attr-defined]
        for key, expires_at in expiry.items():
            if expires_at is not None:
                expiry[key] = expires_at - seconds
