"""Images built and containers run with podman, for the container-marked tests (tests/deploy).

podman as root here: runc, and the limits a container may have on these machines. The base
image comes from deploy/image/base-image.sh (a cached tarball or debootstrap), the layers from
podman's cache, so a second build on one machine takes seconds.
"""

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.paths import ROOT

CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
RUN_OPTIONS = ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
# The README's stop timeout: longer than the image's WEB_GRACEFUL_TIMEOUT (20 s).
STOP_TIMEOUT = 30


def podman_required() -> None:
    """Skip without podman (root, runc); fail instead where CI is set."""
    missing = None
    if shutil.which("podman") is None:
        missing = "podman is not installed (apt-get install podman runc debootstrap)"
    elif os.geteuid() != 0:
        missing = "podman builds these images as root here (rootless podman is not set up)"
    elif shutil.which("runc") is None:
        missing = "runc is not installed (apt-get install runc)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so the container tests must run: {missing}")
        pytest.skip(missing)


def image_build(tag: str, *, target: str | None = None, context: Path = ROOT) -> str:
    """Build ``context`` (the project's Dockerfile by default) as ``tag``; returns the tag."""
    podman_required()
    subprocess.run([str(ROOT / "deploy/image/base-image.sh")], check=True, cwd=ROOT)
    command = ["podman", "build", "--pull=never", "--format", "docker", *RUN_OPTIONS, "-t", tag]
    if target:
        command += ["--target", target]
    if CA_BUNDLE.exists():  # HTTPS to PyPI inside the build trusts what this machine trusts
        command += ["--secret", f"id=pip_ca,src={CA_BUNDLE}"]
    started = time.monotonic()
    subprocess.run([*command, str(context)], check=True, cwd=ROOT)
    print(f"podman build of {tag} took {time.monotonic() - started:.0f} s")
    return tag


def free_port() -> int:
    """A free port in 19000-19999 (the range this project's machines leave to tests)."""
    for port in range(19000 + os.getpid() % 900, 20000):
        with contextlib.closing(socket.socket()) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 19000-19999")


@contextlib.contextmanager
def container_running(image: str, *args: str, command: tuple[str, ...] = ()) -> Iterator[str]:
    """``podman run -d`` with ``args``; yields the name; prints its logs and removes it after."""
    name = f"classifier-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["podman", "run", "-d", "--name", name, *RUN_OPTIONS, *args, image, *command],
        check=True,
        capture_output=True,
    )
    try:
        yield name
    finally:
        logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True)
        print(logs.stdout[-4000:], logs.stderr[-4000:])
        subprocess.run(["podman", "rm", "-f", "-v", "-t", "5", name], capture_output=True)


def exit_code(name: str) -> int:
    out = subprocess.run(
        ["podman", "inspect", "--format", "{{.State.ExitCode}}", name],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(out.strip())


def get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_ready(port: int, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            status, body = get(port, "/health/ready")
            if status == 200:
                return body
            last = body
        except (OSError, ValueError) as exc:  # not listening yet
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"/health/ready did not answer 200 within {timeout} s: {last}")


def photo(shade: int = 0) -> bytes:
    """scikit-image's cat, with ``shade`` written in its top row as 16 black or white squares
    (coarse enough for JPEG to keep), so that each shade is a new image to the result cache."""
    from PIL import Image, ImageDraw
    from skimage import data

    image = Image.fromarray(data.chelsea())
    draw = ImageDraw.Draw(image)
    for bit in range(16):
        colour = (255, 255, 255) if shade >> bit & 1 else (0, 0, 0)
        draw.rectangle((16 * bit, 0, 16 * bit + 15, 15), fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def classify(port: int, image: bytes, timeout: float = 30, **fields: str) -> dict:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="cat.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode()
        + image
        + b"\r\n"
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/classify-image",
        data=b"".join(parts) + f"--{boundary}--\r\n".encode(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        assert response.status == 200
        return json.loads(response.read())


def classify_url(port: int, url: str, timeout: float = 60) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/classify-image",
        data=json.dumps({"image_url": url}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        assert response.status == 200
        return json.loads(response.read())


class SlowImageServer:
    """An image server on the host's loopback that takes ``seconds`` to send each photo: a
    request that is still in flight when its container is told to stop. ``started`` is set when
    a request arrives."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = threading.Event()
        self.body = photo(shade=4242)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.started.set()
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                steps = 20
                size = -(-len(outer.body) // steps)
                for start in range(0, len(outer.body), size):
                    time.sleep(outer.seconds / steps)
                    self.wfile.write(outer.body[start : start + size])
                    self.wfile.flush()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/slow.jpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ScratchDatabase:
    """A new, empty PostgreSQL database on the server of DATABASE_URL, owned by a role of its
    own (so that it can be cut off: ``cut``, ``restore``), for containers on the host's network.
    ``url`` connects as that role, ``admin_url`` as the server's superuser."""

    def __init__(self) -> None:
        base = os.environ.get("DATABASE_URL", "")
        if not base.startswith(("postgres://", "postgresql://")):
            message = "these container tests need PostgreSQL: set DATABASE_URL=postgres://..."
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        server = base.rsplit("/", 1)[0]
        self.name = f"container_{uuid.uuid4().hex[:10]}"
        scheme, _, rest = server.partition("://")
        self.url = f"{scheme}://{self.name}@{rest.rpartition('@')[2]}/{self.name}"
        self.admin_url = f"{server}/postgres"

    def _admin(self, *statements: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            for statement in statements:
                admin.execute(statement)  # type: ignore[call-overload]

    def create(self) -> None:
        self._admin(
            f'CREATE ROLE "{self.name}" LOGIN', f'CREATE DATABASE "{self.name}" OWNER "{self.name}"'
        )

    def cut(self) -> None:
        """The database goes away for the role: no new connection, the open ones closed."""
        self._admin(
            f'ALTER ROLE "{self.name}" NOLOGIN',
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{self.name}'",
        )

    def restore(self) -> None:
        self._admin(f'ALTER ROLE "{self.name}" LOGIN')

    def drop(self) -> None:
        self._admin(
            f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)',
            f'DROP ROLE IF EXISTS "{self.name}"',
        )


@contextlib.contextmanager
def scratch_database() -> Iterator[ScratchDatabase]:
    """A ScratchDatabase, dropped after."""
    database = ScratchDatabase()
    database.create()
    try:
        yield database
    finally:
        database.drop()


def request_log_rows(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as connection:
        row = connection.execute("SELECT count(*) FROM reporting_requestlog").fetchone()
    assert row is not None
    return int(row[0])
