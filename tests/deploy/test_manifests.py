"""The deployment files lint and validate offline: the Dockerfile (hadolint), the Kubernetes
kustomizations (rendered by kubectl kustomize, checked by kubernetes-validate against the
Kubernetes versions we support), and requirements-serve.txt is current."""

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from ipaddress import ip_network
from pathlib import Path

import pytest
import yaml
from django.urls import URLPattern, URLResolver, get_resolver

from tests.support.db import empty_postgres_database

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


def k8s_copy(folder: Path) -> Path:
    """deploy/k8s copied into folder with each secrets.env.example as its secrets.env: what an
    operator's checkout holds once the Secret's file is written (never committed)."""
    copy = folder / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("secrets.env"))
    for example in copy.rglob("secrets.env.example"):
        shutil.copyfile(example, example.with_suffix(""))
    return copy


@pytest.fixture(scope="module")
def k8s(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return k8s_copy(tmp_path_factory.mktemp("deploy"))


def render(kustomization: Path) -> list[dict]:
    out = subprocess.run(
        [tool("kubectl"), "kustomize", str(kustomization)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind_and_name(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}


def overlay_variant(k8s: Path, name: str, edit: Callable[[dict], None]) -> Path:
    """A copy of the production overlay beside it, its kustomization changed by edit: what an
    operator's 'kustomize edit ...' in the overlay writes."""
    variant = k8s / "overlays" / name
    shutil.copytree(k8s / "overlays" / "production", variant)
    kustomization = yaml.safe_load((variant / "kustomization.yaml").read_text())
    edit(kustomization)
    (variant / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return variant


def pod_templates(docs: list[dict]) -> list[tuple[dict, dict]]:
    """(workload, its pod template) of every Deployment and Job."""
    return [(doc, doc["spec"]["template"]) for doc in docs if doc["kind"] in {"Deployment", "Job"}]


def containers(pod: dict) -> list[dict]:
    return pod["spec"].get("initContainers", []) + pod["spec"]["containers"]


def existing_secret_overlay(k8s: Path) -> Path:
    """The production overlay with the existing-secret component instead of the generator."""
    variant = k8s / "overlays" / "production-existing-secret"
    if variant.exists():
        return variant

    def swap(kustomization: dict) -> None:
        components = kustomization["components"]
        components[components.index("../../components/secrets-file")] = (
            "../../components/existing-secret"
        )

    return overlay_variant(k8s, variant.name, swap)


def set_image(kustomization: dict, image: str) -> None:
    """What 'kustomize edit set image classifier-api=NAME[:TAG][@DIGEST]' writes."""
    reference, _, digest = image.partition("@")
    name, _, tag = (
        reference.rpartition(":") if ":" in reference.split("/")[-1] else (reference, "", "")
    )
    (entry,) = [e for e in kustomization["images"] if e["name"] == "classifier-api"]
    entry["newName"] = name
    entry.pop("newTag", None)
    if tag:
        entry["newTag"] = tag
    if digest:
        entry["digest"] = digest


KUSTOMIZATIONS = ["base", "overlays/production", "batch", "batch/assemble"]


def test_dockerfile_is_hadolint_clean():
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("overlay", [*KUSTOMIZATIONS, "existing-secret"])
def test_kustomizations_render_and_validate_offline(overlay, k8s, tmp_path):
    if overlay == "existing-secret":
        docs = render(existing_secret_overlay(k8s))
    else:
        docs = render(k8s / overlay)
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


def test_production_overlay_has_what_scaling_needs(k8s):
    docs = by_kind_and_name(render(k8s / "overlays/production"))
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
    (prefer,) = pod["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert prefer["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    hpa = docs[("HorizontalPodAutoscaler", "classifier-web")]
    assert hpa["spec"]["minReplicas"] == 3
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert docs[("PodDisruptionBudget", "classifier-web")]["spec"]["minAvailable"] == 2
    sender = docs[("Deployment", "classifier-export-sender")]
    assert sender["spec"]["template"]["spec"]["containers"][0]["args"] == ["sender"]
    job = docs[("Job", "classifier-migrate-1.0.0")]
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["setup"]
    config = docs[("ConfigMap", "classifier-jobs-config")]["data"]
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
def test_predict_batch_is_an_indexed_job_sharding_by_its_completion_index(
    kustomization, shards, k8s
):
    (job,) = [doc for doc in render(k8s / kustomization) if doc["kind"] == "Job"]
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


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_no_deployment_an_autoscaler_targets_sets_replicas(kustomization, k8s):
    """'kubectl apply' would reset a Deployment the HPA has scaled out to the file's count."""
    docs = render(k8s / kustomization)
    targets = {
        doc["spec"]["scaleTargetRef"]["name"]
        for doc in docs
        if doc["kind"] == "HorizontalPodAutoscaler"
    }
    for doc in docs:
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] in targets:
            assert "replicas" not in doc["spec"], doc["metadata"]["name"]


def ingress_routes(ingress: dict, path: str) -> bool:
    """Whether one of the Ingress's paths matches path, as the Ingress API defines Exact and
    Prefix (a prefix matches whole path elements)."""
    for rule in ingress["spec"]["rules"]:
        for entry in rule["http"]["paths"]:
            prefix = entry["path"]
            if entry["pathType"] == "Exact" and path == prefix:
                return True
            if entry["pathType"] == "Prefix" and (
                prefix == "/" or path == prefix or path.startswith(prefix.rstrip("/") + "/")
            ):
                return True
    return False


def site_routes() -> list[str]:
    """A path of every route of the site (each converter given a sample value)."""

    def walk(patterns: list, prefix: str) -> list[str]:
        paths = []
        for pattern in patterns:
            route = prefix + str(pattern.pattern).lstrip("^").rstrip("$").replace("\\", "")
            route = re.sub(r"<[^>]+>|\(\?P<[^)]+\)[^/]*", "1", route)
            if isinstance(pattern, URLResolver):
                paths += walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern):
                paths.append("/" + route)
        return paths

    return walk(get_resolver().url_patterns, "")


def test_the_ingress_routes_every_public_path_and_never_metrics(k8s):
    for kustomization in ("base", "overlays/production"):
        (ingress,) = [d for d in render(k8s / kustomization) if d["kind"] == "Ingress"]
        for internal in ("/metrics", "/health/ready"):
            assert not ingress_routes(ingress, internal), internal
        routes = site_routes()
        assert "/classify-image" in routes and "/admin/" in routes  # the walk finds the routes
        unrouted = [r for r in routes if r not in {"/metrics", "/health/ready"}]
        unrouted = [r for r in unrouted if not ingress_routes(ingress, r)]
        assert not unrouted, "add these routes to deploy/k8s/base/ingress.yaml"
        assert ingress_routes(ingress, "/static/classification/upload.js")


def test_the_grace_period_outlasts_the_drain_and_the_graceful_stop(k8s):
    """The kubelet kills at terminationGracePeriodSeconds, counted from the start of preStop:
    the sleep (endpoints drop the pod meanwhile) and the server's graceful stop must fit."""
    docs = render(k8s / "overlays/production")
    configs = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    web = by_kind_and_name(docs)[("Deployment", "classifier-web")]
    pod = web["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (config_name,) = [
        e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e
    ]
    sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    graceful = float(configs[config_name]["WEB_GRACEFUL_TIMEOUT"])
    assert sleep >= 10  # longer than endpoint propagation takes
    assert sleep + graceful < pod["terminationGracePeriodSeconds"]


def test_a_rollout_outlasts_the_wait_for_migrations_and_the_model_load(k8s):
    web = by_kind_and_name(render(k8s / "overlays/production"))[("Deployment", "classifier-web")]
    pod = web["spec"]["template"]["spec"]
    (wait,) = pod["initContainers"]
    script = wait["command"][-1]
    attempts = int(re.search(r"range\(1, (\d+)\)", script)[1]) - 1
    pause = int(re.search(r"time\.sleep\((\d+)\)", script)[1])
    startup = pod["containers"][0]["startupProbe"]
    needed = attempts * pause + startup["periodSeconds"] * startup["failureThreshold"]
    assert web["spec"]["progressDeadlineSeconds"] > needed


def test_no_secret_value_is_committed():
    tracked = subprocess.run(
        ["git", "ls-files", "deploy/k8s"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()
    assert tracked and not [path for path in tracked if path.endswith("secrets.env")]
    for path in tracked:
        if path.endswith((".yaml", ".yml")):
            kinds = [d.get("kind") for d in yaml.safe_load_all((ROOT / path).read_text()) if d]
            assert "Secret" not in kinds, path
    operator_file = "deploy/k8s/components/secrets-file/secrets.env"
    ignored = subprocess.run(["git", "check-ignore", "-q", operator_file], cwd=ROOT)
    assert ignored.returncode == 0, f"{operator_file} must be git-ignored"
    example = (ROOT / operator_file).with_suffix(".env.example").read_text().splitlines()
    values = dict(line.split("=", 1) for line in example if line and not line.startswith("#"))
    assert {"SECRET_KEY", "JWT_SIGNING_KEY", "DATABASE_URL", "METRICS_TOKEN"} <= set(values)
    assert all(value == "" or "CHANGE-ME" in value for value in values.values()), values


def test_secrets_come_from_the_operator_file_or_an_existing_secret(k8s):
    docs = render(k8s / "overlays/production")
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    hashed = [name for name in secrets if name.startswith("classifier-secrets-")]
    assert len(hashed) == 1 and set(secrets) == {hashed[0], "classifier-jobs-secrets"}
    for workload, pod in pod_templates(docs):
        refs = {
            e["secretRef"]["name"]
            for c in containers(pod)
            for e in c["envFrom"]
            if "secretRef" in e
        }
        wanted = "classifier-jobs-secrets" if workload["kind"] == "Job" else hashed[0]
        assert refs == {wanted}, workload["metadata"]["name"]
    # The other way: no Secret rendered (apply never overwrites yours), every pod reads it.
    docs = render(existing_secret_overlay(k8s))
    assert not [d for d in docs if d["kind"] == "Secret"]
    for workload, pod in pod_templates(docs):
        refs = {
            e["secretRef"]["name"]
            for c in containers(pod)
            for e in c["envFrom"]
            if "secretRef" in e
        }
        assert refs == {"classifier-secrets"}, workload["metadata"]["name"]


def test_settings_changes_roll_the_pods_through_the_configmap_name(k8s):
    before = by_kind_and_name(render(k8s / "overlays/production"))
    config = k8s / "base" / "config.env"
    original = config.read_text()
    config.write_text(original + "THROTTLE_ANON_RATE=50/minute\n")
    try:
        after = by_kind_and_name(render(k8s / "overlays/production"))
    finally:
        config.write_text(original)
    web = ("Deployment", "classifier-web")
    assert before[web]["spec"]["template"] != after[web]["spec"]["template"]  # a rollout
    jobs = [key for key in before if key[0] == "Job"]
    assert jobs and all(before[key] == after[key] for key in jobs)  # no immutable-field conflict


def test_a_new_image_tag_makes_a_new_migrate_job_that_apply_can_create(k8s):
    """'kubectl apply -k' twice in a row with two tags: a Job's template cannot change, so the
    second tag must name a Job of its own; the web pods wait for its migrations."""
    jobs = {}
    for tag in ("1.1.0", "1.2.0-rc.1@sha256:" + "ab" * 32):
        image = f"registry.example.com:5000/ml/classifier-api:{tag}"
        overlay = overlay_variant(k8s, f"tag-{tag[:5]}", lambda k, image=image: set_image(k, image))
        docs = render(overlay)
        (job,) = [d for d in docs if d["kind"] == "Job"]
        jobs[tag] = job
        for _, pod in pod_templates(docs):  # every container runs the image named
            assert {c["image"] for c in containers(pod)} == {image}
        web = by_kind_and_name(docs)[("Deployment", "classifier-web")]
        (wait,) = web["spec"]["template"]["spec"]["initContainers"]
        assert wait["image"] == image and '"migrate", "--check"' in wait["command"][-1]
        refs = job["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        names = {name for ref in refs for name in (r["name"] for r in ref.values())}
        assert names == {"classifier-jobs-config", "classifier-jobs-secrets"}  # fixed names
    # Without a tag there is no name to give the Job: the render stops instead of reusing one.
    untagged = f"registry.example.com/classifier-api@sha256:{'cd' * 32}"
    overlay = overlay_variant(k8s, "untagged", lambda k: set_image(k, untagged))
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(overlay)], capture_output=True, text=True
    )
    assert result.returncode != 0 and "out of bounds" in result.stderr
    assert jobs["1.1.0"]["metadata"]["name"] == "classifier-migrate-1.1.0"
    assert [j["metadata"]["name"] for j in jobs.values()][1] == "classifier-migrate-1.2.0-rc.1"


def covers(policy: dict, labels: dict) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(key) == value for key, value in wanted.items())


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_pod_has_network_policies_for_both_directions(kustomization, k8s):
    docs = render(k8s / kustomization)
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    for workload, pod in pod_templates(docs):
        mine = [p for p in policies if covers(p, pod["metadata"]["labels"])]
        types = {t for p in mine for t in p["spec"]["policyTypes"]}
        assert types == {"Ingress", "Egress"}, workload["metadata"]["name"]
        for policy in mine:  # no egress rule without its ports
            assert all(rule.get("ports") for rule in policy["spec"].get("egress", []))


def test_web_pods_admit_only_the_ingress_controller_and_prometheus(k8s):
    docs = render(k8s / "overlays/production")
    web = by_kind_and_name(docs)[("Deployment", "classifier-web")]
    labels = web["spec"]["template"]["metadata"]["labels"]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy" and covers(d, labels)]
    peers = [
        peer for p in policies for rule in p["spec"].get("ingress", []) for peer in rule["from"]
    ]
    namespaces = {
        p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in peers
    }
    assert namespaces == {"ingress-nginx", "monitoring"}
    assert all("podSelector" in peer for peer in peers)
    sender = by_kind_and_name(docs)[("Deployment", "classifier-export-sender")]
    labels = sender["spec"]["template"]["metadata"]["labels"]
    assert not [p for p in policies if covers(p, labels) and p["spec"].get("ingress")]
    # Image hosts: public addresses only, never the cluster's or the metadata service's.
    blocks = [
        peer["ipBlock"]
        for p in policies
        for rule in p["spec"].get("egress", [])
        for peer in rule["to"]
        if peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0"
    ]
    (block,) = blocks
    refused = [ip_network(cidr) for cidr in block["except"]]
    for private in ("10.1.2.3", "172.20.0.1", "192.168.1.1", "169.254.169.254", "127.0.0.1"):
        assert any(ip_network(private).subnet_of(net) for net in refused), private


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_pods_run_hardened_under_their_own_service_account(kustomization, k8s):
    docs = render(k8s / kustomization)
    for workload, pod in pod_templates(docs):
        name = workload["metadata"]["name"]
        spec = pod["spec"]
        assert spec["serviceAccountName"] == "classifier", name
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in containers(pod):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert {"requests", "limits"} <= set(container["resources"]), name
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, name  # the one writable scratch folder
    accounts = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert all(account["automountServiceAccountToken"] is False for account in accounts)


def test_the_request_log_spill_outlives_the_pod_in_production(k8s):
    docs = by_kind_and_name(render(k8s / "overlays/production"))
    config = docs[("ConfigMap", "classifier-jobs-config")]["data"]
    pod = docs[("Deployment", "classifier-web")]["spec"]["template"]["spec"]
    (mount,) = [
        m
        for m in pod["containers"][0]["volumeMounts"]
        if m["mountPath"] == config["REQUEST_LOG_SPILL_DIR"]
    ]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert set(volume) == {"name", "persistentVolumeClaim"}
    claim = docs[("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every web pod, any node
    assert pod["securityContext"]["fsGroup"] == 10001  # writable by the server's user


def test_the_export_sender_is_probed_on_its_own_liveness_port(k8s):
    docs = by_kind_and_name(render(k8s / "overlays/production"))
    (container,) = docs[("Deployment", "classifier-export-sender")]["spec"]["template"]["spec"][
        "containers"
    ]
    port = int(docs[("ConfigMap", "classifier-jobs-config")]["data"]["EXPORT_HEALTH_PORT"])
    (declared,) = container["ports"]
    assert declared["containerPort"] == port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health/live", "port": declared["name"]}


def test_every_checkov_skip_gives_its_reason():
    skips = yaml.safe_load((ROOT / "deploy" / "checkov-skips.yaml").read_text())
    for check, skip in skips.items():
        assert re.fullmatch(r"CKV2?_[A-Z0-9]+_\d+", check), check
        assert len(skip["reason"]) > 40, check


@pytest.fixture
def empty_database() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database beside the tests' own, dropped afterwards."""
    with empty_postgres_database("migrations_gate") as url:
        yield url


def test_web_pods_wait_until_the_migrations_their_image_needs_are_applied(k8s, empty_database):
    """The init container's own command, run here against a database without the schema: it
    waits, and lets the pod start once the migrations (the Job's part) are in."""
    web = by_kind_and_name(render(k8s / "overlays/production"))[("Deployment", "classifier-web")]
    (wait,) = web["spec"]["template"]["spec"]["initContainers"]
    assert wait["command"][0] == "python"  # the image's interpreter; this one here
    env = {**os.environ, "DATABASE_URL": empty_database}
    process = subprocess.Popen(
        [sys.executable, *wait["command"][1:]], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "Waiting for the migrations Job (1)\n"
        assert process.poll() is None  # still waiting: the pod would not start
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
        assert process.wait(timeout=120) == 0
    finally:
        process.kill()
        process.wait()
