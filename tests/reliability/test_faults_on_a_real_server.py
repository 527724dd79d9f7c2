"""The faults of hostile load against the real service under gunicorn (2 workers x 4 threads,
as 'make run' starts it): slow image servers, a locked request-log table, a worker restart in
the middle of it, an over-size chunked body. Bounds on times are generous on purpose: each
proves a point (an answer in well under a second where it took the whole fault before)."""

import concurrent.futures
import signal
import time

import pytest

from reporting.models import RequestLog
from tests.support.db import request_log_locked
from tests.support.fetch import LoopbackServer
from tests.support.http_client import (
    classify_url,
    raw_chunked_post,
    send,
    upload,
    upload_body,
)
from tests.support.metrics import samples_sum
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SERVER_ENV = {"WEB_THREADS": "4", "REQUEST_LOG_RETRY_SECONDS": "0.1"}


def test_slow_image_servers_leave_probes_and_uploads_answering(web_server, tiny_model):
    drip = LoopbackServer()
    try:
        for index in range(8):  # 8 different URLs: no cache or single flight can merge them
            drip.route(f"/slow{index}.png", body=b"\x89PNG" + b"\0" * 40, drip_interval=0.5)
        server = web_server(
            workers=2,
            env={
                **SERVER_ENV,
                "IMAGE_FETCH_PRIVATE_ALLOWLIST": "127.0.0.0/8",
                "IMAGE_FETCH_TIMEOUT": "4",
                "IMAGE_FETCH_CONCURRENCY": "2",
                "IMAGE_FETCH_PER_CLIENT": "1",
                "NUM_PROXIES": "1",  # each attacker thread its own address, via the proxy header
            },
        )
        assert send(f"{server.url}/health/live").status == 200
        assert upload(server.url).status == 200  # the model is loaded in both workers
        pool = concurrent.futures.ThreadPoolExecutor(8)
        attacks = [
            pool.submit(
                classify_url,
                server.url,
                f"http://127.0.0.1:{drip.port}/slow{index}.png",
                **{"X-Forwarded-For": f"198.51.100.{index + 1}"},
            )
            for index in range(8)
        ]
        time.sleep(0.5)  # the fetches have started dripping
        probes = [send(f"{server.url}/health/live", timeout=10) for _ in range(5)]
        uploads = [upload(server.url, seed=seed) for seed in range(1, 4)]
        ready = [send(f"{server.url}/health/ready", timeout=10) for _ in range(4)]
        answers = [attack.result(timeout=30) for attack in attacks]
    finally:
        drip.stop()
    # Before the fetch slots, every thread was dripping: a probe waited the fetch timeout out.
    assert all(probe.status == 200 and probe.seconds < 1.0 for probe in probes), probes
    assert all(answer.status == 200 and answer.seconds < 1.0 for answer in uploads), uploads
    fetched = [a for a in answers if a.status == 504]
    busy = [a for a in answers if a.status == 503]
    assert len(fetched) + len(busy) == 8, [(a.status, a.body) for a in answers]
    assert len(fetched) <= 4  # 2 slots per worker
    assert busy and all(a.json()["error"]["code"] == "busy" for a in busy)
    assert all(a.headers["Retry-After"] == "2" for a in busy)
    # Full fetch slots are reported, not a reason to leave the Service: uploads still answer.
    assert all(r.status == 200 for r in ready), ready
    if len(fetched) == 4:  # both workers saturated: whichever answers the probe says so
        assert not ready[0].json()["checks"]["fetch_capacity"]["ok"]
        assert ready[0].json()["checks"]["fetch_capacity"]["required"] is False


def test_a_locked_log_table_delays_rows_not_answers_even_across_a_restart(
    web_server, tiny_model, tmp_path
):
    env = {**SERVER_ENV, "REQUEST_LOG_FLUSH_SECONDS": "1", "LOG_LEVEL": "INFO"}
    server = web_server(workers=2, env=env)
    sent = 0
    assert upload(server.url).status == 200
    sent += 1

    # 1. A 4 s lock: answers come at their usual speed, rows once it ends.
    with request_log_locked():
        started = time.monotonic()
        during = []
        while time.monotonic() - started < 4:
            during.append(upload(server.url, seed=len(during)))
            sent += 1
    assert all(a.status == 200 for a in during)
    assert max(a.seconds for a in during) < 1.0, [a.seconds for a in during]
    wait_for(lambda: RequestLog.objects.count() == sent, timeout=30)

    # 2. Locked again, and the workers are stopped: what they cannot write is spilled, and
    #    the next start writes it.
    with request_log_locked():
        for seed in range(10):
            assert upload(server.url, seed=100 + seed).status == 200
            sent += 1
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=30)
    assert RequestLog.objects.count() < sent  # (read after the lock: PostgreSQL's blocks reads)
    spilled = list((tmp_path / "request-log-spill").glob("*.jsonl"))
    assert spilled, server.log()
    restarted = web_server(workers=1, env=env)
    wait_for(lambda: RequestLog.objects.count() == sent, timeout=30)
    assert not list((tmp_path / "request-log-spill").glob("*.jsonl"))
    assert len(set(RequestLog.objects.values_list("request_id", flat=True))) == sent

    # 3. An over-size chunked body: a JSON 413 with its request id, row, access line and metric.
    body, headers = upload_body(b"\x89PNG" + b"\0" * 20_000_000)
    status, answer_headers, payload = raw_chunked_post(restarted.url, body, headers["Content-Type"])
    assert status == 413 and b'"payload_too_large"' in payload
    request_id = answer_headers["x-request-id"]
    wait_for(lambda: RequestLog.objects.filter(request_id=request_id).exists())
    row = RequestLog.objects.get(request_id=request_id)
    assert (row.status_code, row.error_code) == (413, "payload_too_large")
    assert "POST /classify-image 413" in restarted.log()
    metrics = send(f"{restarted.url}/metrics").body.decode()
    assert samples_sum(metrics, "classifier_requests_total", {"status": "413"}) >= 1
