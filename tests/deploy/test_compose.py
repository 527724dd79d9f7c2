"""The compose file, brought up for real with podman-compose: `pytest -m container`.

Web, PostgreSQL and Redis, the latter two from images built here from Debian's packages
(deploy/docker-compose.debian.yml: no registry is reachable), with the setup job; then a
classification through the published port, a stop, and the request-log rows counted in the
stack's PostgreSQL. The images come from podman's layer cache after the first build.
"""

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.paths import ROOT
from tests.support.podman import classify, exit_code, free_port, image_build, photo, wait_ready

pytestmark = [pytest.mark.container, pytest.mark.slow]

COMPOSE_FILES = ["deploy/docker-compose.yml", "deploy/docker-compose.debian.yml"]
# podman on these machines: runc, and limits a container may have (the tests' RUN_OPTIONS).
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
"""


def _podman_compose() -> str:
    path = shutil.which(
        "podman-compose", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    )
    if path is None:
        message = "podman-compose is not installed (make test installs it: requirements-test.txt)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[tuple[list[str], dict[str, str], str, int]]:
    """The stack up: (the podman-compose command, its environment, project name, web port)."""
    compose = _podman_compose()
    web_image = image_build("localhost/classifier-api:test")
    services = ROOT / "deploy/image/services"
    image_build("localhost/classifier-postgres:15", target="postgres", context=services)
    image_build("localhost/classifier-redis:7", target="redis", context=services)
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    project = f"classifier-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    environment = {
        **os.environ,
        "CONTAINERS_CONF": str(conf),
        "CLASSIFIER_IMAGE": web_image,
        "WEB_PORT": str(port),
    }
    command = [compose, "-p", project, *(arg for f in COMPOSE_FILES for arg in ("-f", f))]
    up = subprocess.run(
        [*command, "up", "-d", "--no-build", "postgres", "redis", "setup", "web"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield command, environment, project, port
    finally:
        logs = subprocess.run(
            [*command, "logs", "setup", "web"],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            text=True,
        )
        print(logs.stdout[-5000:], logs.stderr[-2000:])
        subprocess.run(
            [*command, "down", "-v", "-t", "5"],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            timeout=300,
        )


def test_the_compose_stack_classifies_an_upload_and_logs_every_request(stack):
    command, environment, project, port = stack
    ready = wait_ready(port, timeout=240)
    assert ready["checks"]["model"]["ok"] is True, ready
    answers = [classify(port, photo(shade)) for shade in range(3)]
    assert all("cat" in answer["classification"] for answer in answers), answers

    stopped = subprocess.run(
        [*command, "stop", "web"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert exit_code(f"{project}_web_1") == 0  # a graceful stop, not a kill
    rows = subprocess.run(
        [
            "podman",
            "exec",
            f"{project}_postgres_1",
            "psql",
            "-U",
            "classifier",
            "-d",
            "classifier",
            "-tAc",
            "SELECT count(*) FROM reporting_requestlog",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    assert int(rows.stdout.strip()) == len(answers)
