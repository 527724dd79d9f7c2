"""The Docker image, built and run for real with podman: `pytest -m container`.

Builds the image (the base image first, from a cached tarball or debootstrap:
deploy/image/base-image.sh), runs it as a development server would be run, waits for
/health/ready, classifies a photograph through it, checks it serves as a non-root user, that
PRODUCTION=1 refuses to start without its secrets, and stops it. Needs root and podman (with
runc and debootstrap): .ci/run installs them. Without them it skips, except in CI (CI set),
where it fails.
"""

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/classifier-api:test"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# podman as root on these machines: runc, and limits the container may have.
RUN_OPTIONS = ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]

pytestmark = [pytest.mark.container, pytest.mark.slow]


def _missing() -> str | None:
    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install podman runc debootstrap)"
    if os.geteuid() != 0:
        return "podman builds this image as root here (rootless podman is not set up)"
    if shutil.which("runc") is None:
        return "runc is not installed (apt-get install runc)"
    return None


@pytest.fixture(scope="module")
def image() -> str:
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so the container test must run: {missing}")
        print(f"Skipping the container test: {missing}")
        pytest.skip(missing)
    subprocess.run([str(ROOT / "deploy/image/base-image.sh")], check=True, cwd=ROOT)
    command = ["podman", "build", "--pull=never", "--format", "docker", *RUN_OPTIONS, "-t", IMAGE]
    if CA_BUNDLE.exists():  # HTTPS to PyPI inside the build trusts what this machine trusts
        command += ["--secret", f"id=pip_ca,src={CA_BUNDLE}"]
    started = time.monotonic()
    subprocess.run([*command, str(ROOT)], check=True, cwd=ROOT)
    print(f"podman build took {time.monotonic() - started:.0f} s")
    return IMAGE


def _free_port() -> int:
    """A free port in 19000-19999 (the range this project's machines leave to tests)."""
    for port in range(19000 + os.getpid() % 900, 20000):
        with contextlib.closing(socket.socket()) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 19000-19999")


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[tuple[str, int]]:
    name = f"classifier-test-{uuid.uuid4().hex[:8]}"
    port = _free_port()
    publish = f"127.0.0.1:{port}:8000"
    subprocess.run(
        ["podman", "run", "-d", "--name", name, *RUN_OPTIONS, "--cpus", "1", "-p", publish, image],
        check=True,
        capture_output=True,
    )
    try:
        yield name, port
    finally:
        logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True)
        print(logs.stdout[-3000:], logs.stderr[-3000:])
        subprocess.run(["podman", "rm", "-f", "-t", "5", name], capture_output=True)


def _get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _wait_ready(port: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            status, body = _get(port, "/health/ready")
            if status == 200:
                return body
            last = body
        except (OSError, ValueError) as exc:  # not listening yet
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"/health/ready did not answer 200 within {timeout} s: {last}")


def _photo() -> bytes:
    from PIL import Image
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buffer, "JPEG", quality=90)  # a cat
    return buffer.getvalue()


def _classify(port: int, image: bytes, **fields: str) -> dict:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="cat.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode()
        + image
        + b"\r\n"
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/classify-image",
        data=b"".join(parts) + f"--{boundary}--\r\n".encode(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        return json.loads(response.read())


def test_the_image_serves_classifications_offline_as_a_non_root_user(container):
    name, port = container
    ready = _wait_ready(port)
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

    # The build quantizes as 'make run' does: the int8 file with the recorded fidelity report,
    # which answers by default.
    answer = _classify(port, _photo())
    assert answer["model"]["name"] == "imagenet-lite0-int8"
    assert "cat" in answer["classification"], answer
    dogs = _classify(port, _photo(), model="dog-breeds", top_k="2")
    assert dogs["model"]["name"] == "dog-breeds" and len(dogs["predictions"]) == 2

    uids = subprocess.run(
        ["podman", "exec", name, "sh", "-c", "id -u; grep ^Uid: /proc/1/status"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert uids[0] != "0" and uids[2] != "0", uids  # the exec'd shell and the server (PID 1)
    # One worker for the one CPU the container was given (the entrypoint reads the quota).
    logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True).stdout
    assert "Starting granian: 1 workers" in logs


def test_production_refuses_to_start_without_its_secrets(image):
    result = subprocess.run(
        ["podman", "run", "--rm", *RUN_OPTIONS, "-e", "PRODUCTION=1", image, "check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be set when PRODUCTION=1" in result.stdout + result.stderr


def test_the_batch_command_runs_in_the_image(image):
    """The Kubernetes Indexed Job runs predict_batch in this image: its code and pyarrow are in."""
    result = subprocess.run(
        ["podman", "run", "--rm", *RUN_OPTIONS, image, "predict_batch", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--shard" in result.stdout
