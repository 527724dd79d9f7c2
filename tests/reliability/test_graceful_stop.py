"""A stopping server (SIGTERM, as Kubernetes and compose stop it) finishes the requests it has
started, writes their log rows, and exits within its graceful timeout."""

import concurrent.futures
import json
import signal
import threading
import time

import pytest

from reporting.models import RequestLog
from tests.support.fetch import LoopbackServer
from tests.support.http_client import classify_url, upload
from tests.support.images import encode, noise_image
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_sigterm_lets_requests_in_flight_finish_and_log(web_server, tiny_model):
    hanging = LoopbackServer()
    hanging.route("/slow.png", hang=True)
    try:
        server = web_server(
            workers=1,
            env={
                "IMAGE_FETCH_PRIVATE_ALLOWLIST": "127.0.0.0/8",
                "IMAGE_FETCH_TIMEOUT": "2",
                "WEB_GRACEFUL_TIMEOUT": "10",
            },
        )
        assert upload(server.url).status == 200
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            # In flight when the stop comes: it waits 2 s on the image server, then answers 504.
            slow = pool.submit(
                classify_url, server.url, f"http://127.0.0.1:{hanging.port}/slow.png"
            )
            time.sleep(0.5)
            stopping_at = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            answer = slow.result(timeout=30)
            server.process.wait(timeout=20)
            stopped_after = time.monotonic() - stopping_at
    finally:
        hanging.stop()
    assert answer.status == 504, answer.body
    assert answer.json()["error"]["code"] == "upstream_timeout"
    assert stopped_after < 10
    # Both rows are written: the upload's and the one finished while stopping.
    wait_for(lambda: RequestLog.objects.count() == 2, timeout=10)
    assert sorted(RequestLog.objects.values_list("status_code", flat=True)) == [200, 504]


@pytest.mark.parametrize("web_server_kind", ["granian", "gunicorn"])
def test_a_15_second_request_in_flight_at_sigterm_finishes_inside_the_grace_period(
    web_server, tiny_model, web_server_kind
):
    # WEB_GRACEFUL_TIMEOUT is the one figure both servers stop by; 25 s leaves the 15 s
    # fetch room to finish, where a fixed 10 or 20 s would not be enough for a slow one.
    image_server = LoopbackServer()
    image_server.route(
        "/slow.png", body=encode(noise_image(size=(32, 32), seed=7), "PNG"), delay=15.0
    )
    try:
        server = web_server(
            workers=1,
            env={
                "WEB_SERVER": web_server_kind,
                "IMAGE_FETCH_PRIVATE_ALLOWLIST": "127.0.0.0/8",
                "IMAGE_FETCH_TIMEOUT": "30",
                "WEB_GRACEFUL_TIMEOUT": "25",
            },
        )
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(
                classify_url, server.url, f"http://127.0.0.1:{image_server.port}/slow.png"
            )
            wait_for(lambda: image_server.hits("/slow.png") == 1, timeout=10)
            server.process.send_signal(signal.SIGTERM)
            answer = slow.result(timeout=60)
            returncode = server.process.wait(timeout=60)
    finally:
        image_server.stop()
    assert answer.status == 200, answer.body
    assert returncode == 0  # a graceful exit, not a worker killed at the timeout
    wait_for(lambda: RequestLog.objects.count() == 1, timeout=10)
    assert list(RequestLog.objects.values_list("status_code", flat=True)) == [200]


@pytest.mark.parametrize("web_server_kind", ["granian", "gunicorn"])
def test_both_servers_stop_by_web_graceful_timeout(web_server, tiny_model, web_server_kind):
    # The other side of the figure: a grace shorter than the request cuts it off, so both
    # servers do read WEB_GRACEFUL_TIMEOUT (and not a fixed figure of their own).
    image_server = LoopbackServer()
    image_server.route("/slow.png", hang=True)
    try:
        server = web_server(
            workers=1,
            env={
                "WEB_SERVER": web_server_kind,
                "IMAGE_FETCH_PRIVATE_ALLOWLIST": "127.0.0.0/8",
                "IMAGE_FETCH_TIMEOUT": "60",
                "WEB_GRACEFUL_TIMEOUT": "2",
            },
        )
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(
                classify_url, server.url, f"http://127.0.0.1:{image_server.port}/slow.png"
            )
            wait_for(lambda: image_server.hits("/slow.png") == 1, timeout=10)
            server.process.send_signal(signal.SIGTERM)
            # Stopped by the 2 s figure: the servers' own defaults (20 s) would still be waiting.
            server.process.wait(timeout=15)
            with pytest.raises(OSError):  # the connection closed without an answer
                slow.result(timeout=30)
    finally:
        image_server.stop()


def _spill_file(folder, name: str, request_ids: list[str]) -> None:
    from django.utils import timezone

    from reporting.log_writer import _row_record

    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        RequestLog(request_id=rid, processing_time=0.01, status_code=200, created_at=timezone.now())
        for rid in request_ids
    ]
    (folder / name).write_text("".join(json.dumps(_row_record(row)) + "\n" for row in rows))


def test_spill_files_of_dead_processes_are_written_at_start_and_at_stop(
    web_server, tiny_model, tmp_path
):
    spill = tmp_path / "request-log-spill"
    # Left by an earlier pod: a complete file, and one a process took and died with.
    _spill_file(spill, "1-4194400-aaaaaaaa.jsonl", [f"left-{n}" for n in range(5)])
    _spill_file(spill, "1-4194401-bbbbbbbb.jsonl.4194401.claimed", [f"taken-{n}" for n in range(3)])
    server = web_server(workers=2)
    wait_for(lambda: RequestLog.objects.count() == 8, timeout=30)
    assert not list(spill.iterdir())

    # Another replica's file arriving on the shared volume while this one runs: written by
    # the worker that stops with its own queue written.
    assert upload(server.url).status == 200
    _spill_file(spill, "2-4194402-cccccccc.jsonl", [f"late-{n}" for n in range(4)])
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) == 0
    assert RequestLog.objects.count() == 8 + 1 + 4
    assert not list(spill.glob("*.jsonl*"))
    assert RequestLog.objects.filter(request_id__startswith="late-").count() == 4


def test_sigterm_under_load_loses_no_row(web_server, tiny_model):
    server = web_server(workers=2, env={"WEB_GRACEFUL_TIMEOUT": "10"})
    stop = threading.Event()
    answered: list[int] = []
    failed: list[str] = []

    def client(seed: int) -> None:
        while not stop.is_set():
            try:
                answered.append(upload(server.url, seed=seed).status)
            except OSError as exc:  # refused once the server stopped listening
                failed.append(type(exc).__name__)
                return

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        for seed in range(6):
            pool.submit(client, seed)
        wait_for(lambda: len(answered) >= 30, timeout=60)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
        stop.set()
    # Every request that got an answer has its row; none was cut off mid-answer.
    assert RequestLog.objects.count() == len(answered)
    assert set(answered) <= {200}, answered
