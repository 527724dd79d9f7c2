"""'export_events --follow' as a long-running process: an unreachable Elasticsearch means retries
with back-off, never an exit, and its own GET /health/live says whether its loop is turning."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from core.liveness_server import liveness_server_start
from reporting import metrics
from reporting.export import Sender, export_backoff_delay
from tests.support.paths import ROOT


@pytest.fixture
def refusing_url() -> Iterator[str]:
    """An Elasticsearch URL on a loopback port that is bound but not listening: every
    connection is refused at once (and no other process can take the port meanwhile)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_follow_retries_an_unreachable_elasticsearch_and_stays_alive(refusing_url):
    env = {
        **os.environ,
        "ELASTICSEARCH_URL": refusing_url,
        "ELASTICSEARCH_EXPORT_INTERVAL": "0.05",
        "ELASTICSEARCH_EXPORT_MAX_BACKOFF": "0.2",
        "EXPORT_HEALTH_PORT": "0",  # any free port; the command says which
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "export_events", "--follow"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        match = re.search(r"liveness at (http://\S+/health/live)", first_line)
        assert match, first_line
        deadline = time.monotonic() + 60
        while True:  # until it has failed and retried a few times
            status, body = get_json(match[1])
            if body["failures_in_a_row"] >= 4 or time.monotonic() > deadline:
                break
            time.sleep(0.1)

        assert process.poll() is None  # still running: no exit 1
        assert status == 200
        assert body["status"] == "ok" and body["following"] is True
        assert body["failures_in_a_row"] >= 4
        assert "ConnectionError" in body["last_error"]
        assert 0 < body["next_retry_in"] <= 0.2
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "Elasticsearch export failed (1 in a row" in stderr
    assert "retrying in" in stderr


@pytest.mark.django_db(transaction=True)
def test_failed_rounds_are_counted_and_the_wait_is_a_gauge(settings, refusing_url):
    settings.ELASTICSEARCH_URL = refusing_url
    settings.ELASTICSEARCH_EXPORT_INTERVAL = 0.05
    settings.ELASTICSEARCH_EXPORT_MAX_BACKOFF = 0.2
    failures_before = metrics.EXPORT_FAILURES._value.get()
    sender = Sender()
    thread = threading.Thread(target=sender.run_forever, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while sender.failures_in_a_row < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sender.failures_in_a_row >= 3
        assert metrics.EXPORT_FAILURES._value.get() - failures_before >= 3
        assert 0 < metrics.EXPORT_RETRY_SECONDS._value.get() <= 0.2
    finally:
        sender.request_stop()
        thread.join(30)
    assert not thread.is_alive()
    assert sender.liveness()[0] is False  # stopped: no longer following


def test_backoff_doubles_up_to_its_cap_with_jitter():
    for attempt in range(1, 12):
        step = min(30.0, 1.0 * 2**attempt)
        for _ in range(50):
            assert step / 2 <= export_backoff_delay(attempt=attempt, base=1.0, cap=30.0) <= step
    delays = {export_backoff_delay(attempt=9, base=1.0, cap=30.0) for _ in range(20)}
    assert len(delays) > 1  # jittered, not the same instant for every sender
    assert export_backoff_delay(attempt=10_000, base=1.0, cap=30.0) <= 30.0


@pytest.fixture
def served() -> Iterator[tuple[Sender, str]]:
    sender = Sender()
    server = liveness_server_start(host="127.0.0.1", port=0, liveness=sender.liveness)
    yield sender, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_liveness_is_200_while_the_loop_turns_and_503_once_it_stalls(settings, served):
    sender, base = served
    settings.EXPORT_HEALTH_STALE_SECONDS = 120.0

    assert get_json(f"{base}/health/live")[0] == 503  # not following yet
    sender.following = True
    sender.last_progress = time.monotonic()
    status, body = get_json(f"{base}/health/live")
    assert status == 200 and body["status"] == "ok"

    sender.last_progress = time.monotonic() - 121  # stuck in a call for longer than the bound
    status, body = get_json(f"{base}/health/live")
    assert status == 503 and body["status"] == "stalled"
    assert body["seconds_since_progress"] >= 121


def test_the_liveness_server_answers_only_its_path(served):
    _, base = served
    status, body = get_json(f"{base}/metrics")
    assert status == 404
    assert body["error"]["code"] == "not_found"
