"""image_url traffic against the real service with its default fetch capacity: ordinary clients
never see 503 ``busy``; slow image servers cost their senders, not everyone else.

Each client has its own address (X-Forwarded-For through one trusted proxy), as on the
internet; every request names a URL not fetched before (its query), so each one is fetched.
"""

import concurrent.futures
import itertools
import os
import threading
import time

import pytest

from tests.support.fetch import LoopbackServer
from tests.support.http_client import Answer, classify_url, send, upload
from tests.support.images import encode, noise_image

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# The 30 s in 'make bench' (FETCH_LOAD_SECONDS=30); a third of it in CI.
LOAD_SECONDS = float(os.environ.get("FETCH_LOAD_SECONDS", "10"))
CLIENTS = 16
# The service's own defaults for threads and fetch slots: the fixture's test-wide overrides
# are emptied, so the settings fall back to what 'make run' uses.
DEFAULTS = {
    "WEB_THREADS": "",
    "IMAGE_FETCH_CONCURRENCY": "",
    "IMAGE_FETCH_PER_CLIENT": "",
    "IMAGE_FETCH_PRIVATE_ALLOWLIST": "127.0.0.0/8",
    "NUM_PROXIES": "1",
}


def p99(answers: list[Answer]) -> float:
    seconds = sorted(answer.seconds for answer in answers)
    return seconds[max(0, int(len(seconds) * 0.99) - 1)]


def clients_fetching(url: str, image_url: str, *, seconds: float) -> list[Answer]:
    """CLIENTS clients, each on its own address, fetching new URLs back to back."""
    counter = itertools.count()
    until = time.monotonic() + seconds

    def client(index: int) -> list[Answer]:
        answers = []
        while time.monotonic() < until:
            answers.append(
                classify_url(
                    url,
                    f"{image_url}?n={next(counter)}",
                    **{"X-Forwarded-For": f"198.51.100.{index + 1}"},
                )
            )
        return answers

    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        return [a for answers in pool.map(client, range(CLIENTS)) for a in answers]


@pytest.fixture
def image_host() -> LoopbackServer:
    host = LoopbackServer()
    host.route("/photo.png", body=encode(noise_image(size=(64, 64), seed=7), "PNG"))
    yield host
    host.stop()


def test_sixteen_clients_fetching_from_a_fast_server_never_see_busy(
    web_server, tiny_model, image_host
):
    server = web_server(workers=2, env=DEFAULTS)
    assert upload(server.url).status == 200
    answers = clients_fetching(
        server.url, f"http://127.0.0.1:{image_host.port}/photo.png", seconds=LOAD_SECONDS
    )
    statuses = {
        status: sum(a.status == status for a in answers) for status in {a.status for a in answers}
    }
    assert statuses == {200: len(answers)}, statuses
    assert len(answers) > 100  # it was load, not a trickle


def test_slow_drip_servers_leave_the_other_clients_tails_alone(web_server, tiny_model, image_host):
    drip = LoopbackServer()
    for index in range(50):  # 50 URLs: no cache or single flight can merge them
        drip.route(f"/slow{index}.png", body=b"\x89PNG" + b"\0" * 60, drip_interval=0.5)
    server = web_server(workers=2, env={**DEFAULTS, "IMAGE_FETCH_TIMEOUT": "30"})
    photo = f"http://127.0.0.1:{image_host.port}/photo.png"
    try:
        assert upload(server.url).status == 200
        before = clients_fetching(server.url, photo, seconds=LOAD_SECONDS / 2)

        # 50 slow-drip fetches from 5 addresses, 10 each, held for the whole second phase.
        attack_pool = concurrent.futures.ThreadPoolExecutor(50)
        started = threading.Event()

        def attack(index: int) -> Answer:
            started.set()
            return classify_url(
                server.url,
                f"http://127.0.0.1:{drip.port}/slow{index}.png",
                **{"X-Forwarded-For": f"203.0.113.{index % 5 + 1}"},
            )

        attacks = [attack_pool.submit(attack, index) for index in range(50)]
        started.wait(5)
        time.sleep(0.5)  # the fetches are dripping
        during = clients_fetching(server.url, photo, seconds=LOAD_SECONDS / 2)
        held = sum(not attack.done() for attack in attacks)
        probe = send(f"{server.url}/health/live")
    finally:
        drip.stop()  # ends the dripping fetches
    answers = [attack.result(timeout=60) for attack in attacks]
    attack_pool.shutdown()

    assert {a.status for a in before} == {200}
    assert {a.status for a in during} == {200}, [a.body for a in during if a.status != 200][:3]
    assert p99(during) < 2 * max(p99(before), 0.05), (p99(before), p99(during))
    assert probe.status == 200
    # Each attacking address held its own fetch slots (4 at a time in each of the 2 worker
    # processes), no more; the rest of its URLs were answered busy at once, with Retry-After.
    assert 0 < held <= 40, held
    busy = [a for a in answers if a.status == 503]
    assert len(busy) >= 10 and all(a.json()["error"]["code"] == "busy" for a in busy)
    assert all(a.headers.get("Retry-After") for a in busy)
