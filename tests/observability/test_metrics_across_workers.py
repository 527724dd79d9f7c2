"""Two workers: one scrape adds up what both served; logs are JSON lines."""

import base64
import json
import os
import signal
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.images import image_bytes
from tests.support.models import TINY_LABELS
from tests.support.observability import CLASSIFY, value

pytestmark = pytest.mark.slow

WORKERS = 2


def classify(url: str, request_id: str) -> int:
    body = json.dumps({"image_base64": base64.b64encode(image_bytes()).decode()}).encode()
    request = urllib.request.Request(
        f"{url}/classify-image",
        data=body,
        headers={"Content-Type": "application/json", "X-Request-ID": request_id},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["X-Request-ID"] == request_id
        return response.status


def scrape(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
        return response.read().decode()


def json_lines(server) -> list[dict]:
    # LiteRT's C++ runtime may print its own plain lines to stderr; every line of ours is JSON.
    return [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]


def access_lines(server) -> list[dict]:
    return [r for r in json_lines(server) if r["logger"] == "core.access"]


def test_requests_served_by_both_workers_add_up_in_one_scrape(
    web_server, register_model, tiny_keras_path
):
    register_model(tiny_keras_path, name="tiny", labels=TINY_LABELS)
    server = web_server(workers=WORKERS, env={"LOG_LEVEL": "INFO", "LOG_FORMAT": "json"})

    sent = 0
    deadline = time.monotonic() + 60
    with ThreadPoolExecutor(max_workers=8) as pool:
        while len({r["process"] for r in access_lines(server)}) < WORKERS:
            assert time.monotonic() < deadline, "one worker never answered"
            ids = [f"obs-{sent + i}" for i in range(16)]
            assert set(pool.map(lambda i: classify(server.url, i), ids)) == {200}
            sent += len(ids)

    lines = access_lines(server)
    assert sorted(r["request_id"] for r in lines) == sorted(f"obs-{i}" for i in range(sent))
    assert {r["route"] for r in lines} == {CLASSIFY}
    assert all(r["status"] == 200 and r["model"] == "tiny" for r in lines)

    text = scrape(server.url)
    requests = "classifier_requests_total"
    assert value(text, requests, endpoint=CLASSIFY, status=200) == sent
    assert value(text, "classifier_predictions_total", model="tiny") == sent
    assert value(text, "classifier_model_served", model="tiny", version=1) == 1
    # Each worker loaded the model once.
    assert value(text, "classifier_model_load_seconds_count", model="tiny") == WORKERS

    # A worker that dies is replaced; what it counted still adds up.
    victim = lines[0]["process"]
    first = {r["process"] for r in lines}
    os.kill(victim, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while not any(
        r["message"].startswith("Started worker") and r["process"] not in (victim, *first)
        for r in json_lines(server)
    ):
        assert time.monotonic() < deadline, "the worker was not replaced"
        time.sleep(0.1)
    assert value(scrape(server.url), requests, endpoint=CLASSIFY, status=200) == sent


def test_the_server_writes_no_access_line_of_its_own(web_server, register_model, tiny_keras_path):
    register_model(tiny_keras_path, name="tiny", labels=TINY_LABELS)
    server = web_server(workers=1, env={"LOG_LEVEL": "INFO", "LOG_FORMAT": "json"})
    classify(server.url, "only-one")
    assert [r["request_id"] for r in access_lines(server)] == ["only-one"]
    assert not [r for r in json_lines(server) if r["logger"] == "granian.access"]
    assert any(r["logger"] == "_granian" for r in json_lines(server))  # its own lines: JSON too
