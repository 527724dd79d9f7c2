"""The Docker image, built and run for real with podman: `pytest -m container`.

Builds the web image (the base image first, from a cached tarball or debootstrap:
deploy/image/base-image.sh) and the batch image, runs the web image as a development server
would be run, waits for /health/ready, classifies a photograph through it, checks that it
serves as a non-root user and holds no package manager, setuid file or training-only weight,
that PRODUCTION=1 refuses to start without proper secrets, and that stopping it (SIGTERM, as
`podman stop` and Kubernetes do) lets the requests in flight finish and loses no request-log
row. Needs root and podman (with runc and debootstrap): .ci/run installs them. Without them it
skips, except in CI (CI set), where it fails.
"""

import json
import subprocess
import threading
import time
import urllib.error
import uuid
from collections.abc import Iterator

import pytest

from tests.support.podman import (
    RUN_OPTIONS,
    STOP_TIMEOUT,
    SlowImageServer,
    classify,
    classify_url,
    container_running,
    exit_code,
    free_port,
    image_build,
    photo,
    request_log_rows,
    scratch_database,
    wait_ready,
)

IMAGE = "localhost/classifier-api:test"
BATCH_IMAGE = "localhost/classifier-api:batch-test"
# The README's promise for the web image, as `podman images` counts it (decimal MB).
MAX_IMAGE_MB = 450
# A secret that could be a production one: 50 characters and more, no placeholder.
GOOD_SECRET = "Qz7uVd3pW9mX2kL8rT4yN6bH1cJ5fG0sA-8eR3wY7iO2pU6tZ9x"

pytestmark = [pytest.mark.container, pytest.mark.slow]


@pytest.fixture(scope="module")
def image() -> str:
    return image_build(IMAGE)


@pytest.fixture(scope="module")
def batch_image(image: str) -> str:
    return image_build(BATCH_IMAGE, target="batch")


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    with container_running(image, "--cpus", "1", "-p", f"127.0.0.1:{port}:8000") as name:
        yield name, port


def _exec(name: str, script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["podman", "exec", name, "sh", "-c", script], capture_output=True, text=True
    )


def test_the_image_serves_classifications_offline_as_a_non_root_user(container):
    name, port = container
    ready = wait_ready(port)
    assert ready["checks"]["model"]["ok"] is True, ready
    assert "imagenet-lite0" in ready["checks"]["model"]["detail"]

    # The image's HEALTHCHECK (kept by --format docker), run by hand: podman schedules it with
    # systemd timers, which these machines lack.
    health = subprocess.run(["podman", "healthcheck", "run", name], capture_output=True, text=True)
    assert health.returncode == 0, health.stdout + health.stderr
    ready_check = subprocess.run(
        ["podman", "exec", name, "python", "/usr/local/bin/classifier-healthcheck", "ready"],
        capture_output=True,
        text=True,
    )
    assert ready_check.stdout.strip() == "healthy: HTTP 200", ready_check.stdout

    uids = _exec(name, "id -u; grep ^Uid: /proc/1/status").stdout.split()
    assert uids[0] != "0" and uids[2] != "0", uids  # the exec'd shell and the server (PID 1)
    # One worker for the one CPU the container was given (the entrypoint reads the quota).
    logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True).stdout
    assert "Starting granian: 1 workers" in logs

    dogs = classify(port, photo(), model="dog-breeds", top_k="2")
    assert dogs["model"]["name"] == "dog-breeds" and len(dogs["predictions"]) == 2
    answer = classify(port, photo())
    assert "cat" in answer["classification"], answer
    # The build quantizes as 'make run' does: the int8 file with the recorded fidelity report,
    # which answers by default.
    assert answer["model"]["name"] == "imagenet-lite0-int8"


def test_the_web_image_is_small_and_holds_nothing_serving_does_not_run(container, image):
    name, port = container
    wait_ready(port)  # every baked model registered from the files the image kept
    size = int(
        subprocess.run(
            ["podman", "image", "inspect", "--format", "{{.Size}}", image],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    print(f"{image}: {size / 1e6:.0f} MB")
    assert size <= MAX_IMAGE_MB * 1_000_000, f"{size / 1e6:.0f} MB"

    # No way to install or to become someone else: no pip, apt, dpkg, setuid or setgid file.
    tools = "python -m pip --version; command -v apt-get apt dpkg su mount passwd chsh newgrp"
    assert _exec(name, tools).stdout.strip() == ""
    setuid = _exec(name, "find / -xdev -type f -perm /6000 2>/dev/null")
    assert setuid.stdout.strip() == "", setuid.stdout
    # Neither pyarrow (the batch image has it) nor the models' Keras sources (build stage only).
    assert _exec(name, "python -c 'import pyarrow'").returncode != 0
    models = _exec(name, "ls /opt/classifier/models").stdout.split()
    assert models and all(model.endswith(".tflite") for model in models), models

    labels = json.loads(
        subprocess.run(
            ["podman", "image", "inspect", "--format", "{{json .Labels}}", image],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    for key in ("title", "description", "version", "revision", "created"):
        assert f"org.opencontainers.image.{key}" in labels, key


def test_the_batch_command_runs_in_the_batch_image(batch_image):
    """The Kubernetes Indexed Job runs predict_batch in the batch image: the code and pyarrow."""
    result = subprocess.run(
        ["podman", "run", "--rm", *RUN_OPTIONS, batch_image, "predict_batch", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--shard" in result.stdout


@pytest.mark.parametrize(
    ("secret_key", "refusal"),
    [
        (None, "SECRET_KEY must be set when PRODUCTION=1"),
        # The placeholder the Kubernetes example files carried, and a key too short to be one.
        ("CHANGE-ME-50-random-characters", "SECRET_KEY"),
        ("short-but-not-a-placeholder", "SECRET_KEY"),
    ],
    ids=["missing", "placeholder", "short"],
)
def test_production_refuses_to_start_without_a_real_secret_key(image, secret_key, refusal):
    environment = ["-e", "PRODUCTION=1", "-e", f"JWT_SIGNING_KEY={GOOD_SECRET}-jwt"]
    if secret_key is not None:
        environment += ["-e", f"SECRET_KEY={secret_key}"]
    result = subprocess.run(
        ["podman", "run", "--rm", *RUN_OPTIONS, *environment, image, "check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0, result.stdout[-2000:]
    assert refusal in result.stdout + result.stderr


def _host_network_options(port: int, database_url: str) -> list[str]:
    """The image on the host's network (so it reaches the host's PostgreSQL and a slow image
    server on loopback), two workers."""
    environment = {
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "DATABASE_URL": database_url,
        "WEB_CONCURRENCY": "2",
        "IMAGE_FETCH_PRIVATE_ALLOWLIST": "127.0.0.0/8",
        "IMAGE_FETCH_TIMEOUT": "40",
        "THROTTLE_ANON_RATE": "100000/minute",  # the load comes from one address
    }
    options = ["--network", "host"]
    return options + [arg for key, value in environment.items() for arg in ("-e", f"{key}={value}")]


@pytest.fixture
def host_network_server(image) -> Iterator[tuple[str, int, str]]:
    """The image on the host's network with a database of its own: (name, port, database)."""
    port = free_port()
    with (
        scratch_database() as database,
        container_running(image, *_host_network_options(port, database.url)) as name,
    ):
        wait_ready(port)
        yield name, port, database.url


def _stop(name: str) -> subprocess.CompletedProcess:
    """`podman stop` as the README runs the container: SIGTERM, SIGKILL after STOP_TIMEOUT."""
    return subprocess.run(
        ["podman", "stop", "-t", str(STOP_TIMEOUT), name], capture_output=True, text=True
    )


def test_a_15_second_request_in_flight_finishes_when_the_container_is_stopped(
    host_network_server,
):
    name, port, _database = host_network_server
    slow = SlowImageServer(seconds=15)
    answers: list[dict] = []
    errors: list[BaseException] = []

    def client() -> None:
        try:
            answers.append(classify_url(port, slow.url))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        assert slow.started.wait(30), "the server never asked for the slow image"
        stopped = _stop(name)  # returns once the container has exited
        thread.join(60)
    finally:
        slow.close()
    assert not errors, errors
    assert answers and answers[0]["predictions"], answers
    assert stopped.returncode == 0, stopped.stderr
    assert exit_code(name) == 0  # it exited by itself, not killed (137) at the stop timeout


def test_sigterm_under_load_fails_no_request_and_loses_no_log_row(host_network_server):
    """Kubernetes' order, played by hand: clients keep uploading while the pod's endpoints are
    withdrawn (the preStop sleep), then stop sending; two slow requests are still in flight
    when SIGTERM comes. Every request gets its answer and every answer is one row."""
    name, port, database = host_network_server
    slow = SlowImageServer(seconds=5)
    sending = threading.Event()
    sending.set()
    lock = threading.Lock()
    answered = 0
    failures: list[str] = []

    def uploader(worker: int) -> None:
        nonlocal answered
        shade = worker * 10_000
        while sending.is_set():
            shade += 1
            try:
                classify(port, photo(shade))
            except Exception as exc:
                failures.append(f"upload: {exc!r}")
                continue
            with lock:
                answered += 1

    def slow_client() -> None:
        nonlocal answered
        try:
            classify_url(port, slow.url)
        except Exception as exc:
            failures.append(f"slow: {exc!r}")
            return
        with lock:
            answered += 1

    uploaders = [threading.Thread(target=uploader, args=(n,)) for n in range(3)]
    for thread in uploaders:
        thread.start()
    try:
        time.sleep(4)  # load, then the preStop sleep begins: requests still arrive for a while
        slow_clients = [threading.Thread(target=slow_client) for _ in range(2)]
        for thread in slow_clients:
            thread.start()
        assert slow.started.wait(30)
        time.sleep(1)
        sending.clear()  # the endpoints are gone: no new request reaches the pod
        for thread in uploaders:
            thread.join(30)
        stopped = _stop(name)  # SIGTERM with the two slow requests in flight
        for thread in slow_clients:
            thread.join(60)
    finally:
        sending.clear()
        slow.close()
    assert not failures, failures[:5]
    assert stopped.returncode == 0 and exit_code(name) == 0
    assert answered > 10
    assert request_log_rows(database) == answered


def test_a_container_killed_mid_load_loses_no_row_once_a_new_one_starts(image):
    """The database goes away under load, so rows wait in the writers; the container is then
    killed (SIGKILL: an OOM kill, a node lost), its spill folder on a volume that outlives it.
    Once the database is back and a new container starts on that volume, every request that
    got an answer (whatever its status) is one row."""
    port = free_port()
    volume = f"classifier-test-var-{uuid.uuid4().hex[:8]}"
    subprocess.run(["podman", "volume", "create", volume], check=True, capture_output=True)
    sending = threading.Event()
    sending.set()
    answered = 0
    lock = threading.Lock()

    def uploader(worker: int) -> None:
        nonlocal answered
        shade = worker * 10_000
        while sending.is_set():
            shade += 1
            try:
                classify(port, photo(shade))
            except urllib.error.HTTPError:
                pass  # an answer too (and a row)
            except OSError:
                continue  # no answer: the container is gone
            with lock:
                answered += 1

    try:
        with scratch_database() as database:
            options = [
                *_host_network_options(port, database.url),
                "-v",
                f"{volume}:/var/lib/classifier",
            ]
            with container_running(image, *options) as first:
                wait_ready(port)
                uploaders = [threading.Thread(target=uploader, args=(n,)) for n in range(3)]
                for thread in uploaders:
                    thread.start()
                time.sleep(3)
                database.cut()
                time.sleep(3)
                subprocess.run(
                    ["podman", "kill", "-s", "KILL", first], check=True, capture_output=True
                )
                sending.clear()
                for thread in uploaders:
                    thread.join(30)
            database.restore()
            assert answered > 10
            with container_running(image, *options):
                wait_ready(port)
                deadline = time.monotonic() + 60
                while request_log_rows(database.url) < answered and time.monotonic() < deadline:
                    time.sleep(1)
                assert request_log_rows(database.url) == answered
    finally:
        sending.clear()
        subprocess.run(["podman", "volume", "rm", "-f", volume], capture_output=True)


def test_production_without_a_tls_proxy_is_reported_unhealthy_not_green(image):
    """PRODUCTION=1 redirects plain HTTP to HTTPS; with no TLS proxy in front (compose's
    PRODUCTION=1 on its own) every client gets that redirect, and so does the healthcheck."""
    secrets = ["-e", f"SECRET_KEY={GOOD_SECRET}", "-e", f"JWT_SIGNING_KEY={GOOD_SECRET}-jwt"]
    check = ["python", "/usr/local/bin/classifier-healthcheck"]
    with container_running(image, "-e", "PRODUCTION=1", *secrets) as name:
        deadline = time.monotonic() + 120
        while True:
            said = subprocess.run(["podman", "exec", name, *check], capture_output=True, text=True)
            if "HTTP" in said.stdout or time.monotonic() > deadline:  # the server answers
                break
            time.sleep(1)
        assert said.returncode == 1, said.stdout
        assert "unhealthy: HTTP 301 redirect to https://localhost/health/live" in said.stdout
        # The image's HEALTHCHECK is that same command.
        health = subprocess.run(["podman", "healthcheck", "run", name], capture_output=True)
        assert health.returncode != 0
