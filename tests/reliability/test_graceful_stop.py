"""A stopping server (SIGTERM, as Kubernetes and compose stop it) finishes the requests it has
started, writes their log rows, and exits within its graceful timeout."""

import concurrent.futures
import signal
import time

import pytest

from reporting.models import RequestLog
from tests.support.fetch import LoopbackServer
from tests.support.http_client import classify_url, upload
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
