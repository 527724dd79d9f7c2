"""The dependency direction of docs/architecture.md holds, and its check catches a violation:
the import-linter contracts, no import cycle at any depth (imports inside functions count), and
few imports inside functions at all."""

import ast
import itertools
import json
import shutil
import subprocess
import sys
from collections import deque
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
    "ground_truth",
    "bench",
]
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")
# Project imports inside functions (apps.py and migrations aside) that start-up order or an
# optional heavy library requires, each with a comment saying why; anything else moves down.
INSIDE_FUNCTIONS_LIMIT = 5

# Prints {importer: {imported: [line, ...]}} for the project found on sys.path. grimp sees every
# import statement, inside functions and under TYPE_CHECKING too.
IMPORTS_SCRIPT = """
import json, sys
import grimp
graph = grimp.build_graph(*sys.argv[1:], cache_dir=None)
print(json.dumps({
    importer: {
        imported: sorted(d["line_number"] for d in graph.get_import_details(
            importer=importer, imported=imported))
        for imported in graph.find_modules_directly_imported_by(importer)
    }
    for importer in graph.modules
}))
"""

Imports = dict[str, dict[str, list[int]]]


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


def test_the_log_writer_importing_services_inside_a_function_breaks_a_contract(tmp_path):
    root = copy_of_the_code(tmp_path)
    writer = root / "reporting" / "log_writer.py"
    writer.write_text(
        writer.read_text() + "\n\ndef late():\n    from reporting import services  # noqa\n"
    )
    result = lint_imports(root)
    assert result.returncode != 0
    assert "export, models BROKEN" in result.stdout
    assert "reporting.log_writer is not allowed to import reporting.services" in result.stdout


def test_the_throttles_importing_the_token_apis_breaks_a_contract(tmp_path):
    root = copy_of_the_code(tmp_path)
    throttling = root / "accounts" / "throttling.py"
    throttling.write_text(throttling.read_text() + "\nimport accounts.apis  # noqa\n")
    result = lint_imports(root)
    assert result.returncode != 0
    assert "accounts in layers: URLs and commands, APIs, the rest BROKEN" in result.stdout


CLASSIFICATION_LAYERS = "classification's inner layers point one way BROKEN"
SERVING_LAYERS = "serving's inner layers point one way BROKEN"


def test_registration_using_the_serving_engine_inside_a_function_breaks_a_contract(tmp_path):
    # Registration and the engine are peers over serving's kinds: neither imports the other.
    root = copy_of_the_code(tmp_path)
    (root / "classification" / "registry" / "glue.py").write_text(
        "def late():\n    from classification.serving.engine import get_runtime  # noqa\n"
    )
    result = lint_imports(root)
    assert result.returncode != 0
    assert CLASSIFICATION_LAYERS in result.stdout


def test_the_store_importing_the_registry_breaks_a_contract(tmp_path):
    root = copy_of_the_code(tmp_path)
    store = root / "classification" / "store.py"
    store.write_text(store.read_text() + "\nimport classification.registry.services  # noqa\n")
    result = lint_imports(root)
    assert result.returncode != 0
    assert CLASSIFICATION_LAYERS in result.stdout


def test_a_module_of_classification_in_no_layer_breaks_a_contract(tmp_path):
    root = copy_of_the_code(tmp_path)
    (root / "classification" / "loose.py").write_text("X = 1\n")
    result = lint_imports(root)
    assert result.returncode != 0
    assert CLASSIFICATION_LAYERS in result.stdout
    assert "classification.loose" in result.stdout


def test_a_serving_kind_importing_the_engine_breaks_a_contract(tmp_path):
    # The circle there once was, hidden inside a function: the engine serves the kinds.
    root = copy_of_the_code(tmp_path)
    (root / "classification" / "serving" / "zero_shot.py").write_text(
        (ROOT / "classification" / "serving" / "zero_shot.py").read_text()
        + "\n\ndef late():\n    from classification.serving.engine import softmax  # noqa\n"
    )
    result = lint_imports(root)
    assert result.returncode != 0
    assert SERVING_LAYERS in result.stdout and CLASSIFICATION_LAYERS in result.stdout


# --- Import cycles ----------------------------------------------------------------------------


def project_imports(root: Path) -> Imports:
    """Every import between the project's modules under ``root``, with its lines (grimp)."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS_SCRIPT, *PACKAGES],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    return json.loads(result.stdout)


def shortest_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """A shortest cycle through each node that is on one, once per set of nodes, sorted."""
    cycles: dict[frozenset[str], list[str]] = {}
    for start in sorted(edges):
        came_from: dict[str, str] = {}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            if start in edges.get(node, ()):
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                cycle = [*reversed(path), start]
                cycles.setdefault(frozenset(cycle), cycle)
                break
            for following in sorted(edges.get(node, ())):
                if following not in came_from and following != start:
                    came_from[following] = node
                    queue.append(following)
    return sorted(cycles.values())


def module_cycles(imports: Imports) -> list[str]:
    """Modules that import each other, directly or through others, each arrow with its lines."""
    edges = {importer: set(imported) for importer, imported in imports.items()}
    return [
        " -> ".join(cycle)
        + "  ("
        + "; ".join(
            f"{a} line {', '.join(map(str, imports[a][b]))}" for a, b in itertools.pairwise(cycle)
        )
        + ")"
        for cycle in shortest_cycles(edges)
    ]


def child_of(package: str, module: str) -> str | None:
    """The child of ``package`` ('' for the top level) that ``module`` is or lies under."""
    if not package:
        return module.split(".")[0]
    if not module.startswith(package + "."):
        return None
    return f"{package}.{module[len(package) + 1 :].split('.')[0]}"


def package_cycles(imports: Imports) -> list[str]:
    """At every level of the package tree, children that import each other: a module of one
    (or of a package under it) imports a module of another, and back, at any distance."""
    packages = {""} | {
        ".".join(parts[:depth])
        for parts in (module.split(".") for module in imports)
        for depth in range(1, len(parts))
    }
    found = []
    for package in sorted(packages):
        edges: dict[str, set[str]] = {}
        witness: dict[tuple[str, str], str] = {}
        for importer, imported in sorted(imports.items()):
            source = child_of(package, importer)
            for target_module, lines in sorted(imported.items()):
                target = child_of(package, target_module)
                if source is None or target is None or source == target:
                    continue
                edges.setdefault(source, set()).add(target)
                witness.setdefault(
                    (source, target), f"{importer} imports {target_module} (line {lines[0]})"
                )
        for cycle in shortest_cycles(edges):
            found.append(
                " -> ".join(cycle)
                + "  ("
                + "; ".join(witness[a, b] for a, b in itertools.pairwise(cycle))
                + ")"
            )
    return found


def test_no_import_cycle_between_modules():
    cycles = module_cycles(project_imports(ROOT))
    assert not cycles, "Import cycles between modules (imports inside functions count):\n" + (
        "\n".join(cycles)
    )


def test_no_import_cycle_between_packages_at_any_level():
    cycles = package_cycles(project_imports(ROOT))
    assert not cycles, "Packages or modules side by side that import each other:\n" + (
        "\n".join(cycles)
    )


def test_a_cycle_hidden_inside_a_function_is_found(tmp_path):
    root = copy_of_the_code(tmp_path)
    metrics = root / "reporting" / "metrics.py"
    metrics.write_text(
        metrics.read_text() + "\n\ndef late():\n    from reporting import export  # noqa\n"
    )
    cycles = module_cycles(project_imports(root))
    assert any(
        cycle.startswith("reporting.export -> reporting.metrics -> reporting.export")
        for cycle in cycles
    ), cycles


def test_packages_importing_each_other_are_found():
    imports: Imports = {
        "shop.orders.services": {"shop.billing.models": [3]},
        "shop.billing.models": {},
        "shop.billing.services": {"shop.orders.models": [7]},
        "shop.orders.models": {},
    }
    assert module_cycles(imports) == []
    assert package_cycles(imports) == [
        "shop.billing -> shop.orders -> shop.billing  (shop.billing.services imports "
        "shop.orders.models (line 7); shop.orders.services imports shop.billing.models (line 3))"
    ]


# --- Imports inside functions -----------------------------------------------------------------


def imports_inside_functions(root: Path) -> list[str]:
    """``path:line import`` of every project import inside a function (apps.py, where Django
    wants them, and migrations aside)."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root)
            if path.name == "apps.py" or "migrations" in relative.parts:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            inside = {
                node
                for function in ast.walk(tree)
                if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
                for node in ast.walk(function)
                if isinstance(node, ast.Import | ast.ImportFrom)
            }
            for node in sorted(inside, key=lambda node: node.lineno):
                names = (
                    [alias.name for alias in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                relative_import = isinstance(node, ast.ImportFrom) and node.level > 0
                if relative_import or any(name.split(".")[0] in PACKAGES for name in names):
                    found.append(f"{relative}:{node.lineno} {ast.unparse(node)}")
    return found


def test_few_project_imports_inside_functions():
    found = imports_inside_functions(ROOT)
    assert len(found) <= INSIDE_FUNCTIONS_LIMIT, (
        f"{len(found)} project imports inside functions (at most {INSIDE_FUNCTIONS_LIMIT}; move "
        "the shared piece down instead):\n" + "\n".join(found)
    )


def test_an_import_inside_a_function_is_counted(tmp_path):
    root = copy_of_the_code(tmp_path)
    (root / "core" / "late.py").write_text(
        "def late():\n    import core.errors  # noqa\n\n\nasync def later():\n"
        "    from . import health  # noqa\n    import json  # noqa\n"
    )
    found = imports_inside_functions(root)
    assert "core/late.py:2 import core.errors" in found
    assert "core/late.py:6 from . import health" in found
    assert not any(line.startswith("core/late.py:7") for line in found)


@pytest.mark.parametrize("module", ["classifier_site.serve", "classifier_site.gunicorn"])
def test_the_server_launchers_load_no_django(module):
    """The master reads them before it forks the workers, which each set Django up themselves."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys, {module}; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert result.stdout.strip() == "[]"
