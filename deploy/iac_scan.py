"""Scan the deployment files with checkov: the rendered manifests of every kustomization under
deploy/k8s, and the Dockerfile. ``make lint`` runs it (``make iac-scan`` alone).

    .venv-checkov/bin/python deploy/iac_scan.py [--kubectl .venv/bin/kubectl]

It fails on any failed check that deploy/checkov-skips.yaml does not list with its reason, on an
entry there that no longer fails (so the list stays true), and on a file checkov cannot parse.
The kustomizations render from a copy of deploy/k8s whose secrets.env are the committed
examples: a real secrets.env in this checkout never reaches the scan or its output. Offline:
checkov downloads nothing (--skip-download) and uploads nothing (no API key).
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
SKIPS = ROOT / "deploy" / "checkov-skips.yaml"


def kustomizations(root: Path) -> list[str]:
    """Every kustomization under root (components are scanned through those that use them)."""
    found = []
    for path in sorted(root.rglob("kustomization.yaml")):
        if yaml.safe_load(path.read_text()).get("kind", "Kustomization") == "Kustomization":
            found.append(path.parent.relative_to(root).as_posix())
    return found


def k8s_copy(folder: Path) -> Path:
    """deploy/k8s copied into folder, each secrets.env the example beside it."""
    copy = folder / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("secrets.env"))
    for example in copy.rglob("secrets.env.example"):
        shutil.copyfile(example, example.with_suffix(""))
    return copy


def render(kubectl: str, copy: Path, name: str, out: Path) -> Path:
    target = out / (name.replace("/", "_") + ".yaml")
    manifests = subprocess.run(  # noqa: S603 (our own kubectl, our own folder)
        [kubectl, "kustomize", str(copy / name)], check=True, capture_output=True, text=True
    ).stdout
    target.write_text(manifests)
    return target


def checkov(framework: str, path: Path) -> dict:
    """checkov's JSON report of one file (no skips: the comparison with the list is ours)."""
    checkov_bin = Path(sys.executable).parent / "checkov"
    command = [str(checkov_bin), "--quiet", "--skip-download", "--framework", framework]
    result = subprocess.run(  # noqa: S603 (checkov of this virtual environment, fixed arguments)
        [*command, "-o", "json", "-f", str(path)],
        capture_output=True,
        text=True,
    )
    if result.returncode not in (0, 1):  # 1: some check failed
        sys.exit(f"checkov failed on {path.name}:\n{result.stderr}")
    report = json.loads(result.stdout)
    if report["summary"]["parsing_errors"] or not report["summary"]["resource_count"]:
        sys.exit(f"checkov could not read {path.name}: {report['summary']}")
    return report


def scan(kubectl: str) -> dict[str, list[tuple[str, str]]]:
    """{scanned name: [(check id, resource), ...]} of the failed checks."""
    failed: dict[str, list[tuple[str, str]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        copy = k8s_copy(Path(tmp))
        targets = [
            (name, "kubernetes", render(kubectl, copy, name, Path(tmp)))
            for name in kustomizations(copy)
        ]
        for name, framework, path in [*targets, ("Dockerfile", "dockerfile", ROOT / "Dockerfile")]:
            report = checkov(framework, path)
            failed[name] = [
                (c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]
            ]
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubectl", default=shutil.which("kubectl") or "kubectl")
    kubectl = parser.parse_args().kubectl
    skips: dict[str, dict] = yaml.safe_load(SKIPS.read_text()) or {}
    problems = [
        f"{check}: no reason given" for check, skip in skips.items() if not skip.get("reason")
    ]
    used: set[str] = set()
    for name, checks in scan(kubectl).items():
        for check, resource in checks:
            where = skips.get(check, {}).get("only")
            if check in skips and (where is None or name in where):
                used.add(check)
            else:
                problems.append(f"{name}: {check} failed for {resource}")
    problems += [
        f"{check}: listed in {SKIPS.name} but fails nowhere" for check in skips.keys() - used
    ]
    for problem in problems:
        print(problem)
    if problems:
        sys.exit(f"checkov: {len(problems)} problem(s); fix them, or list a check with its reason")
    print(f"checkov: no failed check but the {len(skips)} listed in {SKIPS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
