"""The image's helper scripts, run here as the image runs them (no container needed):
the healthcheck, the start-up wait and the pick of served model files."""

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.paths import ROOT
from tests.support.podman import free_port, scratch_database

IMAGE_SCRIPTS = ROOT / "deploy" / "image"


@pytest.fixture
def answering() -> Iterator[tuple[int, list[dict], list[int]]]:
    """A server answering GET with the status in ``status[0]``; ``seen``: each request's headers."""
    seen: list[dict] = []
    status = [200]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({"path": self.path, **dict(self.headers)})
            self.send_response(status[0])
            if 300 <= status[0] < 400:
                self.send_header("Location", "https://localhost/health/live")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], seen, status
    finally:
        server.shutdown()
        server.server_close()


def _healthcheck(port: int, *args: str, **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(IMAGE_SCRIPTS / "healthcheck.py"), *args],
        env={**os.environ, "PORT": str(port), **environment},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_healthcheck_is_green_only_on_a_200_asked_as_a_client_would(answering):
    port, seen, status = answering
    result = _healthcheck(port)
    assert (result.returncode, result.stdout.strip()) == (0, "healthy: HTTP 200")
    assert seen[-1]["path"] == "/health/live" and seen[-1]["Host"] == "localhost"
    assert "X-Forwarded-Proto" not in seen[-1]  # no proxy said to be in front: plain HTTP

    status[0] = 301  # PRODUCTION's HTTPS redirect of a plain-HTTP request
    result = _healthcheck(port, "ready")
    assert result.returncode == 1
    assert "unhealthy: HTTP 301 redirect to https://localhost/health/live" in result.stdout
    assert "SECURE_PROXY_SSL_HEADER=1" in result.stdout
    assert seen[-1]["path"] == "/health/ready"

    status[0] = 200  # behind a TLS proxy: the check sends what the proxy sends
    result = _healthcheck(port, SECURE_PROXY_SSL_HEADER="1")
    assert result.returncode == 0 and seen[-1]["X-Forwarded-Proto"] == "https"


def test_the_sender_healthcheck_asks_the_senders_own_port(answering):
    port, seen, status = answering
    result = _healthcheck(free_port(), "sender", EXPORT_HEALTH_PORT=str(port))
    assert (result.returncode, result.stdout.strip()) == (0, "healthy: HTTP 200")
    assert seen[-1]["path"] == "/health/live"

    status[0] = 503  # its loop stalled
    assert _healthcheck(free_port(), "sender", EXPORT_HEALTH_PORT=str(port)).returncode == 1


def test_the_healthcheck_is_red_when_nothing_listens():
    result = _healthcheck(free_port())
    assert result.returncode == 1 and result.stdout.startswith("unhealthy:")


def _wait(what: str, database_url: str, **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(IMAGE_SCRIPTS / "wait.py"), what],
        env={
            **os.environ,
            "APP_DIR": str(ROOT),
            "DATABASE_URL": database_url,
            "STARTUP_WAIT_TIMEOUT": "2",
            **environment,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_start_up_wait_gives_up_in_time_saying_what_it_waited_for(tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"format": 1, "versions": [{"name": "dog-breeds"}]}))
    with scratch_database() as database:
        assert _wait("database", database.url).returncode == 0  # it answers
        empty = _wait("setup", database.url, MODEL_MANIFEST=str(manifest))
        assert empty.returncode == 1
        assert "migrations not applied yet" in empty.stdout
        assert "Gave up after 2 s (STARTUP_WAIT_TIMEOUT)" in empty.stderr

        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": database.url},
            check=True,
        )
        migrated = _wait("setup", database.url, MODEL_MANIFEST=str(manifest))
        assert migrated.returncode == 1
        assert "baked models not registered yet: dog-breeds" in migrated.stdout
        assert _wait("setup", database.url, MODEL_MANIFEST="").returncode == 0

        database.cut()
        gone = _wait("database", database.url)
        assert gone.returncode == 1 and "the database does not answer" in gone.stdout
