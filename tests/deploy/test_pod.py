"""The production pods as the rendered manifests describe them, run with podman: `pytest -m
container`.

No cluster here, so the test plays the kubelet: from the production overlay's web Deployment and
migrations Job it takes each container's command, its settings (the generated ConfigMap and
Secret), its user, read-only root file system, dropped capabilities, CPU and memory limits and
volumes (an emptyDir as a tmpfs, the spill PersistentVolumeClaim as a folder kept between
containers), and runs them in the order Kubernetes would: the web pod's init container waits on
an empty database, the Job migrates, the init container lets the pod start, the startup and
liveness probes pass as the kubelet asks them, a classification is logged, and a stop within
terminationGracePeriodSeconds ends the server cleanly with its row in the database. The one
liberty: the host's network (PostgreSQL listens on loopback), so the server's port is a free one.
"""

import base64
import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from reporting.models import RequestLog
from tests.deploy.test_container import image  # noqa: F401 (the fixture: one build for both)
from tests.deploy.test_manifests import by_kind_and_name, k8s_copy, render
from tests.support.db import empty_postgres_database
from tests.support.podman import RUN_OPTIONS, free_port, photo

pytestmark = [pytest.mark.container, pytest.mark.slow]


@pytest.fixture
def database() -> Iterator[str]:
    """A new, empty PostgreSQL database (the pods' DATABASE_URL), dropped afterwards."""
    with empty_postgres_database("pod") as url:
        yield url


@pytest.fixture
def manifests(tmp_path: Path, database: str) -> dict[tuple[str, str], dict]:
    """The production overlay rendered with a secrets.env an operator would write."""
    k8s = k8s_copy(tmp_path)
    values = {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "JWT_SIGNING_KEY": secrets.token_urlsafe(50),
        "DATABASE_URL": database,
        "REDIS_URL": os.environ.get("REDIS_URL", ""),
        "ELASTICSEARCH_API_KEY": "",
        "METRICS_TOKEN": secrets.token_urlsafe(32),
    }
    (k8s / "components/secrets-file/secrets.env").write_text(
        "".join(f"{key}={value}\n" for key, value in values.items())
    )
    return by_kind_and_name(render(k8s / "overlays/production"))


def podman_options(
    manifests: dict, pod: dict, container: dict, folder: Path, port: int
) -> list[str]:
    """podman run options for one container of a pod template, as the kubelet would run it."""
    env: dict[str, str] = {}
    for source in container["envFrom"]:
        if "configMapRef" in source:
            env |= manifests[("ConfigMap", source["configMapRef"]["name"])]["data"]
        else:
            data = manifests[("Secret", source["secretRef"]["name"])]["data"]
            env |= {key: base64.b64decode(value).decode() for key, value in data.items()}
    env["PORT"] = str(port)  # the host's network: a free port instead of containerPort
    env_file = folder / f"{container['name']}.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()))

    pod_context, context = pod["spec"]["securityContext"], container["securityContext"]
    options = [*RUN_OPTIONS, "--network", "host", "--env-file", str(env_file)]
    options += ["--user", f"{pod_context['runAsUser']}:{pod_context['runAsGroup']}"]
    if context["readOnlyRootFilesystem"]:
        options.append("--read-only")
    options += [f"--cap-drop={cap}" for cap in context["capabilities"]["drop"]]
    if context["allowPrivilegeEscalation"] is False:
        options += ["--security-opt", "no-new-privileges"]
    limits = container["resources"]["limits"]
    memory = limits["memory"].replace("Gi", "g").replace("Mi", "m")
    options += ["--cpus", str(limits["cpu"]), "--memory", memory]
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            options += ["--tmpfs", mount["mountPath"]]
        else:  # a claim: a folder of this test, owned as fsGroup makes a volume's files
            claim = folder / volume["persistentVolumeClaim"]["claimName"]
            claim.mkdir(exist_ok=True)
            os.chown(claim, pod_context["runAsUser"], pod_context.get("fsGroup", 0))
            options += ["-v", f"{claim}:{mount['mountPath']}"]
    return options


def podman_run(image_name: str, options: list[str], container: dict, name: str) -> None:
    """Start the container detached: its command (in place of the image's entrypoint) and args."""
    command, args = container.get("command", []), container.get("args", [])
    entrypoint = ["--entrypoint", command[0]] if command else []
    subprocess.run(
        [
            "podman",
            "run",
            "-d",
            "--name",
            name,
            *options,
            *entrypoint,
            image_name,
            *command[1:],
            *args,
        ],
        check=True,
        capture_output=True,
    )


def podman(*args: str, timeout: float = 120) -> str:
    return subprocess.run(
        ["podman", *args], check=True, capture_output=True, text=True, timeout=timeout
    ).stdout


def probe(port: int, spec: dict, timeout: float) -> int:
    """Ask an httpGet probe as the kubelet does until it answers 200 (or the timeout)."""
    get = spec["httpGet"]
    headers = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{get['path']}", headers=headers)
    deadline = time.monotonic() + timeout
    status = 0
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(request, timeout=spec.get("timeoutSeconds", 1)) as answer:
                return answer.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            status = 0  # not listening yet
        time.sleep(spec.get("periodSeconds", 10) / 4)
    return status


def classify(port: int, headers: dict[str, str]) -> dict:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="cat.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode()
        + photo()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/classify-image",
        data=body,
        headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        return json.loads(response.read())


def test_the_production_pods_run_as_rendered(image, manifests, database, tmp_path):  # noqa: F811
    web = manifests[("Deployment", "classifier-web")]["spec"]["template"]
    (job_key,) = [key for key in manifests if key[0] == "Job"]
    job = manifests[job_key]["spec"]["template"]
    (wait,) = web["spec"]["initContainers"]
    (server,) = web["spec"]["containers"]
    (migrate,) = job["spec"]["containers"]
    port = free_port()
    suffix = uuid.uuid4().hex[:8]
    names = {part: f"classifier-pod-{part}-{suffix}" for part in ("wait", "migrate", "web")}
    try:
        # The pod's init container on a database without the schema: it waits.
        podman_run(image, podman_options(manifests, web, wait, tmp_path, port), wait, names["wait"])
        deadline = time.monotonic() + 120
        while "Waiting for the migrations Job (1)" not in podman("logs", names["wait"]):
            assert time.monotonic() < deadline, podman("logs", names["wait"])
            time.sleep(1)
        # The release's Job migrates and registers the baked models.
        options = podman_options(manifests, job, migrate, tmp_path, port)
        podman_run(image, options, migrate, names["migrate"])
        assert podman("wait", names["migrate"], timeout=300).strip() == "0"
        # The init container passes: the pod starts.
        assert podman("wait", names["wait"], timeout=60).strip() == "0"

        options = podman_options(manifests, web, server, tmp_path, port)
        podman_run(image, options, server, names["web"])
        startup = server["startupProbe"]
        assert probe(port, startup, startup["periodSeconds"] * startup["failureThreshold"]) == 200
        assert probe(port, server["livenessProbe"], 10) == 200
        assert probe(port, server["readinessProbe"], 10) == 200
        headers = {h["name"]: h["value"] for h in startup["httpGet"]["httpHeaders"]}
        assert classify(port, headers)["predictions"]

        # A stop the kubelet's grace period allows: the server ends by itself, its row written.
        grace = str(web["spec"]["terminationGracePeriodSeconds"])
        podman("stop", "-t", grace, names["web"], timeout=120)
        state = json.loads(podman("inspect", names["web"]))[0]["State"]
        assert state["ExitCode"] == 0, state
        with psycopg.connect(database) as connection:
            table = RequestLog._meta.db_table
            (rows,) = connection.execute(f'SELECT count(*) FROM "{table}"').fetchone() or (0,)
        assert rows == 1
    finally:
        for name in names.values():
            logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True)
            print(name, logs.stdout[-2000:], logs.stderr[-2000:])
            subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)
