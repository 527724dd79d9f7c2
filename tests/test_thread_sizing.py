"""LiteRT's threads per inference follow the CPUs each gunicorn worker has, unless set."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CPUS = len(os.sched_getaffinity(0))


def litert_threads(**env: str) -> int:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("WEB_CONCURRENCY", "LITERT_NUM_THREADS")
    }
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from django.conf import settings; print(settings.LITERT_NUM_THREADS)",
        ],
        cwd=ROOT,
        env={**environment, "DJANGO_SETTINGS_MODULE": "classifier_site.settings", **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("workers", [1, 2, 64])
def test_one_inference_uses_the_cpus_of_one_worker(workers):
    assert litert_threads(WEB_CONCURRENCY=str(workers)) == max(1, CPUS // workers)


def test_the_default_is_for_two_workers_and_a_setting_wins():
    assert litert_threads() == max(1, CPUS // 2)
    assert litert_threads(WEB_CONCURRENCY="1", LITERT_NUM_THREADS="3") == 3
