"""The deployment files lint and validate offline: the Dockerfile (hadolint), the Kubernetes
kustomizations (rendered by kubectl kustomize, checked by kubernetes-validate against the
Kubernetes versions we support), and requirements-serve.txt is current."""

import fnmatch
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BIN = Path(sys.executable).parent
# The oldest and newest Kubernetes versions the manifests are checked against.
KUBERNETES_VERSIONS = ["1.33.0", "1.37.0"]


def tool(name: str) -> str:
    path = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if path is None:
        message = f"{name} is not installed (make test installs it from requirements-test.txt)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def render(kustomization: Path) -> list[dict]:
    out = subprocess.run(
        [tool("kubectl"), "kustomize", str(kustomization)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def test_dockerfile_is_hadolint_clean():
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("overlay", ["base", "overlays/production", "batch", "batch/assemble"])
def test_kustomizations_render_and_validate_offline(overlay, tmp_path):
    docs = render(K8S / overlay)
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    for version in KUBERNETES_VERSIONS:
        result = subprocess.run(
            [tool("kubernetes-validate"), "--strict", "-k", version, str(rendered)],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count("passed for resource") == len(docs), result.stdout


def test_production_overlay_has_what_scaling_needs():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in render(K8S / "overlays/production")}
    web = docs[("Deployment", "classifier-web")]
    assert web["metadata"]["namespace"] == "classifier"
    assert web["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = web["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].startswith("registry.example.com/classifier-api:")
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["startupProbe"]["httpGet"]["path"] == "/health/ready"
    assert {"requests", "limits"} <= set(container["resources"])
    spread = {c["topologyKey"]: c["whenUnsatisfiable"] for c in pod["topologySpreadConstraints"]}
    assert spread["kubernetes.io/hostname"] == "DoNotSchedule"
    hpa = docs[("HorizontalPodAutoscaler", "classifier-web")]
    assert hpa["spec"]["minReplicas"] == 3
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert docs[("PodDisruptionBudget", "classifier-web")]["spec"]["minAvailable"] == 2
    sender = docs[("Deployment", "classifier-export-sender")]
    assert sender["spec"]["template"]["spec"]["containers"][0]["args"] == ["sender"]
    assert docs[("Job", "classifier-migrate")]["spec"]["template"]["spec"]["containers"][0][
        "args"
    ] == ["setup"]
    config = docs[("ConfigMap", "classifier-config")]["data"]
    assert config["ELASTICSEARCH_EXPORT_IN_WORKERS"] == "0" and config["PRODUCTION"] == "1"
    # External services only: no database, cache or search engine run by these manifests.
    assert not [key for key in docs if key[0] == "StatefulSet"]


def test_requirements_serve_is_current():
    result = subprocess.run(
        [sys.executable, str(ROOT / "deploy/image/serve_requirements.py"), "--check"], cwd=ROOT
    )
    assert result.returncode == 0, (
        "requirements-serve.txt is out of date: run python deploy/image/serve_requirements.py"
    )


def test_the_image_copies_every_package_of_the_project():
    """An app added to INSTALLED_APPS but not to the Dockerfile would stop the image at start."""
    packages = {
        path.parent.name
        for path in ROOT.glob("*/__init__.py")
        if path.parent.name not in {"tests", "docs", "deploy", "bench"}
    }
    dockerfile = (ROOT / "Dockerfile").read_text()
    allowed = (ROOT / ".dockerignore").read_text().splitlines()
    for package in sorted(packages):
        assert dockerfile.count(f"COPY {package} {package}\n") == 2, package  # both stages
        assert f"!{package}/" in allowed, package


def test_the_image_holds_no_benchmark():
    """bench/ measures the service and is no part of it: neither copied nor in the context."""
    assert (ROOT / "bench" / "__main__.py").is_file()
    rules = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert rules[0] == "*"  # the build context holds only what a later rule lets back in
    let_in = [rule[1:] for rule in rules if rule.startswith("!")]
    for path in ("bench/", "bench/__main__.py", "bench/loadtest.py", "bench/load.lua"):
        assert not [rule for rule in let_in if fnmatch.fnmatch(path, rule)], path
    copies = [
        line.split()[1:-1]
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") and "--from=" not in line
    ]
    sources = [source for sources in copies for source in sources]
    assert sources and not [s for s in sources if s in {".", "./", "*"} or s.startswith("bench")]


@pytest.mark.parametrize(("kustomization", "shards"), [("batch", 4), ("batch/assemble", 1)])
def test_predict_batch_is_an_indexed_job_sharding_by_its_completion_index(kustomization, shards):
    (job,) = [doc for doc in render(K8S / kustomization) if doc["kind"] == "Job"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == shards
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == "predict_batch"
    assert "--shard=$(JOB_COMPLETION_INDEX)/$(SHARDS)" in container["args"]
    env = {item["name"]: item for item in container["env"]}
    assert env["SHARDS"]["value"] == str(shards)
    assert (
        "job-completion-index" in env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    )
