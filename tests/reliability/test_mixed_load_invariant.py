"""Rows = requests under a minute of mixed load, with Redis killed and the log table locked in
the middle: every answer the clients saw is one request-log row once the faults end."""

import threading
import time

import pytest

from bench.loopback import serve_files
from reporting.models import RequestLog
from tests.support.db import request_log_locked
from tests.support.http_client import Answer, classify_url, send, upload
from tests.support.images import encode, noise_image
from tests.support.redis import OwnRedis
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LOAD_SECONDS = 60
CLIENTS = 4


def test_every_request_is_one_row_through_a_redis_kill_and_a_table_lock(
    web_server, tiny_model, tmp_path
):
    redis = OwnRedis(tmp_path)  # a Redis of this test's own, so killing it harms nobody else
    redis.start()
    photo = encode(noise_image(size=(48, 48), seed=7), "PNG")
    with serve_files({"/same.png": photo}, fallback=lambda path: photo + path.encode()) as images:
        server = web_server(
            workers=2,
            env={
                "WEB_THREADS": "4",
                "REDIS_URL": redis.url,
                "CACHE_BREAKER_SECONDS": "0.5",
                "IMAGE_FETCH_PRIVATE_ALLOWLIST": "127.0.0.0/8",
                "REQUEST_LOG_RETRY_SECONDS": "0.1",
            },
        )
        answers: list[Answer] = []
        lock = threading.Lock()
        stop = threading.Event()

        def client(number: int) -> None:
            sent = 0
            while not stop.is_set():
                sent += 1
                kind = sent % 4
                if kind == 0:  # a URL hit (after the first), then URL misses with new bytes
                    answer = classify_url(server.url, f"{images.url}/same.png")
                elif kind == 1:
                    answer = classify_url(server.url, f"{images.url}/new/{number}-{sent}.png")
                elif kind == 2:  # a content hit
                    answer = upload(server.url, image=photo)
                else:  # an upload never seen before
                    answer = upload(server.url, seed=number * 1_000_000 + sent)
                with lock:
                    answers.append(answer)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        try:
            time.sleep(LOAD_SECONDS * 0.25)
            redis.stop()  # killed under load
            time.sleep(LOAD_SECONDS * 0.25)
            with request_log_locked():  # and the log table locked for 5 s
                time.sleep(5)
            time.sleep(LOAD_SECONDS * 0.25 - 5)
            redis.start()  # back, empty, on the same port
            time.sleep(max(0.0, LOAD_SECONDS - (time.monotonic() - started)))
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
            redis.stop()

    statuses = {answer.status for answer in answers}
    assert statuses == {200}, sorted((a.status, a.body[:200]) for a in answers if a.status != 200)
    assert len(answers) > 100  # it was load, not a trickle
    # Every answer is one row, written after the faults end (read after the lock is gone).
    wait_for(lambda: RequestLog.objects.count() == len(answers), timeout=60)
    assert send(f"{server.url}/health/live").status == 200
