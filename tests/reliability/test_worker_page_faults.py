"""Uncached uploads of an ordinary photo reuse the worker's heap instead of giving it back to
the system and faulting it in again on every request (glibc's trim threshold; see
classifier_site/gunicorn.py's post_fork)."""

import uuid
from pathlib import Path

import pytest

from tests.support.http_client import upload
from tests.support.images import encode, noise_image

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Far above what an upload of the 640 x 480 photos below takes with the trim threshold, far
# below what it takes without it (glibc's 128 kB once the mmap threshold is fixed); both
# figures are in docs/performance.md.
MAX_FAULTS_PER_UPLOAD = 100


def minor_faults(master_pid: int) -> int:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    # Field 10 of /proc/PID/stat (after the parenthesised name): minor faults.
    return sum(
        int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7]) for pid in children
    )


def test_uncached_uploads_do_not_fault_their_memory_in_every_time(web_server, tiny_model):
    server = web_server(workers=1, env={"CACHE_KEY_PREFIX": f"faults-test-{uuid.uuid4().hex}"})
    photos = [encode(noise_image(size=(640, 480), seed=seed), "JPEG") for seed in range(40)]
    for photo in photos[:10]:  # the worker's arenas reach their working size
        assert upload(server.url, image=photo).status == 200

    before = minor_faults(server.process.pid)
    answers = [upload(server.url, image=photo) for photo in photos[10:]]
    faults = minor_faults(server.process.pid) - before

    assert [answer.status for answer in answers] == [200] * 30
    assert all(answer.json()["cached"] is False for answer in answers)
    assert faults / 30 < MAX_FAULTS_PER_UPLOAD, faults
