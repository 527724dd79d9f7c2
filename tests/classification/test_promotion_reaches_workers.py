"""A promotion reaches every worker of a running service without a restart."""

import base64
import json
import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from classification.registry.services import model_version_promote
from tests.support.images import image_bytes
from tests.support.models import TINY_LABELS

pytestmark = pytest.mark.slow

WORKERS = 2


def classify(url: str) -> dict:
    body = json.dumps({"image_base64": base64.b64encode(image_bytes()).decode()}).encode()
    request = urllib.request.Request(
        f"{url}/classify-image", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def workers_serving(server, version: int) -> set[str]:
    """Process ids of the workers that logged loading ``version`` of the tiny model."""
    return set(
        re.findall(
            rf"\[(\d+)\] classification\.serving\.engine Serving tiny v{version} ", server.log()
        )
    )


def classify_until_every_worker_serves(server, version: int) -> list[int]:
    """Send concurrent requests (one batch at least) until every worker logs that it serves
    ``version`` (workers that load it as they start may have logged it already)."""
    answered: list[int] = []
    deadline = time.monotonic() + 30
    with ThreadPoolExecutor(max_workers=8) as pool:
        while True:
            batch = pool.map(lambda _: classify(server.url), range(16))
            answered.extend(answer["model"]["version"] for answer in batch)
            if len(workers_serving(server, version)) >= WORKERS or time.monotonic() > deadline:
                return answered
            time.sleep(0.1)


def test_promotion_reaches_every_worker(web_server, register_model, tiny_keras_path):
    register_model(tiny_keras_path, name="tiny", labels=TINY_LABELS)
    second = register_model(tiny_keras_path, name="tiny", labels=TINY_LABELS, stage="staging")
    server = web_server(workers=WORKERS, env={"LOG_LEVEL": "INFO"})

    assert set(classify_until_every_worker_serves(server, 1)) == {1}
    assert len(workers_serving(server, 1)) == WORKERS

    model_version_promote(model_version=second)
    classify_until_every_worker_serves(server, 2)
    assert workers_serving(server, 2) == workers_serving(server, 1)  # the same, unrestarted
    # From now on, every answer from any worker comes from version 2.
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert {
            a["model"]["version"] for a in pool.map(lambda _: classify(server.url), range(16))
        } == {2}
