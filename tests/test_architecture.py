"""The dependency direction of docs/architecture.md holds, and its check catches a violation."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = [
    "classifier_site",
    "core",
    "classification",
    "reporting",
    "accounts",
    "training",
    "bench",
]
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [LINT_IMPORTS, "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )


def copy_of_the_code(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_every_import_contract_is_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_classification_importing_reporting_breaks_a_contract(tmp_path):
    root = copy_of_the_code(tmp_path)
    (root / "classification" / "backwards.py").write_text("import reporting.models  # noqa\n")
    result = lint_imports(root)
    assert result.returncode != 0
    assert "reporting may use classification, never the reverse BROKEN" in result.stdout


def test_core_importing_an_app_inside_a_function_breaks_a_contract(tmp_path):
    root = copy_of_the_code(tmp_path)
    (root / "core" / "glue.py").write_text(
        "def late():\n    from classification import selectors  # noqa\n"
    )
    result = lint_imports(root)
    assert result.returncode != 0
    assert "core is shared by every app and imports none BROKEN" in result.stdout


def test_an_app_importing_the_site_configuration_breaks_a_contract(tmp_path):
    root = copy_of_the_code(tmp_path)
    (root / "reporting" / "reach.py").write_text("import classifier_site.urls  # noqa\n")
    result = lint_imports(root)
    assert result.returncode != 0
    assert "no app imports classifier_site BROKEN" in result.stdout


def test_accounts_importing_classification_breaks_a_contract(tmp_path):
    root = copy_of_the_code(tmp_path)
    (root / "accounts" / "reach.py").write_text("import classification.models  # noqa\n")
    result = lint_imports(root)
    assert result.returncode != 0
    assert "accounts imports neither classification nor reporting BROKEN" in result.stdout


@pytest.mark.parametrize("package", [package for package in PACKAGES if package != "bench"])
def test_the_product_importing_bench_breaks_a_contract(tmp_path, package):
    root = copy_of_the_code(tmp_path)
    (root / package / "measure.py").write_text("from bench.loopback import free_port  # noqa\n")
    result = lint_imports(root)
    assert result.returncode != 0
    assert "no app, core or classifier_site imports it BROKEN" in result.stdout
